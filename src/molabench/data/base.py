"""The data contract every dataset implements.

A dataset is a :class:`MultiTaskData`: a list of tasks, and splits (``train``/``val``/``test``)
whose samples each carry a task id. The three kinds of heterogeneity of the paper map onto
``setting``:

- ``domain``:       one label set, several input domains; each domain is a task with its own head.
- ``multi_input``:  each sample belongs to exactly one task with its own label set.
- ``single_input``: every sample has targets for every task (NYUv2); ``tasks`` is all zeros
                    and ``targets`` is a dict ``task name -> dense target``.

Splits implement :class:`SplitSource`: ``load(indices)`` returns uint8 images and targets for a
batch of indices. :class:`TensorSplit` holds everything in memory (the fast path); datasets too
large for memory implement ``load`` by decoding files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

Setting = Literal["domain", "multi_input", "single_input"]
TaskKind = Literal["classification", "segmentation", "depth", "normal"]
Targets = Tensor | dict[str, Tensor]

# A train-time augmentation acting on a whole float batch in [0, 1] (B, C, H, W); targets are
# passed along because geometric augmentations of dense tasks must transform them too.
BatchAugment = Callable[[Tensor, Targets, torch.Generator], tuple[Tensor, Targets]]


@dataclass(frozen=True)
class TaskSpec:
    """One task (or domain) of a heterogeneous dataset.

    ``column`` is the name the paper's table gives this task (e.g. ``Breast`` for
    ``breastmnist``); the tables fall back to ``name``.
    """

    name: str
    num_classes: int
    kind: TaskKind = "classification"
    column: str | None = None

    @property
    def display(self) -> str:
        return self.column or self.name

    @classmethod
    def from_record(cls, entry: Mapping[str, object]) -> TaskSpec:
        """The spec of a run record's ``tasks`` entry (``name``, ``num_classes``, ``kind``, ``column``)."""
        return cls(
            str(entry["name"]),
            int(entry.get("num_classes") or 0),  # type: ignore[call-overload]
            entry.get("kind", "classification"),  # type: ignore[arg-type]
            entry.get("column"),  # type: ignore[arg-type]
        )


@runtime_checkable
class SplitSource(Protocol):
    """A split that can hand out batches of samples by index."""

    @property
    def tasks(self) -> Tensor:
        """int64 (N,) task id of every sample."""
        ...

    def __len__(self) -> int: ...

    def load(self, indices: Tensor) -> tuple[Tensor, Targets]:
        """uint8 images (B, C, H, W) and targets of the given samples."""
        ...


@dataclass
class TensorSplit:
    """A split held in memory as uint8 tensors; batches are plain index operations."""

    images: Tensor
    targets: Targets
    tasks: Tensor

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        targets = self.targets.values() if isinstance(self.targets, dict) else [self.targets]
        if any(t.shape[0] != n for t in targets) or self.tasks.shape != (n,):
            raise ValueError("images, targets and tasks must have the same number of samples")

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, indices: Tensor) -> tuple[Tensor, Targets]:
        if isinstance(self.targets, dict):
            return self.images[indices], {k: v[indices] for k, v in self.targets.items()}
        return self.images[indices], self.targets[indices]


@dataclass
class MultiTaskData:
    """A heterogeneous dataset ready for training: tasks, splits and preprocessing."""

    name: str
    setting: Setting
    tasks: list[TaskSpec]
    splits: dict[str, SplitSource]
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    augment: BatchAugment | None = None
    info: dict[str, object] = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def in_channels(self) -> int:
        images, _ = self.splits["train"].load(torch.arange(1))
        return int(images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        images, _ = self.splits["train"].load(torch.arange(1))
        return int(images.shape[2]), int(images.shape[3])

    def split_sizes(self) -> dict[str, list[int]]:
        """Number of samples of every task in every split."""
        return {
            name: torch.bincount(split.tasks, minlength=self.num_tasks).tolist() for name, split in self.splits.items()
        }


@dataclass
class Batch:
    """A batch on its way to the model: normalised float images, targets and task ids."""

    x: Tensor
    y: Targets
    task: Tensor

    def to(self, device: torch.device | str) -> Batch:
        y = {k: v.to(device, non_blocking=True) for k, v in self.y.items()} if isinstance(self.y, dict) else self.y.to(device, non_blocking=True)
        return Batch(self.x.to(device, non_blocking=True), y, self.task.to(device, non_blocking=True))

    def __len__(self) -> int:
        return self.x.shape[0]
