"""Batch iteration over a :class:`~molabench.data.base.MultiTaskData` split.

Two ways of forming training batches (``trainer.batching``):

- ``mixed``:    a shuffled stream over the union of all tasks; a batch holds whatever tasks
                the shuffle brings (task proportions follow dataset sizes).
- ``per_task``: every batch holds ``batch_size // T`` samples of every task (LibMTL's
                multi-input mode), smaller tasks cycling through their own shuffles.

Both give the same number of steps per epoch (``N_train // batch_size``) so budgets compare.
Images stay uint8 until they reach the device, where they are converted, augmented batch-wise
and normalised. Sources that decode files on load (``prefetch = True``, e.g. RadImageNet's
``FileSplit``) load the next batch in a background thread while the current one is used;
batch indices and augmentation randomness are still drawn in the calling thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

import torch
from torch import Tensor

from molabench.data.base import Batch, MultiTaskData, SplitSource, Targets

Batching = Literal["mixed", "per_task"]


def steps_per_epoch(split: SplitSource, batch_size: int) -> int:
    return max(1, len(split) // batch_size)


def _mixed_indices(split: SplitSource, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    order = torch.randperm(len(split), generator=gen)
    for step in range(steps_per_epoch(split, batch_size)):
        yield order[step * batch_size : (step + 1) * batch_size]


class _TaskCycler:
    """Endless shuffled stream of the sample indices of one task."""

    def __init__(self, members: Tensor, gen: torch.Generator) -> None:
        self.members, self.gen = members, gen
        self.order, self.pos = members[torch.randperm(len(members), generator=gen)], 0

    def take(self, n: int) -> Tensor:
        out = []
        while n > 0:
            if self.pos == len(self.order):
                self.order, self.pos = self.members[torch.randperm(len(self.members), generator=self.gen)], 0
            chunk = self.order[self.pos : self.pos + n]
            self.pos += len(chunk)
            n -= len(chunk)
            out.append(chunk)
        return torch.cat(out)


def _per_task_indices(split: SplitSource, batch_size: int, num_tasks: int, gen: torch.Generator) -> Iterator[Tensor]:
    present = [t for t in range(num_tasks) if bool((split.tasks == t).any())]
    if batch_size < len(present):
        from molabench.errors import ConfigError

        raise ConfigError(
            f"trainer.batching=per_task needs batch_size >= number of tasks ({len(present)}), got {batch_size}"
        )
    cyclers = [_TaskCycler(torch.nonzero(split.tasks == t).flatten(), gen) for t in present]
    sizes = [batch_size // len(present) + (1 if i < batch_size % len(present) else 0) for i in range(len(present))]
    for _ in range(steps_per_epoch(split, batch_size)):
        yield torch.cat([c.take(n) for c, n in zip(cyclers, sizes, strict=True)])


class BatchLoader:
    """Iterates batches of one split, moved to ``device``, augmented (train) and normalised."""

    def __init__(
        self,
        data: MultiTaskData,
        split: str,
        batch_size: int,
        *,
        train: bool,
        batching: Batching = "mixed",
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.data, self.source = data, data.splits[split]
        self.batch_size, self.train, self.batching = batch_size, train, batching
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)
        channels = data.in_channels
        self.mean = torch.tensor(list(data.mean)[:channels], device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(data.std)[:channels], device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        if self.train:
            return steps_per_epoch(self.source, self.batch_size)
        return -(-len(self.source) // self.batch_size)

    def _indices(self) -> Iterator[Tensor]:
        if not self.train:
            n = len(self.source)
            return (torch.arange(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size))
        if self.batching == "per_task":
            return _per_task_indices(self.source, self.batch_size, self.data.num_tasks, self.gen)
        return _mixed_indices(self.source, self.batch_size, self.gen)

    def _loaded(self) -> Iterator[tuple[Tensor, Tensor, Targets]]:
        """(indices, images, targets) of every batch; one batch ahead for file-backed sources."""
        if not getattr(self.source, "prefetch", False):
            for idx in self._indices():
                yield (idx, *self.source.load(idx))
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: tuple[Tensor, Future] | None = None
            for idx in self._indices():
                future = pool.submit(self.source.load, idx)
                if pending is not None:
                    yield (pending[0], *pending[1].result())
                pending = (idx, future)
            if pending is not None:
                yield (pending[0], *pending[1].result())

    def __iter__(self) -> Iterator[Batch]:
        for idx, images, targets in self._loaded():
            batch = Batch(images, targets, self.source.tasks[idx]).to(self.device)
            x = batch.x.float().div_(255.0)
            y = batch.y
            if self.train and self.data.augment is not None:
                x, y = self.data.augment(x, y, self.gen)
            yield Batch((x - self.mean) / self.std, y, batch.task)
