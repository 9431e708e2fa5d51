"""Data-parallel training (torchrun, ``molabench.engine.distributed``): a functional scaling check and the
communication volume of one training step per method.

1. **Scaling, functional only.** HPS on ResNet-18, the built-in shapes data (28 px, T = 4), the same
   global batch (``--batch``, 64) trained by one process and by 2 gloo processes of ``--batch/2``
   each (``torchrun --standalone --nproc_per_node=2``), EW and PCGrad: median step time and samples/s.
   On this project's 2-core machine the two processes share the two cores that one process with two
   threads uses, and gloo moves the gradients through shared memory: this checks that data-parallel
   training runs and what it costs here; it says nothing of the speed-up on a cluster.
2. **Communication per step** (bytes each rank all-reduces), from the parameter counts of the model
   (P = all trainable parameters, P_s = the shared ones, P_t = the heads): ``4 P`` for EW and every
   loss weighting, ``4 (T P_s + P_t)`` for gradient methods (the per-task gradient matrix of the shared
   parameters and the heads' gradients), ``4 P + 8 T^2`` for the representation-level -UB methods (a
   T x T Gramian), plus ``trainer.sync_bn``'s statistics (per layer: an all-gather of
   ``N G (2C + 1)`` and an all-reduce of ``2 G C`` floats, G = 1 or T groups). The table is computed
   for T = 2..10 with ResNet-18 and ResNet-50, and the measured bytes of the 2-process runs are
   checked against it. ``scaling`` estimates the time of a ring all-reduce,
   ``2 (N - 1) / N x bytes / bandwidth``, on three interconnects, next to the compute of one step, to
   show when gradient methods become communication-bound (docs/cluster.md).

    .venv/bin/python scripts/bench_ddp.py [--steps 6] [--batch 64] [--out results/bench/ddp.json]
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

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ew", "pcgrad")
INTERCONNECTS_GBPS = {"NVLink (300 GB/s)": 300.0, "InfiniBand HDR (25 GB/s)": 25.0, "10 GbE (1.25 GB/s)": 1.25}
GPU_TFLOPS = 25.0  # the effective rate assumed for one training step on a data-centre GPU (A100 with mixed precision: ~2000 ResNet-50 images/s)


def _compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from molabench.config_path import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)  # type: ignore[return-value]


def time_steps(method: str, batch: int, steps: int) -> dict[str, Any]:
    """Median time of ``algorithm.update`` over ``steps`` steps (after one warm-up step) as this process
    is: alone, or one rank of the current torchrun group (then ``batch`` is per rank)."""
    from molabench.data import build_data
    from molabench.data.loader import BatchLoader
    from molabench.engine import distributed
    from molabench.engine.algorithm import build_algorithm
    from molabench.run import seed_everything

    group = distributed.current()
    cfg = _compose([f"method={method}", "data.n_train=400", f"trainer.batch_size={batch}"])
    seed_everything(0)
    data = build_data(cfg["data"])
    seed_everything(0)
    algorithm = build_algorithm(cfg["method"], cfg["backbone"], data, None, bn_stats="batch")
    algorithm.distribute(group, sync_bn=False)
    algorithm.configure_optimizers(cfg["trainer"]["optimizer"], None, 100, 100)
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    loader = BatchLoader(data, "train", batch, train=True, seed=0, rank=rank, world_size=world)
    batches = iter(loader)
    algorithm.update(next(batches))  # warm-up
    before = dict(group.traffic) if group is not None else {}
    times = []
    for _ in range(steps):
        b = next(batches)
        start = time.perf_counter()
        algorithm.update(b)
        times.append(time.perf_counter() - start)
    traffic = {k: (v - before.get(k, 0)) / steps for k, v in (group.traffic if group is not None else {}).items()}
    median = statistics.median(times)
    shared = sum(p.numel() for p in algorithm.arch.shared_parameters() if p.requires_grad)
    total = sum(p.numel() for p in algorithm.parameters() if p.requires_grad)
    return {
        "params": {"P": total, "P_shared": shared, "P_task": total - shared, "T": len(algorithm.tasks)},
        "processes": world, "batch_per_process": batch, "global_batch": batch * world, "threads_per_process": torch.get_num_threads(),
        "step_s_median": median, "step_s_min": min(times), "samples_per_s": batch * world / median,
        "bytes_all_reduced_per_step": traffic.get("bytes", 0.0), "collectives_per_step": {k: v for k, v in traffic.items() if k != "bytes"},
    }


def worker(out: Path, steps: int, batch: int) -> None:
    """One rank of ``torchrun``: every method's step times; rank 0 writes them."""
    from molabench.engine import distributed

    torch.set_num_threads(1)
    group = distributed.setup("cpu")
    results = {method: time_steps(method, batch, steps) for method in METHODS}
    if group is None or group.is_main:
        out.write_text(json.dumps(results))
    distributed.teardown()


def parameter_counts(backbone: str, T: int) -> dict[str, int]:
    """P (trainable), P_s (shared) and P_t (task-specific) of HPS on ``backbone`` with T classification heads of 10 classes."""
    from molabench.architectures import ARCHITECTURES, load_all
    from molabench.data.base import TaskSpec
    from molabench.models.backbones import build_backbone

    load_all()
    tasks = [TaskSpec(f"t{i}", 10) for i in range(T)]
    arch = ARCHITECTURES.build("hps", tasks=tasks, setting="multi_input", backbone=lambda: build_backbone(backbone))
    shared = sum(p.numel() for p in arch.shared_parameters())
    task = sum(p.numel() for p in arch.task_specific_parameters())
    return {"P": shared + task, "P_shared": shared, "P_task": task}


