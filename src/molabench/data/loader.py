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

Under torchrun (``engine.distributed``) every rank draws the *same* global batch of
``world_size x batch_size`` indices, by the rules above applied to that global batch size, and keeps
rows ``rank::world_size`` of it; augmentation parameters are drawn for the whole global batch (the
other ranks' rows are zeros here, augmented and dropped), so every sample is augmented as one process
at the global batch size augments it, and the loader's position is the same on every rank. An
evaluation loader gives rank r the samples ``r::world_size`` of the split.

A training loader's position is part of a run's checkpoint: :meth:`BatchLoader.state_dict` holds
its generator and, between two batches of an epoch, that epoch's order (the shuffle, or every
task's cycler), the indices already drawn ahead and the batches yielded, so that after
:meth:`BatchLoader.load_state_dict` it yields exactly the batches it would have yielded next.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import torch
from torch import Tensor

from molabench.data.base import Batch, MultiTaskData, SplitSource, Targets

Batching = Literal["mixed", "per_task"]


def steps_per_epoch(split: SplitSource, batch_size: int) -> int:
    return max(1, len(split) // batch_size)


class _MixedOrder:
    """The mixed batches of one epoch: one shuffle of the whole split, cut into batches.

    The shuffle is drawn from ``gen`` on the first batch (as a generator function would), and the
    whole position (the order and the next step) is :meth:`state_dict`, so an epoch interrupted
    between two batches continues with the same batches."""

    def __init__(self, split: SplitSource, batch_size: int, gen: torch.Generator) -> None:
        self.split, self.batch_size, self.gen = split, batch_size, gen
        self.order: Tensor | None = None
        self.step = 0

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        if self.order is None:
            self.order = torch.randperm(len(self.split), generator=self.gen)
        if self.step >= steps_per_epoch(self.split, self.batch_size):
            raise StopIteration
        start = self.step * self.batch_size
        self.step += 1
        return self.order[start : start + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.order, self.step = state["order"], int(state["step"])


class _TaskCycler:
    """Endless shuffled stream of the sample indices of one task."""

    def __init__(self, members: Tensor, gen: torch.Generator, order: Tensor | None = None, pos: int = 0) -> None:
        """A new stream draws its first shuffle from ``gen``; ``order``/``pos`` restore a saved one."""
        self.members, self.gen = members, gen
        self.order = members[torch.randperm(len(members), generator=gen)] if order is None else order
        self.pos = pos

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


class _PerTaskOrder:
    """The per-task batches of one epoch: ``batch_size // T`` samples of every present task, each
    task cycling through its own shuffles. Built on the first batch (the batch-size check and the
    tasks' first shuffles happen then); the cyclers' positions are :meth:`state_dict`."""

    def __init__(self, split: SplitSource, batch_size: int, num_tasks: int, gen: torch.Generator) -> None:
        self.split, self.batch_size, self.num_tasks, self.gen = split, batch_size, num_tasks, gen
        self.cyclers: list[_TaskCycler] | None = None
        self.sizes: list[int] = []
        self.step = 0

    def _start(self) -> list[_TaskCycler]:
        present = [t for t in range(self.num_tasks) if bool((self.split.tasks == t).any())]
        if self.batch_size < len(present):
            from molabench.errors import ConfigError

            raise ConfigError(
                f"trainer.batching=per_task needs batch_size >= number of tasks ({len(present)}), got {self.batch_size}"
            )
        n = len(present)
        self.sizes = [self.batch_size // n + (1 if i < self.batch_size % n else 0) for i in range(n)]
        return [_TaskCycler(torch.nonzero(self.split.tasks == t).flatten(), self.gen) for t in present]

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        if self.cyclers is None:
            self.cyclers = self._start()
        if self.step >= steps_per_epoch(self.split, self.batch_size):
            raise StopIteration
        self.step += 1
        return torch.cat([c.take(n) for c, n in zip(self.cyclers, self.sizes, strict=True)])

    def state_dict(self) -> dict[str, Any]:
        cyclers = [{"members": c.members, "order": c.order, "pos": c.pos} for c in self.cyclers or []]
        return {"cyclers": cyclers if self.cyclers is not None else None, "sizes": list(self.sizes), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step, self.sizes = int(state["step"]), [int(n) for n in state["sizes"]]
        self.cyclers = None
        if state["cyclers"] is not None:
            self.cyclers = [_TaskCycler(c["members"], self.gen, c["order"], int(c["pos"])) for c in state["cyclers"]]


_Order = _MixedOrder | _PerTaskOrder


class _Epoch:
    """Where a training epoch stands: its batch order, the batches whose indices were drawn but
    not yet yielded (one ahead when prefetching) and how many batches were yielded."""

    def __init__(self, order: _Order) -> None:
        self.order = order
        self.drawn: list[Tensor] = []
        self.yielded = 0


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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """``batch_size`` is per process: under torchrun (``world_size`` > 1) a training step's global
        batch holds ``world_size x batch_size`` samples, of which this rank loads rows ``rank::world_size``."""
        self.data, self.source = data, data.splits[split]
        self.rank, self.world_size = int(rank), int(world_size)
        self.batch_size, self.train, self.batching = batch_size, train, batching
        self.global_batch_size = batch_size * self.world_size
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)
        channels = data.in_channels
        self.mean = torch.tensor(list(data.mean)[:channels], device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(data.std)[:channels], device=self.device).view(1, -1, 1, 1)
        self._epoch: _Epoch | None = None  # the training epoch iterated last
        self._resumed: _Epoch | None = None  # an interrupted epoch the next iteration continues

    def __len__(self) -> int:
        if self.train:
            return steps_per_epoch(self.source, self.global_batch_size)
        return -(-len(self._evaluated()) // self.batch_size)

    def _evaluated(self) -> Tensor:
        """The samples of the split this rank evaluates."""
        return torch.arange(self.rank, len(self.source), self.world_size)

    def _epoch_indices(self, epoch: _Epoch) -> Iterator[Tensor]:
        """The epoch's batch indices: first those drawn before an interruption and not yet yielded,
        then new ones from its order, each remembered in ``epoch.drawn`` until its batch is yielded."""
        yield from list(epoch.drawn)
        for idx in epoch.order:
            epoch.drawn.append(idx)
            yield idx

    def _indices(self, epoch: _Epoch | None) -> Iterator[Tensor]:
        if epoch is not None:
            return self._epoch_indices(epoch)
        if self.world_size == 1:
            n = len(self.source)
            return (torch.arange(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size))
        return iter(self._evaluated().split(self.batch_size))

    def _new_order(self) -> _Order:
        if self.batching == "per_task":
            return _PerTaskOrder(self.source, self.global_batch_size, self.data.num_tasks, self.gen)
        return _MixedOrder(self.source, self.global_batch_size, self.gen)

    def _shard(self, idx: Tensor) -> Tensor:
        """This rank's rows of a global training batch."""
        return idx if self.world_size == 1 else idx[self.rank:: self.world_size]

    def _loaded(self, epoch: _Epoch | None) -> Iterator[tuple[Tensor, Tensor, Targets]]:
        """(indices, images, targets) of every batch; one batch ahead for file-backed sources."""
        shard = self._shard if epoch is not None else (lambda idx: idx)
        if not getattr(self.source, "prefetch", False):
            for idx in self._indices(epoch):
                yield (idx, *self.source.load(shard(idx)))
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: tuple[Tensor, Future] | None = None
            for idx in self._indices(epoch):
                future = pool.submit(self.source.load, shard(idx))
                if pending is not None:
                    yield (pending[0], *pending[1].result())
                pending = (idx, future)
            if pending is not None:
                yield (pending[0], *pending[1].result())

    def __iter__(self) -> Iterator[Batch]:
        """The batches of the split; for training, one epoch: a new shuffle, or the rest of the
        epoch :meth:`load_state_dict` restored."""
        epoch: _Epoch | None = None
        if self.train:
            epoch, self._resumed = self._resumed or _Epoch(self._new_order()), None
            self._epoch = epoch
        return self._batches(epoch)

    def _batches(self, epoch: _Epoch | None) -> Iterator[Batch]:
        for idx, images, targets in self._loaded(epoch):
            mine = self._shard(idx) if epoch is not None else idx
            batch = Batch(images, targets, self.source.tasks[mine]).to(self.device)
            x = batch.x.float().div_(255.0)
            y = batch.y
            if self.train and self.data.augment is not None:
                x, y = self._augment(x, y, len(idx))
            if epoch is not None:
                epoch.drawn.pop(0)
                epoch.yielded += 1
            yield Batch((x - self.mean) / self.std, y, batch.task)

    def _augment(self, x: Tensor, y: Targets, total: int) -> tuple[Tensor, Targets]:
        """The data's augmentation of this rank's rows, with the parameters one process draws for the
        whole global batch of ``total`` rows (every augmentation draws per-sample parameters in batch order)."""
        augment = self.data.augment
        assert augment is not None
        if self.world_size == 1:
            return augment(x, y, self.gen)
        rows = slice(self.rank, None, self.world_size)

        def widen(t: Tensor) -> Tensor:
            full = t.new_zeros((total, *t.shape[1:]))
            full[rows] = t
            return full

        wide_y = {k: widen(v) for k, v in y.items()} if isinstance(y, dict) else widen(y)
        out_x, out_y = augment(widen(x), wide_y, self.gen)
        return out_x[rows], ({k: v[rows] for k, v in out_y.items()} if isinstance(out_y, dict) else out_y[rows])

    def state_dict(self, within_epoch: bool = True) -> dict[str, Any]:
        """The loader's generator and, ``within_epoch``, where the current training epoch stands
        (between two batches), so that :meth:`load_state_dict` makes the loader yield exactly the
        batches it would have yielded next. Without it the next iteration starts a new epoch."""
        state: dict[str, Any] = {"gen": self.gen.get_state(), "epoch": None}
        if within_epoch and self._epoch is not None:
            epoch = self._epoch
            state["epoch"] = {
                "batching": self.batching,
                "order": epoch.order.state_dict(),
                "drawn": list(epoch.drawn),
                "yielded": epoch.yielded,
            }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self._epoch = self._resumed = None
        saved = state.get("epoch")
        if saved is not None:
            if saved["batching"] != self.batching:
                raise ValueError(f"the saved epoch used batching={saved['batching']}, this loader {self.batching}")
            order = self._new_order()
            order.load_state_dict(saved["order"])
            epoch = _Epoch(order)
            epoch.drawn, epoch.yielded = list(saved["drawn"]), int(saved["yielded"])
            self._resumed = epoch
