"""Training-step time of every architecture baseline against HPS, efficient routing and the authors' routing.

ResNet-18 (the default stem), 28x28 inputs, batch 128, T = 9 classification tasks in the multi-input setting
(mixed batches, about 14 samples a task), EW, Adam. One full ``algorithm.update`` per measurement; the
configurations are interleaved round-robin in one process, each starting every round from the same
weights; min, median and spread over rounds, and the machine's fp32 matmul speed.

Besides time, for each configuration:

- ``flop_ratio``: FLOPs of one training forward relative to HPS's (``torch.utils.flop_counter``): the
  arithmetic cost in backbone passes per sample that the routing promises (e.g. CGC ~2, MMoE ~E);
- ``saved_mb``: the bytes of the tensors autograd saves for backward in one forward (distinct storages,
  parameters excluded) — the activation memory the step needs on top of parameters and optimiser state;
- ``compute_ratio``: the step's time without the optimiser's update (forward, losses, backward) relative to
  HPS's: what routing changes. The optimiser's update scales with the parameters (e.g. CGC's T + 1
  backbones), whatever the routing; ``time_ratio`` is the whole step;
- ``params_m``: parameters (millions).

Goal (issue 10): every efficient path's compute time within 10% of its FLOP ratio, i.e.
``compute_ratio / flop_ratio <= 1.10``; the authors' path is reported beside it.

The per-task floor. ``single_task`` (one backbone per task, each run on its own task's samples only) is
measured beside HPS as a reference: its FLOP ratio is 1, so its ``compute_ratio`` is what T separate
backbones on about B/T samples each cost here against one backbone on all B — the small-batch price of
any model with a whole network per task, which no routing removes (each task's weights are read, and
its ops issued, for its ~B/T samples). CGC and PLE (1 shared + 1 expert per task) run exactly one
HPS-like pass over the batch plus one such per-task pass, so their floor is
``parts_ratio = 1 + single_task's compute_ratio`` and ``time_over_parts = compute_ratio / parts_ratio``
says what the routing adds on top of the passes it must run (1.0 = nothing).

The split, per architecture. ``<arch>[one task]`` is the efficient path on the same images with every
sample labelled task 0: the same FLOPs per sample (one task's branch each), run at the whole batch.
``split_ratio = compute(mixed batch) / compute(one-task batch)`` is what dividing the batch among T
tasks' branches costs (small per-branch batches), and ``[one task]``'s own ``time_over_flops`` says
how close the path is to its arithmetic cost when its branches run at full batch.

    .venv/bin/python scripts/bench_architectures.py [--rounds 3] [--out results/bench/architectures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from molabench.atomic import write_json_atomic
from molabench.data.base import Batch, TaskSpec
from molabench.engine.algorithm import build_algorithm
from molabench.machine import interleaved_update_times, matmul_gflops

ARCHITECTURES = ["cross_stitch", "mmoe", "cgc", "ple", "dselect_k", "ltb", "mtan"]
REFERENCE = "single_task"  # the per-task floor (module docstring)
SHARED_PLUS_OWN = {"cgc", "ple"}  # one shared pass + one per-task pass per sample: floor = 1 + single_task


class _Data:
    """What ``build_algorithm`` reads of a data set: T classification tasks, multi-input, 3x28x28."""

    def __init__(self, num_tasks: int, size: int) -> None:
        self.tasks = [TaskSpec(f"t{i}", 10) for i in range(num_tasks)]
        self.num_tasks = num_tasks
        self.setting = "multi_input"
        self.in_channels = 3
        self.image_size = (size, size)


def method(label: str) -> dict[str, Any]:
    name = label.split("[")[0]
    arch: dict[str, Any] = {"name": name}
    if label.endswith("[authors]"):
        arch["authors_routing"] = True
    penalties = {"dselect_k": {}} if name == "dselect_k" else {}
    return {"name": name, "architecture": arch, "weighting": {"name": "ew"}, "penalties": penalties}


def saved_bytes(algorithm: Any, batch: Batch) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during one training forward and loss."""
    seen: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in algorithm.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:  # weights saved by conv/linear backward are not activations
                seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fwd = algorithm.forward_train(algorithm.prepare(batch))
        algorithm.task_losses(fwd, batch)[0].sum()
    return sum(seen.values())


def forward_flops(algorithm: Any, batch: Batch) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        algorithm.forward_train(algorithm.prepare(batch))
    return counter.get_total_flops()


def batches_for(args: argparse.Namespace) -> tuple[Batch, Batch]:
    """The mixed-task batch (seeded) and the same images with every sample labelled task 0."""
    gen = torch.Generator().manual_seed(0)
    task = torch.randint(0, args.tasks, (args.batch,), generator=gen)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    batch = Batch(x=x, y=torch.randint(0, 10, (args.batch,), generator=gen), task=task)
    return batch, Batch(x=batch.x, y=batch.y, task=torch.zeros_like(task))


