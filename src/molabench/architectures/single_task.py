"""Single-Task: an independent network per task, all trained in one run.

Each task's samples go through that task's own encoder and head; nothing is shared, so
``shared_parameters()`` is empty and gradient-combination methods reduce to plain sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Architecture, Forward, task_groups
from molabench.data.base import Setting, TaskSpec
from molabench.models.encoder import Encoder


class SingleTask(Architecture):
    has_shared_representation = False

    def __init__(
        self, tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], Encoder], head: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(tasks, setting, head)
        self.encoders = nn.ModuleList(backbone() for _ in self.tasks)
        self.heads = nn.ModuleList(
            self.make_heads(enc, [spec])[0] for spec, enc in zip(self.tasks, self.encoders, strict=True)
        )

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        if self.training:
            # A task's own BatchNorm cannot normalise one sample; like drop_last, that task sits
            # out this step (a mixed batch brings a small task a single sample now and then).
            groups = [None if idx is not None and idx.numel() < 2 else idx for idx in groups]
        outputs: list[Tensor | None] = []
        for encoder, head, idx in zip(self.encoders, self.heads, groups, strict=True):
            outputs.append(None if idx is None else head(self.embed(encoder, x[idx])))
        return Forward(outputs, groups)

    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        return iter(list(self.parameters()))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())


@ARCHITECTURES.register("single_task")
def single_task(
    tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], Encoder], head: Mapping[str, Any] | None = None
) -> SingleTask:
    return SingleTask(tasks, setting, backbone, head)


__all__ = ["SingleTask"]
