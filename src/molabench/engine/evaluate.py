"""Per-task evaluation of an algorithm on one split."""

from __future__ import annotations

import torch

from molabench.data.base import MultiTaskData
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import MultiTaskAlgorithm
from molabench.engine.losses import correct_count, task_loss

Metrics = dict[str, dict[str, float]]


@torch.no_grad()
def evaluate(algorithm: MultiTaskAlgorithm, data: MultiTaskData, split: str, batch_size: int, device: torch.device) -> Metrics:
    """``task name -> {acc, loss}`` plus ``avg`` (unweighted mean over tasks), accuracies in %."""
    tasks = algorithm.tasks
    correct = [0] * len(tasks)
    seen = [0] * len(tasks)
    loss_sum = [0.0] * len(tasks)
    for batch in BatchLoader(data, split, batch_size, train=False, device=device):
        fwd = algorithm.predict(batch.x, batch.task)
        for t, (spec, out, idx) in enumerate(zip(tasks, fwd.outputs, fwd.groups, strict=True)):
            if out is None or idx is None:
                continue
            target = algorithm.arch.target(t, batch.y[spec.name] if isinstance(batch.y, dict) else batch.y[idx])
            c, n = correct_count(spec, out, target)
            correct[t] += c
            seen[t] += n
            loss_sum[t] += float(task_loss(spec, out, target)) * n
    metrics: Metrics = {}
    for t, spec in enumerate(tasks):
        if seen[t]:
            metrics[spec.name] = {"acc": 100.0 * correct[t] / seen[t], "loss": loss_sum[t] / seen[t], "n": float(seen[t])}
    evaluated = [m for m in metrics.values()]
    if evaluated:
        metrics["avg"] = {
            "acc": sum(m["acc"] for m in evaluated) / len(evaluated),
            "loss": sum(m["loss"] for m in evaluated) / len(evaluated),
        }
    return metrics