def measure(arch: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``arch``'s paths (efficient, authors', one-task batch; the reference has one) beside HPS, interleaved."""
    torch.set_num_threads(args.threads)
    data = _Data(args.tasks, args.size)
    batch, one_task = batches_for(args)
    labels = ["hps", arch] if arch == REFERENCE else ["hps", arch, f"{arch}[authors]", f"{arch}[one task]"]
    batches = {label: one_task for label in labels if label.endswith("[one task]")}
    runners, facts = {}, {}
    optimizer_times: dict[str, list[float]] = {label: [] for label in labels}
    clock: dict[str, float] = {}
    for label in labels:
        torch.manual_seed(0)
        algorithm = build_algorithm(method(label), {"name": "resnet18"}, data)
        algorithm.configure_optimizers({"name": "adam", "lr": 1e-4}, None, total_steps=1000, steps_per_epoch=100)
        own = batches.get(label, batch)
        facts[label] = {
            "flops": forward_flops(algorithm, own),
            "saved_mb": saved_bytes(algorithm, own) / 2**20,
            "params_m": sum(p.numel() for p in algorithm.parameters()) / 1e6,
        }
        runners[label] = (algorithm, {k: v.clone() for k, v in algorithm.state_dict().items()})
        # the optimiser's own share of each step, taken out of compute_ratio
        algorithm.optimizer.register_step_pre_hook(lambda *_: clock.__setitem__("start", time.perf_counter()))
        algorithm.optimizer.register_step_post_hook(
            lambda *_, label=label: optimizer_times[label].append(time.perf_counter() - clock["start"])
        )
    times = interleaved_update_times(
        runners,
        batch,
        args.rounds,
        name=arch,
        after_warmup=lambda: [v.clear() for v in optimizer_times.values()],
        batches=batches,
    )
    compute = {label: [t - o for t, o in zip(ts, optimizer_times[label], strict=True)] for label, ts in times.items()}
    hps_t, hps_c, hps_f = statistics.median(times["hps"]), statistics.median(compute["hps"]), facts["hps"]["flops"]
    runs = {}
    for label, ts in times.items():
        median, median_c = statistics.median(ts), statistics.median(compute[label])
        runs[f"hps (beside {arch})" if label == "hps" else label] = {
            "min_s": min(ts),
            "median_s": median,
            "spread": (max(ts) - min(ts)) / median,
            "rounds": len(ts),
            "optimizer_s": statistics.median(optimizer_times[label]),
            "time_ratio": median / hps_t,
            "compute_ratio": median_c / hps_c,
            "flop_ratio": facts[label]["flops"] / hps_f,
            "time_over_flops": (median_c / hps_c) / (facts[label]["flops"] / hps_f),
            "saved_mb": round(facts[label]["saved_mb"], 1),
            "params_m": round(facts[label]["params_m"], 2),
        }
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=9)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", default=",".join(ARCHITECTURES), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=Path("results/bench/architectures.json"))
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: measure one architecture, write --part-out
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part is not None:
        write_json_atomic(args.part_out, measure(args.part, args))
        return
    unknown = sorted(set(args.archs.split(",")) - set(ARCHITECTURES))
    if unknown:
        raise SystemExit(f"bench_architectures: unknown architecture(s) {unknown} in --archs; choose from {ARCHITECTURES}")
    archs = [a for a in ARCHITECTURES if a in args.archs.split(",")]
    gflops = matmul_gflops(args.threads)
    runs: dict[str, dict[str, Any]] = {}
    started = time.time()
    # One architecture at a time, interleaved with HPS: every ratio is measured side by side with its own
    # HPS steps. Each architecture runs in a process of its own, so that its four models (~100 M
    # parameters each, with Adam's state, for most) are gone, heap included, before the next is built.
    for arch in [REFERENCE, *archs]:
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / "part.json"
            command = [sys.executable, __file__, "--part", arch, "--part-out", str(part)]
            for key in ("rounds", "batch", "tasks", "size", "threads"):
                command += [f"--{key}", str(getattr(args, key))]
            subprocess.run(command, check=True)
            runs.update(json.loads(part.read_text()))
    for arch in archs:
        runs[arch]["split_ratio"] = runs[arch]["compute_ratio"] / runs[f"{arch}[one task]"]["compute_ratio"]
    floor = runs[REFERENCE]["compute_ratio"]
    for arch in sorted(SHARED_PLUS_OWN & set(archs)):
        runs[arch]["parts_ratio"] = 1.0 + floor
        runs[arch]["time_over_parts"] = runs[arch]["compute_ratio"] / (1.0 + floor)
    efficient = {
        k: v["time_over_flops"]
        for k, v in runs.items()
        if not k.startswith("hps") and not k.endswith(("[authors]", "[one task]")) and k != REFERENCE
    }
    result = {
        "config": {
            "backbone": "resnet18 (standard stem)",
            "input": f"3x{args.size}x{args.size}",
            "batch": args.batch,
            "tasks": args.tasks,
            "setting": "multi_input",
            "weighting": "ew",
            "optimizer": "adam",
            "threads": args.threads,
            "rounds": args.rounds,
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "matmul_gflops_fp32": round(gflops, 1),
            "wall_s": round(time.time() - started, 1),
            "note": "step = algorithm.update; median over interleaved rounds; flop_ratio = training-forward FLOPs / HPS's; "
            "one process per architecture",
        },
        "runs": runs,
        "worst_time_over_flops": max(efficient.values()) if efficient else None,
        "per_task_floor": {
            "single_task_compute_ratio": floor,
            "note": "T backbones on their own tasks' samples (FLOP ratio 1) against one on the whole batch; "
            "CGC/PLE floor = 1 + this (parts_ratio); time_over_parts = compute_ratio / parts_ratio",
        },
        "goal": "efficient paths: compute_ratio within 10% of flop_ratio (time_over_flops <= 1.10)",
    }
    write_json_atomic(args.out, result)
    print(f"matmul {gflops:.0f} GFLOP/s")
    for label, run in runs.items():
        print(
            f"  {label:<26} step {run['time_ratio']:5.2f}x  compute {run['compute_ratio']:5.2f}x  "
            f"flops {run['flop_ratio']:5.2f}x  time/flops {run['time_over_flops']:.2f}  saved {run['saved_mb']:7.1f} MB  "
            f"spread {run['spread']:.0%}"
            + (f"  split {run['split_ratio']:.2f}" if "split_ratio" in run else "")
            + (f"  time/parts {run['time_over_parts']:.2f}" if "time_over_parts" in run else "")
        )


if __name__ == "__main__":
    main()
