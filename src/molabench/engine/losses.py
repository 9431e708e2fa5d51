"""Per-task losses and metrics, chosen by the task's kind."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from molabench.data.base import TaskSpec
from molabench.errors import ConfigError


def task_loss(task: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
    """Mean loss of one task over its samples."""
    if task.kind == "classification":
        return F.cross_entropy(output, target)
    raise ConfigError(f"no loss for tasks of kind {task.kind!r} (task {task.name!r}) yet")


def correct_count(task: TaskSpec, output: Tensor, target: Tensor) -> tuple[int, int]:
    """(number correct, number of samples) for accuracy-style metrics."""
    if task.kind == "classification":
        return int((output.argmax(dim=1) == target).sum()), int(target.shape[0])
    raise ConfigError(f"no metric for tasks of kind {task.kind!r} (task {task.name!r}) yet")


def zero_loss(like: Tensor) -> Tensor:
    return torch.zeros((), device=like.device, dtype=like.dtype)
