"""Classification: cross-entropy over the task's classes; accuracy (%) over the split."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from molabench.data.base import TaskSpec
from molabench.errors import DataError
from molabench.tasks import TASK_KINDS
from molabench.tasks.base import Metric, TaskKind


class AccuracyAccumulator:
    """Correct predictions (arg-max) over every sample of the split, in %."""

    def __init__(self) -> None:
        self.correct = 0
        self.seen = 0

    def update(self, output: Tensor, target: Tensor) -> None:
        self.correct += int((output.argmax(dim=1) == target).sum())
        self.seen += int(target.shape[0])

    def compute(self) -> dict[str, float]:
        return {"acc": 100.0 * self.correct / self.seen if self.seen else float("nan")}

    def notes(self) -> list[str]:
        return [] if self.seen else ["no sample"]

    def reduce(self, group: Any) -> None:
        """Sum the counts over the ranks (``engine.distributed``)."""
        total = group.all_reduce(torch.tensor([self.correct, self.seen], dtype=torch.int64))
        self.correct, self.seen = int(total[0]), int(total[1])


@TASK_KINDS.register("classification")
class Classification(TaskKind):
    """``L = mean_i CE(z_i, y_i)``; ``acc = 100 * #{argmax z_i = y_i} / N`` over the split."""

    name = "classification"
    dense = False
    metrics = (Metric("acc", "Acc", higher_is_better=True),)
    primary = "acc"

    def out_channels(self, spec: TaskSpec) -> int:
        return spec.num_classes

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.num_classes < 1:
            from molabench.errors import ConfigError

            raise ConfigError(f"task {spec.name!r} has no class (num_classes={spec.num_classes}); check the data's labels")

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    def accumulator(self, spec: TaskSpec) -> AccuracyAccumulator:
        return AccuracyAccumulator()

    def check_target(self, spec: TaskSpec, output: Tensor, target: Tensor) -> None:
        if target.dim() != 1 or target.shape[0] != output.shape[0] or target.dtype not in (torch.int64, torch.int32):
            raise DataError(
                f"task {spec.name!r} (classification) needs one integer label per sample, got a target of "
                f"shape {tuple(target.shape)} and dtype {target.dtype}; is the task's kind right?"
            )
