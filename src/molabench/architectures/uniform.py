"""Uniform: one network and one head over the union of the tasks' label spaces.

No task information is used at train or test time: task ``t``'s label ``y`` is trained as
class ``offset[t] + y`` of the union head, and a prediction counts as correct only when the
arg-max over the *whole* union is that class. In the domain setting (one label set shared by
all domains) the union is that label set itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Architecture
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder


class Uniform(Architecture):
    head_sharing = "shared"

    def __init__(
        self, tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], Encoder], head: Mapping[str, Any] | None = None
    ) -> None:
        if setting == "single_input" or any(spec.kind != "classification" for spec in tasks):
            raise ConfigError(
                "method=uniform needs classification tasks of the domain or multi-input setting (one head over the union of "
                "label spaces, no task id); on single-input data every task sees every image, so use method=hps or single_task"
            )
        super().__init__(tasks, setting, head)
        sizes = [spec.num_classes for spec in self.tasks]
        if setting == "domain":
            offsets, total = [0] * len(sizes), max(sizes)
        else:
            offsets = [sum(sizes[:t]) for t in range(len(sizes))]
            total = sum(sizes)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        self.encoder = backbone()
        self.head = nn.Linear(self.encoder.out_dim, total)

    def encode(self, x: Tensor, task: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, groups: list[Tensor | None]) -> list[Tensor | None]:
        logits = self.head(z)
        return [None if idx is None else logits[idx] for idx in groups]

    def target(self, t: int, y: Tensor) -> Tensor:
        return y + self.offsets[t]

    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()


@ARCHITECTURES.register("uniform")
def uniform(
    tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], Encoder], head: Mapping[str, Any] | None = None
) -> Uniform:
    return Uniform(tasks, setting, backbone, head)
