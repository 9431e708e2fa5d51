"""Data fast path: is the loader fast enough to keep a CPU training step fed?

For MedMNIST 28x28 (the shared breast/pneumonia/derma files) and PACS 64x64 (shared folders),
measures in one process, with the same torch thread settings:

- loader throughput: samples/s of ``BatchLoader(train=True)`` at batch 128, augmentation and
  normalisation included (uint8 -> float -> augment -> normalise);
- training-step throughput: samples/s of a torchvision ResNet-18 forward + backward + SGD step
  on batches of the same shape;

and writes both and their ratio (goal: loader >= 5x what the training step consumes) to
``results/bench/data.json`` (atomically). Data building (npz load / JPEG decode or cache hit)
is timed separately.

    python scripts/bench_data.py [--data-root ../shared/data] [--out results/bench/data.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torchvision

from molabench.atomic import write_json_atomic
from molabench.data import MultiTaskData, build_data
from molabench.data.loader import BatchLoader

REPO = Path(__file__).resolve().parents[1]
GOAL = 5.0
BATCH = 128


def loader_throughput(data: MultiTaskData, batches: int, seed: int = 0) -> float:
    loader = BatchLoader(data, "train", BATCH, train=True, seed=seed)
    it = iter(loader)
    next(it)  # warm-up
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += len(batch)
    return n / (time.perf_counter() - start)


def train_throughput(data: MultiTaskData, steps: int) -> float:
    batch = next(iter(BatchLoader(data, "train", BATCH, train=True, seed=1)))
    num_classes = sum(t.num_classes for t in data.tasks)
    model = torchvision.models.resnet18(num_classes=num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # per-task heads share one linear layer here: the backbone dominates the cost
    offsets = torch.tensor([sum(t.num_classes for t in data.tasks[:k]) for k in range(data.num_tasks)])
    target = batch.y + offsets[batch.task]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(batch.x), target)
        loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def bench(name: str, cfg: dict, loader_batches: int, train_steps: int) -> dict:
    start = time.perf_counter()
    data = build_data(cfg)
    build_s = time.perf_counter() - start
    load_sps = loader_throughput(data, loader_batches)
    train_sps = train_throughput(data, train_steps)
    return {
        "dataset": name,
        "tasks": [t.name for t in data.tasks],
        "image_size": list(data.image_size),
        "train_samples": len(data.splits["train"]),
        "batch_size": BATCH,
        "build_s": round(build_s, 3),
        "loader_samples_per_s": round(load_sps, 1),
        "train_step_samples_per_s": round(train_sps, 1),
        "ratio": round(load_sps / train_sps, 2),
        "goal_ratio": GOAL,
        "ok": load_sps / train_sps >= GOAL,
    }




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "data.json")
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache (default $MOLABENCH_CACHE or ~/.cache/molabench)")
    parser.add_argument("--loader-batches", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cases = {
        "medmnist": (
            args.data_root / "medmnist",
            {"name": "medmnist", "root": str(args.data_root / "medmnist"), "tasks": ["breastmnist", "pneumoniamnist", "dermamnist"], "image_size": 28, "seed": 0},
        ),
        "pacs": (
            args.data_root / "pacs",
            {"name": "pacs", "root": str(args.data_root / "pacs"), "image_size": 64, "seed": 0, "cache_dir": args.cache_dir},
        ),
    }  # fmt: skip
    results = []
    for name, (folder, cfg) in cases.items():
        if not folder.is_dir():
            results.append({"dataset": name, "skipped": f"{folder} not found"})
            print(f"{name}: skipped, {folder} not found")
            continue
        r = bench(name, cfg, args.loader_batches, args.train_steps)
        results.append(r)
        print(
            f"{name} {r['image_size'][0]}px: loader {r['loader_samples_per_s']:.0f} samples/s, "
            f"ResNet-18 step {r['train_step_samples_per_s']:.0f} samples/s, ratio {r['ratio']:.1f} (goal >= {GOAL:g})"
        )
    payload = {
        "bench": "data",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "results": results,
    }
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
