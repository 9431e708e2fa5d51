"""The metrics of a constant predictor on a dataset's test split, and whether runs beat it.

A dense dataset is learnable only if a trained model beats predicting the same thing for every
pixel of every image. The constant predictor here uses the training split's statistics:
segmentation predicts the most frequent class, depth the mean valid depth, normals the mean valid
normal (normalised); classification predicts the most frequent class of each task. Metrics come
from the same task-kind accumulators as evaluation.

    python scripts/constant_predictor.py --data scenes [--record results/runs/.../record.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from molabench.data import build_data
from molabench.data.base import MultiTaskData
from molabench.data.loader import BatchLoader
from molabench.errors import MolabenchError
from molabench.tasks import kind_of


def _train_statistics(data: MultiTaskData) -> dict[str, torch.Tensor]:
    """Per task: the constant output (logits or values) a constant predictor emits, (C,)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for batch in BatchLoader(data, "train", 64, train=False):
        for t, spec in enumerate(data.tasks):
            y = batch.y[spec.name] if isinstance(batch.y, dict) else batch.y[batch.task == t]
            if spec.kind in ("classification", "segmentation"):
                valid = y[(y >= 0) & (y < spec.num_classes)]
                hist = torch.bincount(valid.flatten(), minlength=spec.num_classes).double()
                sums[spec.name] = sums.get(spec.name, 0) + hist
            elif spec.kind == "depth":
                valid = y[y != 0]
                sums[spec.name] = sums.get(spec.name, 0) + valid.double().sum()
                counts[spec.name] = counts.get(spec.name, 0) + valid.numel()
            elif spec.kind == "normal":
                mask = y.sum(1) != 0
                sums[spec.name] = sums.get(spec.name, 0) + y.permute(0, 2, 3, 1)[mask].double().sum(0)
    constant: dict[str, torch.Tensor] = {}
    for spec in data.tasks:
        if spec.kind in ("classification", "segmentation"):
            constant[spec.name] = torch.nn.functional.one_hot(sums[spec.name].argmax(), spec.num_classes).float()
        elif spec.kind == "depth":
            constant[spec.name] = (sums[spec.name] / counts[spec.name]).float().view(1)
        else:
            constant[spec.name] = torch.nn.functional.normalize(sums[spec.name].float(), dim=0)
    return constant


def constant_metrics(data: MultiTaskData, split: str = "test") -> dict[str, dict[str, float]]:
    """``task -> metric -> value`` of the constant predictor on ``split``."""
    constant = _train_statistics(data)
    accumulators = {spec.name: kind_of(spec).accumulator(spec) for spec in data.tasks}
    for batch in BatchLoader(data, split, 64, train=False):
        for t, spec in enumerate(data.tasks):
            y = batch.y[spec.name] if isinstance(batch.y, dict) else batch.y[batch.task == t]
            if y.shape[0] == 0:
                continue
            c = constant[spec.name]
            shape = (y.shape[0], c.numel(), *y.shape[-2:]) if kind_of(spec).dense else (y.shape[0], c.numel())
            out = c.view(1, -1, *([1] * (len(shape) - 2))).expand(shape)
            accumulators[spec.name].update(out, y)
    return {name: acc.compute() for name, acc in accumulators.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="scenes", help="a built-in dataset name (scenes, shapes) or a record's data config")
    parser.add_argument("--record", type=Path, nargs="*", default=[], help="records whose test metrics to compare")
    args = parser.parse_args(argv)
    try:
        records = [json.loads(p.read_text()) for p in args.record]
        cfg = records[0]["config"]["data"] if records else {"name": args.data}
        data = build_data(cfg)
        base = constant_metrics(data)
    except (MolabenchError, OSError, json.JSONDecodeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"constant predictor on {data.name} (test):")
    for task, metrics in base.items():
        print(f"  {task:<14}" + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    all_beat = True
    for record, path in zip(records, args.record, strict=True):
        beaten, lost = [], []
        for spec in data.tasks:
            higher = kind_of(spec).higher_is_better()
            for metric, value in base[spec.name].items():
                ours = record["metrics"]["test"][spec.name][metric]
                better = ours > value if higher[metric] else ours < value
                (beaten if better else lost).append(f"{spec.name}/{metric}")
        all_beat &= not lost
        verdict = "beats it on every metric" if not lost else f"does NOT beat it on {', '.join(lost)}"
        print(f"{record['method']} (seed {record['seed']}, {path}): {verdict} ({len(beaten)}/{len(beaten) + len(lost)})")
    return 0 if all_beat else 1


if __name__ == "__main__":
    raise SystemExit(main())
