"""Task heads: one small module per task on top of the shared representation."""

from __future__ import annotations

from torch import nn

from molabench.data.base import TaskSpec
from molabench.errors import ConfigError


def make_head(task: TaskSpec, in_dim: int) -> nn.Module:
    if task.kind == "classification":
        return nn.Linear(in_dim, task.num_classes)
    raise ConfigError(f"task {task.name!r} of kind {task.kind!r} needs a dense head, which this architecture lacks")
