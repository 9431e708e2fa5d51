"""Per-task losses, chosen by the task's kind (``molabench.tasks``)."""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.data.base import TaskSpec
from molabench.tasks import kind_of


def task_loss(task: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
    """Mean loss of one task over its samples (or valid pixels), as its kind defines it."""
    return kind_of(task).loss(task, output, target)


def zero_loss(like: Tensor) -> Tensor:
    return torch.zeros((), device=like.device, dtype=like.dtype)
