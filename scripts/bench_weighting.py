"""Training-step time of every weighting method, relative to EW.

HPS on torchvision ResNet-18, 28x28 RGB inputs, batch 128, T = 3 and 9 tasks, in the
multi-input setting (each sample has one task) and the single-input setting (every task on
every sample). Methods are interleaved round-robin in one process and the median over rounds
is reported, so slow drifts of a shared machine hit all methods alike. Also records how close
the one-backward ``sample_groups`` per-task gradients are to the exact ones (train-mode BN).

    .venv/bin/python scripts/bench_weighting.py [--rounds 3] [--out results/bench/weighting_step.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from molabench.architectures import ARCHITECTURES, load_all
from molabench.atomic import write_json_atomic
from molabench.data.base import TaskSpec
from molabench.engine.optim import build_optimizer
from molabench.models.backbones import build_backbone
from molabench.weighting import WEIGHTINGS, StepContext, build
from molabench.weighting import load_all as load_weightings
from molabench.weighting.pertask import task_gradients

GRADIENT_METHODS = ["mgda", "mgda_ub", "pcgrad", "cagrad", "graddrop", "gradvac", "imtl", "nash_mtl", "aligned_mtl", "aligned_mtl_ub"]
EXTRA_VARIANTS = {"pcgrad[exact]": ("pcgrad", {"grad_mode": "exact"})}


def make_setup(T: int, setting: str, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    tasks = [TaskSpec(f"t{i}", 10) for i in range(T)]
    model = ARCHITECTURES.build("hps", tasks=tasks, setting=setting, backbone=lambda: build_backbone("resnet18"))
    x = torch.randn(batch, 3, 28, 28)
    task = torch.arange(batch) % T if setting == "multi_input" else torch.zeros(batch, dtype=torch.long)
    y = torch.randint(0, 10, (batch, T))
    return model, x, task, y


def step(model, weighting, opt, x, task, y, T: int, i: int) -> float:
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    fw = model(x, task)
    losses = torch.stack([
        F.cross_entropy(o, y[g, t]) if o is not None else x.new_zeros(())
        for t, (o, g) in enumerate(zip(fw.outputs, fw.groups, strict=True))
    ])
    present = torch.tensor([o is not None for o in fw.outputs])
    ctx = StepContext(
        losses=losses, present=present, shared_params=list(model.shared_parameters()),
        task_params=list(model.task_specific_parameters()), representation=fw.representation,
        groups=fw.groups, step=i,
    )
    weighting.backward(ctx)
    opt.step()
    return time.perf_counter() - start


def grad_agreement(T: int, batch: int) -> dict[str, float]:
    """Cosine between exact and sample-group per-task gradients (train-mode BN, at init)."""
    model, x, task, y = make_setup(T, "multi_input", batch, seed=1)
    out = {}
    for mode in ("exact", "sample_groups"):
        fw = model(x, task)
        losses = torch.stack([F.cross_entropy(o, y[g, t]) for t, (o, g) in enumerate(zip(fw.outputs, fw.groups, strict=True))])
        out[mode] = task_gradients(losses, list(model.shared_parameters()), [], fw.groups, mode).G  # type: ignore[arg-type]
    cos = F.cosine_similarity(out["exact"], out["sample_groups"], dim=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def bench(T: int, setting: str, rounds: int, batch: int) -> dict[str, dict[str, float]]:
    model, x, task, y = make_setup(T, setting, batch)
    methods = {name: (name, {}) for name in WEIGHTINGS.names()}
    if setting == "multi_input":
        methods.update(EXTRA_VARIANTS)
    state0 = {k: v.clone() for k, v in model.state_dict().items()}
    runners = {}
    for label, (name, hp) in methods.items():
        w = build(name, num_tasks=T, **hp)
        opt = build_optimizer([*model.parameters(), *w.parameters()], {"name": "sgd", "lr": 1e-3})  # the trainer's optimiser
        runners[label] = (w, opt)
    times: dict[str, list[float]] = {label: [] for label in runners}
    for r in range(rounds + 1):  # round 0 warms up
        for label, (w, opt) in runners.items():
            model.load_state_dict(state0)  # same weights for everyone: comparable solver work
            dt = step(model, w, opt, x, task, y, T, r)
            if r:
                times[label].append(dt)
    ew = statistics.median(times["ew"])
    return {
        label: {"median_s": statistics.median(ts), "ratio_to_ew": statistics.median(ts) / ew, "rounds": len(ts)}
        for label, ts in times.items()
    }




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 9])
    parser.add_argument("--settings", nargs="+", default=["multi_input", "single_input"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/bench/weighting_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_all()
    load_weightings()
    started = time.time()
    results: dict[str, object] = {
        "config": {
            "architecture": "hps", "backbone": "resnet18 (torchvision, standard stem)", "input": "3x28x28",
            "batch": args.batch, "rounds": args.rounds, "threads": args.threads, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "note": "median over interleaved rounds; step = zero_grad + forward + weighting.backward + SGD step",
        },
        "runs": {},
    }
    for setting in args.settings:
        for T in args.tasks:
            key = f"{setting}/T={T}"
            results["runs"][key] = bench(T, setting, args.rounds, args.batch)  # type: ignore[index]
            worst = max(v["ratio_to_ew"] for k, v in results["runs"][key].items() if k in GRADIENT_METHODS)  # type: ignore[index]
            print(f"{key}: worst gradient-method ratio {worst:.2f}x EW ({time.time() - started:.0f}s)", flush=True)
    results["sample_groups_vs_exact"] = {f"T={T}": grad_agreement(T, args.batch) for T in args.tasks}
    results["config"]["wall_s"] = round(time.time() - started, 1)  # type: ignore[index]
    write_json_atomic(args.out, results)
    for key, run in results["runs"].items():  # type: ignore[union-attr]
        print(key, " ".join(f"{k}={v['ratio_to_ew']:.2f}" for k, v in run.items()))
    print("sample_groups vs exact:", results["sample_groups_vs_exact"])


if __name__ == "__main__":
    main()