def communication_table() -> dict[str, Any]:
    """Bytes each rank all-reduces per step, per method family, and the estimated ring all-reduce time
    on three interconnects next to the compute of one ResNet step at 224 px (batch 64 per GPU)."""
    flops_per_image = {"resnet18": 3 * 1.82e9, "resnet50": 3 * 4.11e9}  # forward + backward at 224 px
    table: dict[str, Any] = {}
    for backbone in ("resnet18", "resnet50"):
        for T in (2, 3, 4, 6, 10):
            counts = parameter_counts(backbone, T)
            ew = 4 * counts["P"]
            grad = 4 * (T * counts["P_shared"] + counts["P_task"])
            ub = 4 * counts["P"] + 8 * T * T
            compute_s = flops_per_image[backbone] * 64 / (GPU_TFLOPS * 1e12)
            row: dict[str, Any] = {**counts, "bytes_ew_and_loss_weightings": ew, "bytes_gradient_methods": grad,
                                   "bytes_representation_level_ub": ub, "gradient_over_ew": grad / ew,
                                   "compute_s_per_step_224px_batch64": compute_s, "ring_allreduce_s_8_gpus": {}}
            for name, gbps in INTERCONNECTS_GBPS.items():
                factor = 2 * (8 - 1) / 8 / (gbps * 1e9)
                row["ring_allreduce_s_8_gpus"][name] = {"ew": ew * factor, "gradient_methods": grad * factor,
                                                       "gradient_methods_over_compute": grad * factor / compute_s}
            table[f"{backbone}/T={T}"] = row
    return table


def sync_bn_bytes(world: int, groups: int, channels: list[int]) -> dict[str, int]:
    """Bytes of ``trainer.sync_bn``'s statistics per step, over the BatchNorm layers' channel counts."""
    return {"all_gather": sum(4 * world * groups * (2 * c + 1) for c in channels), "all_reduce": sum(4 * groups * 2 * c for c in channels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument("--out", type=Path, default=Path("results/bench/ddp.json"))
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.steps, args.batch)
        return
    from molabench.atomic import write_json_atomic
    from molabench.machine import matmul_gflops

    started = time.time()
    load_at_start = round(os.getloadavg()[0], 2)  # a shared machine: other work slows every number here
    runs: dict[str, Any] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for method in METHODS:
            runs[f"{method}/1 process x {threads} thread(s)"] = time_steps(method, args.batch, args.steps)
            print(method, f"1 process, {threads} thread(s):", runs[f"{method}/1 process x {threads} thread(s)"]["step_s_median"], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ddp.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
             "--worker", str(out), "--steps", str(args.steps), "--batch", str(args.batch // 2)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
        )
        if proc.returncode != 0:
            raise SystemExit(f"the 2-process run failed:\n{proc.stderr[-3000:]}")
        for method, run in json.loads(out.read_text()).items():
            runs[f"{method}/2 processes x 1 thread"] = run
            print(method, "2 processes:", run["step_s_median"], flush=True)
    counts = runs["ew/2 processes x 1 thread"]["params"]
    predicted = {"ew": 4 * counts["P"], "pcgrad": 4 * (counts["T"] * counts["P_shared"] + counts["P_task"])}
    measured = {m: runs[f"{m}/2 processes x 1 thread"]["bytes_all_reduced_per_step"] for m in METHODS}
    from molabench.models.backbones import build_backbone

    channels = [m.num_features for m in build_backbone("resnet18").modules() if isinstance(m, torch.nn.BatchNorm2d)]
    results = {
        "config": {
            "what": "HPS on ResNet-18, shapes data 28 px, T=4, mixed batches, per-rank BatchNorm statistics, Adam; "
                    "step = algorithm.update (forward, losses, backward, all-reduces, optimiser step)",
            "global_batch": args.batch, "steps": args.steps, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "matmul_gflops": {"1": round(matmul_gflops(1), 1), "2": round(matmul_gflops(2), 1)},
            "load_average_1min_at_start": load_at_start,
            "assumed_gpu_tflops_for_scaling": GPU_TFLOPS,
            "note": "FUNCTIONAL CHECK ONLY: 2 gloo processes on a 2-core machine share the cores one 2-thread process uses; "
                    "the ratio says nothing about scaling on a cluster (see 'scaling' and docs/cluster.md)",
        },
        "runs": runs,
        "communication_check": {
            "params": counts, "predicted_bytes_per_step": predicted, "measured_bytes_per_step": measured,
            "note": "measured = bytes each rank passed to all-reduce per step (molabench's counter), which adds the loss "
                    "statistics (3T floats, float64), one has-gradient flag per parameter tensor and the stop-signal flag",
        },
        "communication_per_step": communication_table(),
        "sync_bn_bytes_per_step_resnet18_8_ranks": {
            "whole_batch": sync_bn_bytes(8, 1, channels), "per_task_T=4": sync_bn_bytes(8, 4, channels), "layers": len(channels),
        },
        "wall_s": round(time.time() - started, 1),
    }
    write_json_atomic(args.out, results)
    print(json.dumps(results["communication_check"], indent=1))
    for key, row in results["communication_per_step"].items():
        print(f"{key}: EW {row['bytes_ew_and_loss_weightings'] / 1e6:.1f} MB, gradient methods {row['bytes_gradient_methods'] / 1e6:.1f} MB "
              f"({row['gradient_over_ew']:.2f}x)")


if __name__ == "__main__":
    main()
