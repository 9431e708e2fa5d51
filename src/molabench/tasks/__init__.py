"""Task kinds by name (``TASK_KINDS``); ``kind_of(spec)`` is the kind of one task.

Each module of this package defines one :class:`~molabench.tasks.base.TaskKind` and registers
an instance of it under the kind's name (``TaskSpec.kind``).
"""

from __future__ import annotations

from molabench.data.base import TaskSpec
from molabench.registry import Registry
from molabench.tasks.base import Accumulator, Metric, TaskKind

TASK_KINDS: Registry[TaskKind] = Registry("task kind", package=__name__)


def kind_of(spec: TaskSpec) -> TaskKind:
    """The :class:`TaskKind` of a task (an instance; kinds hold no state)."""
    return TASK_KINDS.get(spec.kind)()


__all__ = ["TASK_KINDS", "Accumulator", "Metric", "TaskKind", "kind_of"]
