"""The architecture contract: *how parameters are shared* between tasks.

An architecture maps a batch ``(x, task)`` to one prediction per task, through a
representation ``z = encode(x, task)`` and per-task heads ``decode(z, task)``. Which tasks a
sample is predicted for depends on the setting (see ``molabench.data.base``): in the
multi-input and domain settings sample ``i`` is predicted only for ``task[i]``; in the
single-input setting every sample is predicted for every task.

Everything about *combining* task losses lives in ``molabench.weighting``; everything about
extra loss terms in ``molabench.penalties``. An architecture only exposes what those need:
``shared_parameters()`` (what gradient methods combine), the representation ``z`` (what the
-UB variants differentiate) and ``aux`` side outputs (e.g. router logits for TwD).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from molabench.data.base import Setting, TaskSpec
from molabench.models.encoder import Encoder


@dataclass
class Forward:
    """What one forward pass produces.

    ``outputs[t]`` is task ``t``'s prediction for the samples ``groups[t]`` (``None`` when the
    batch holds no sample of task ``t``); ``representation`` is the shared representation
    when the architecture has one; ``aux`` holds side outputs such as router logits.
    """

    outputs: list[Tensor | None]
    groups: list[Tensor | None]
    representation: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)


def task_groups(task: Tensor, num_tasks: int, setting: Setting) -> list[Tensor | None]:
    """Indices of the samples each task is predicted for."""
    if setting == "single_input":
        everyone = torch.arange(task.shape[0], device=task.device)
        return [everyone] * num_tasks
    groups: list[Tensor | None] = []
    for t in range(num_tasks):
        idx = torch.nonzero(task == t).flatten()
        groups.append(idx if idx.numel() else None)
    return groups


class Architecture(nn.Module):
    """Base class: subclasses implement ``encode`` and ``decode`` (or override ``forward``).

    Heads come from :meth:`make_heads` (the task kind decides: a linear classifier on pooled
    features, or a dense head — PSP/ASPP, the ``head`` config — on the encoder's feature map);
    :meth:`embed` runs an encoder and returns what the heads read (``features``: ``pooled``
    (B, D) when every task is a classification, ``map`` (B, D, h, w) when any task is dense).
    """

    #: True when ``encode`` yields one representation shared by all tasks (needed by -UB methods).
    has_shared_representation: bool = True
    #: ``per_task``: each task (domain) has its own head, picked by the task id; ``shared``: one head for all
    #: tasks, no task id used (Uniform). Recorded, and shown in table rows of domain-generalisation methods.
    head_sharing: str = "per_task"
    #: True when every shared parameter reaches the losses only through that representation and
    #: every task-specific parameter comes after it (one encoder, then heads): gradient methods then
    #: get exact per-task gradients by back-propagating each task through its head once and the T
    #: head gradients through the encoder in one batched pass (``weighting.pertask``).
    shared_behind_representation: bool = False
    #: False when shared BatchNorm layers run on one task's rows only in some branches (and then only
    #: on the ranks that hold that task): ``trainer.sync_bn`` refuses such an architecture under torchrun
    #: (``models.sync_norm``), since every rank must run every synchronised layer alike.
    sync_bn_safe: bool = True

    def __init__(self, tasks: Sequence[TaskSpec], setting: Setting, head: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from molabench.models.heads import features_for
        from molabench.tasks import kind_of

        self.tasks = list(tasks)
        self.setting: Setting = setting
        self.head_cfg = dict(head) if head else None
        for spec in self.tasks:
            kind_of(spec).check_spec(spec)
        self.features: Literal["pooled", "map"] = features_for(self.tasks)

    def make_heads(self, encoder: Encoder, tasks: Sequence[TaskSpec] | None = None) -> nn.ModuleList:
        """One head per task (or per given task) reading ``encoder``'s features."""
        from molabench.models.heads import make_head

        return nn.ModuleList(make_head(spec, encoder, self.head_cfg, self.features) for spec in (self.tasks if tasks is None else tasks))

    def embed(self, encoder: Encoder, x: Tensor) -> Tensor:
        """``encoder``'s features of ``x`` in the form the heads read (see ``features``)."""
        return encoder(x) if self.features == "pooled" else encoder.forward_features(x)

    def param_counts(self) -> dict[str, int]:
        """Counts of an architecture's own additions (e.g. MoLA's adapters and routers) for the record."""
        return {}

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each epoch (schedules inside the model, e.g. a temperature)."""

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def representation_dim(self) -> int | None:
        """Width D of ``Forward.representation`` when it is pooled (B, D) features of an ``encoder``
        (what domain penalties build their networks on); None otherwise. Override when different."""
        encoder = self._modules.get("encoder")
        if not self.has_shared_representation or self.features != "pooled" or encoder is None:
            return None
        return int(encoder.out_dim)

    def encode(self, x: Tensor, task: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor, groups: list[Tensor | None]) -> list[Tensor | None]:
        raise NotImplementedError

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        z = self.encode(x, task)
        return Forward(self.decode(z, groups), groups, z if self.has_shared_representation else None)

    def target(self, t: int, y: Tensor) -> Tensor:
        """Task ``t``'s targets expressed in the space of ``outputs[t]`` (identity by default)."""
        return y

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters used by more than one task: what gradient-combination methods act on."""
        task_specific = {id(p) for p in self.task_specific_parameters()}
        return (p for p in self.parameters() if id(p) not in task_specific)

    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        return self.head_parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The prediction heads' parameters (the ``heads`` module by convention; override otherwise):
        what parameter counts of architectures leave out (architectures.md, Fig. 5)."""
        heads = self._modules.get("heads")
        return heads.parameters() if heads is not None else iter(())


class SharedEncoderWithHeads(Architecture):
    """Hard parameter sharing: one encoder, one head per task (HPS)."""

    shared_behind_representation = True

    def __init__(self, tasks: Sequence[TaskSpec], setting: Setting, encoder: Encoder, head: Mapping[str, Any] | None = None) -> None:
        super().__init__(tasks, setting, head)
        self.encoder = encoder
        self.heads = self.make_heads(encoder)

    def encode(self, x: Tensor, task: Tensor) -> Tensor:
        return self.embed(self.encoder, x)

    def decode(self, z: Tensor, groups: list[Tensor | None]) -> list[Tensor | None]:
        return [None if idx is None else head(z[idx]) for head, idx in zip(self.heads, groups, strict=True)]
