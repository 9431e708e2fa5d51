"""Single-Task: an independent network per task, all trained in one run.

Each task's samples go through that task's own encoder and head; nothing is shared, so
``shared_parameters()`` is empty and gradient-combination methods reduce to plain sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Architecture, Forward, task_groups
from molabench.data.base import Setting, TaskSpec
from molabench.models.heads import make_head


class SingleTask(Architecture):
    has_shared_representation = False

    def __init__(self, tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], nn.Module]) -> None:
        super().__init__(tasks, setting)
        self.encoders = nn.ModuleList(backbone() for _ in self.tasks)
        self.heads = nn.ModuleList(make_head(spec, enc.out_dim) for spec, enc in zip(self.tasks, self.encoders, strict=True))

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        if self.training:
            # A task's own BatchNorm cannot normalise one sample; like drop_last, that task sits
            # out this step (a mixed batch brings a small task a single sample now and then).
            groups = [None if idx is not None and idx.numel() < 2 else idx for idx in groups]
        outputs: list[Tensor | None] = []
        for encoder, head, idx in zip(self.encoders, self.heads, groups, strict=True):
            outputs.append(None if idx is None else head(encoder(x[idx])))
        return Forward(outputs, groups)

    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        return iter(list(self.parameters()))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())


@ARCHITECTURES.register("single_task")
def single_task(tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], nn.Module], **_: object) -> SingleTask:
    return SingleTask(tasks, setting, backbone)


__all__ = ["SingleTask"]
