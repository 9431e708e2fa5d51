"""Per-task evaluation of an algorithm on one split, through the tasks' kinds.

Every task's :class:`~molabench.tasks.base.TaskKind` supplies a metric accumulator that sees the
whole split (a confusion matrix, pooled pixel errors, every pixel's angle error), so no metric
depends on the batch size. Each task also reports ``loss`` (its loss averaged over the split's
batches, weighted by their sample counts) and ``n`` (samples). ``avg`` holds the unweighted mean
over tasks of every metric that all evaluated tasks report (accuracy and loss on classification
data; loss alone when the tasks are of different kinds).

Under torchrun (``dist``) each rank evaluates the samples ``rank::world_size`` of the split, then the
accumulators (``reduce``: counts, confusion matrices, pixel sums, every pixel's angle error) and the
loss sums are reduced over the ranks before any metric is computed: the metrics are those of the
whole split, as one process computes them (up to the order of float sums). A task kind whose
accumulator cannot be reduced makes every rank evaluate the whole split instead.
"""

from __future__ import annotations

import math

import torch

from molabench.data.base import MultiTaskData
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import MultiTaskAlgorithm
from molabench.engine.distributed import Distributed
from molabench.tasks import kind_of

Metrics = dict[str, dict[str, float]]


@torch.no_grad()
def evaluate(
    algorithm: MultiTaskAlgorithm,
    data: MultiTaskData,
    split: str,
    batch_size: int,
    device: torch.device,
    notes: list[str] | None = None,
    dist: Distributed | None = None,
) -> Metrics:
    """``task name -> {metric: value, loss, n}`` plus ``avg``; ``notes`` collects the accumulators'
    remarks (e.g. a class absent from the split). ``dist``: evaluate as one rank of a torchrun launch."""
    tasks = algorithm.tasks
    kinds = [kind_of(spec) for spec in tasks]
    accumulators = [kind.accumulator(spec) for kind, spec in zip(kinds, tasks, strict=True)]
    seen = [0] * len(tasks)
    loss_sum = [0.0] * len(tasks)
    shard = dist is not None and all(callable(getattr(acc, "reduce", None)) for acc in accumulators)
    rank, world = (dist.rank, dist.world_size) if shard and dist is not None else (0, 1)
    for batch in BatchLoader(data, split, batch_size, train=False, device=device, rank=rank, world_size=world):
        fwd = algorithm.predict(batch.x, batch.task)
        for t, (spec, kind, out, idx) in enumerate(zip(tasks, kinds, fwd.outputs, fwd.groups, strict=True)):
            if out is None or idx is None:
                continue
            target = algorithm.arch.target(t, batch.y[spec.name] if isinstance(batch.y, dict) else batch.y[idx])
            kind.check_target(spec, out, target)
            accumulators[t].update(out, target)
            n = int(out.shape[0])
            seen[t] += n
            loss_sum[t] += float(kind.loss(spec, out, target)) * n
    if shard and dist is not None:
        for acc in accumulators:
            acc.reduce(dist)  # type: ignore[attr-defined]
        totals = dist.all_reduce(torch.tensor(loss_sum + seen, dtype=torch.float64)).tolist()
        loss_sum, seen = totals[: len(tasks)], [round(n) for n in totals[len(tasks):]]
    metrics: Metrics = {}
    for t, spec in enumerate(tasks):
        if seen[t]:
            metrics[spec.name] = {**accumulators[t].compute(), "loss": loss_sum[t] / seen[t], "n": float(seen[t])}
            if notes is not None:
                notes.extend(f"{split}: {note}" for note in accumulators[t].notes())
    evaluated = list(metrics.values())
    if evaluated:
        common = [k for k in evaluated[0] if k != "n" and all(k in m for m in evaluated)]
        metrics["avg"] = {k: sum(m[k] for m in evaluated) / len(evaluated) for k in common}
    return metrics


def non_finite(metrics: Metrics) -> list[str]:
    """``task/metric`` names whose value is NaN or infinite."""
    return [f"{task}/{name}" for task, values in metrics.items() for name, value in values.items() if not math.isfinite(value)]
