"""Training-step time on dense single-input data (the built-in ``scenes``), relative to EW.

HPS + EW, MoLA-Grad, MoLA-Router and every gradient-combination method, on dilated ResNet-18
(output stride 8) with PSP heads, scenes at 96x128, batch 8, T = 3 (segmentation, depth,
normal). One full ``algorithm.update`` per measurement (forward, losses, weighting backward,
Adam step); methods interleaved round-robin in one process, every method starting each round
from the same weights; min, median and spread over rounds, plus the machine's fp32 matmul speed.
``pcgrad[no-through]`` shows the per-task gradient path without the two-stage chain rule
through the shared representation (all T cotangents through heads and encoder).

    .venv/bin/python scripts/bench_dense.py [--rounds 5] [--out results/bench/dense_step.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from molabench.atomic import write_json_atomic
from molabench.data import build_data
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import build_algorithm
from molabench.engine.optim import build_optimizer
from molabench.machine import interleaved_update_times, matmul_gflops, timing_summary

GRADIENT_METHODS = ["mgda", "mgda_ub", "pcgrad", "cagrad", "graddrop", "gradvac", "imtl", "nash_mtl", "aligned_mtl", "aligned_mtl_ub"]


def method_config(label: str) -> dict:
    name = label.split("[")[0]
    if name in ("mola_grad", "mola_router", "single_task"):
        arch: dict = {"name": name}
        if name == "mola_grad":
            arch["stages"] = ["layer4"]
        return {"name": name, "architecture": arch, "weighting": {"name": "ew"}, "penalties": {}}
    return {"name": name, "architecture": {"name": "hps"}, "weighting": {"name": name}, "penalties": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbone", default="resnet18_dilated", help="e.g. resnet50_dilated (NYUv2's, heads ~3x the encoder)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the labels (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/dense_step.json"))
    args = parser.parse_args()
    gflops = matmul_gflops(args.threads)
    torch.manual_seed(0)
    data = build_data({"name": "scenes", "n_train": args.batch, "n_val": 2, "n_test": 2, "augment": False})
    batch = next(iter(BatchLoader(data, "train", args.batch, train=True)))
    labels = ["ew", "mola_grad", "mola_router", *GRADIENT_METHODS, "pcgrad[no-through]"]
    if args.methods:
        wanted = args.methods.split(",")
        unknown = sorted(set(wanted) - set(labels))
        if unknown or "ew" not in wanted:
            parser.error(f"--methods must include ew and come from {', '.join(labels)}; unknown: {unknown}")
        labels = [label for label in labels if label in wanted]
    runners = {}
    for label in labels:
        torch.manual_seed(0)
        algorithm = build_algorithm(method_config(label), {"name": args.backbone}, data, {"name": "psp"})
        if label.endswith("[no-through]"):
            algorithm.arch.shared_behind_representation = False
        algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "adam", "lr": 1e-4})
        runners[label] = (algorithm, {k: v.clone() for k, v in algorithm.state_dict().items()})
    started = time.time()
    times = interleaved_update_times(runners, batch, args.rounds)
    ew = statistics.median(times["ew"])
    runs = timing_summary(times, "ew")
    gradient = {k: v["ratio_to_ew"] for k, v in runs.items() if k in GRADIENT_METHODS} or {"none": float("nan")}
    result = {
        "config": {
            "data": "scenes 96x128, augment off", "batch": args.batch, "tasks": 3, "setting": "single_input",
            "backbone": f"{args.backbone} (output stride 8)", "head": "psp (map channels / 4)", "optimizer": "adam",
            "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "matmul_gflops_fp32": round(gflops, 1), "wall_s": round(time.time() - started, 1),
            "note": "step = algorithm.update (forward, losses, weighting backward, optimiser step); median over interleaved rounds",
        },
        "runs": runs,
        "worst_gradient_ratio": max(gradient.values()),
        "goal": "every gradient method <= 2.5x EW at T = 3 single-input (issue 9)",
    }
    write_json_atomic(args.out, result)
    print(f"matmul {gflops:.0f} GFLOP/s; EW step {ew * 1000:.0f} ms")
    for label, run in runs.items():
        print(f"  {label:<20} {run['ratio_to_ew']:.2f}x  (median {run['median_s'] * 1000:.0f} ms, spread {run['spread']:.0%})")
    print(f"worst gradient method: {result['worst_gradient_ratio']:.2f}x EW")


if __name__ == "__main__":
    main()
