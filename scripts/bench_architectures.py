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

    .venv/bin/python scripts/bench_architectures.py [--rounds 3] [--out results/bench/architectures.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=9)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", default=",".join(ARCHITECTURES), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=Path("results/bench/architectures.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gflops = matmul_gflops(args.threads)
    data = _Data(args.tasks, args.size)
    gen = torch.Generator().manual_seed(0)
    task = torch.randint(0, args.tasks, (args.batch,), generator=gen)
    batch = Batch(x=torch.randn(args.batch, 3, args.size, args.size, generator=gen), y=torch.randint(0, 10, (args.batch,), generator=gen), task=task)
    archs = args.archs.split(",")
    runs: dict[str, dict[str, Any]] = {}
    started = time.time()
    # One architecture at a time, interleaved with HPS: every ratio is measured side by side with its own
    # HPS steps, and the 100-million-parameter models (with Adam's state) are not all held at once.
    for arch in archs:
        labels = ["hps", arch, f"{arch}[authors]"]
        runners, facts = {}, {}
        for label in labels:
            torch.manual_seed(0)
            algorithm = build_algorithm(method(label), {"name": "resnet18"}, data)
            algorithm.configure_optimizers({"name": "adam", "lr": 1e-4}, None, total_steps=1000, steps_per_epoch=100)
            facts[label] = {
                "flops": forward_flops(algorithm, batch),
                "saved_mb": saved_bytes(algorithm, batch) / 2**20,
                "params_m": sum(p.numel() for p in algorithm.parameters()) / 1e6,
            }
            runners[label] = (algorithm, {k: v.clone() for k, v in algorithm.state_dict().items()})
        optimizer_times: dict[str, list[float]] = {label: [] for label in labels}
        clock: dict[str, float] = {}

        def timed(label: str, algorithm: Any, optimizer_times: dict[str, list[float]] = optimizer_times, clock: dict[str, float] = clock) -> None:
            optimizer = algorithm.optimizer
            optimizer.register_step_pre_hook(lambda *_: clock.__setitem__("start", time.perf_counter()))
            optimizer.register_step_post_hook(lambda *_: optimizer_times[label].append(time.perf_counter() - clock["start"]))

        for label, (algorithm, _) in runners.items():
            timed(label, algorithm)
        times = interleaved_update_times(
            runners, batch, args.rounds, name=arch, after_warmup=lambda ts=optimizer_times: [v.clear() for v in ts.values()]
        )
        compute = {label: [t - o for t, o in zip(ts, optimizer_times[label], strict=True)] for label, ts in times.items()}
        hps_t, hps_c, hps_f = statistics.median(times["hps"]), statistics.median(compute["hps"]), facts["hps"]["flops"]
        for label, ts in times.items():
            median, median_c = statistics.median(ts), statistics.median(compute[label])
            key = f"hps (beside {arch})" if label == "hps" else label
            runs[key] = {
                "min_s": min(ts), "median_s": median, "spread": (max(ts) - min(ts)) / median, "rounds": len(ts),
                "optimizer_s": statistics.median(optimizer_times[label]),
                "time_ratio": median / hps_t, "compute_ratio": median_c / hps_c, "flop_ratio": facts[label]["flops"] / hps_f,
                "time_over_flops": (median_c / hps_c) / (facts[label]["flops"] / hps_f),
                "saved_mb": round(facts[label]["saved_mb"], 1), "params_m": round(facts[label]["params_m"], 2),
            }
        del runners
    efficient = {k: v["time_over_flops"] for k, v in runs.items() if not k.startswith("hps") and not k.endswith("[authors]")}
    result = {
        "config": {
            "backbone": "resnet18 (standard stem)", "input": f"3x{args.size}x{args.size}", "batch": args.batch,
            "tasks": args.tasks, "setting": "multi_input", "weighting": "ew", "optimizer": "adam",
            "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "matmul_gflops_fp32": round(gflops, 1), "wall_s": round(time.time() - started, 1),
            "note": "step = algorithm.update; median over interleaved rounds; flop_ratio = training-forward FLOPs / HPS's",
        },
        "runs": runs,
        "worst_time_over_flops": max(efficient.values()) if efficient else None,
        "goal": "efficient paths: compute_ratio within 10% of flop_ratio (time_over_flops <= 1.10)",
    }
    write_json_atomic(args.out, result)
    print(f"matmul {gflops:.0f} GFLOP/s")
    for label, run in runs.items():
        print(
            f"  {label:<22} step {run['time_ratio']:5.2f}x  compute {run['compute_ratio']:5.2f}x  flops {run['flop_ratio']:5.2f}x  "
            f"time/flops {run['time_over_flops']:.2f}  saved {run['saved_mb']:7.1f} MB  spread {run['spread']:.0%}"
        )


if __name__ == "__main__":
    main()
