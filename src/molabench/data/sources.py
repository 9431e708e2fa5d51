"""Split sources beyond the in-memory :class:`~molabench.data.base.TensorSplit`.

- :class:`PartsSplit`: several in-memory parts (one per task) that may differ in channels;
  single-channel parts are tiled to three channels only when a batch is loaded, so gray MedMNIST
  tasks at 224 px take a third of the memory.
- :class:`FileSplit`: samples stay on disk (RadImageNet: 1.35M files) and are decoded at load
  time in a thread pool; an unreadable file is replaced by a black image with a warning and
  counted, and more than ``max_unreadable`` of them stop the run with a DataError.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molabench.data.base import Targets
from molabench.data.images import default_workers, try_decode
from molabench.errors import DataError


class PartsSplit:
    """Concatenation of per-task uint8 image tensors (N_k, C_k, H, W) with class targets."""

    def __init__(self, images: Sequence[Tensor], targets: Sequence[Tensor], channels: int = 3) -> None:
        if len(images) != len(targets) or not images:
            raise ValueError("PartsSplit needs one targets tensor per image part, at least one part")
        sizes = {tuple(im.shape[2:]) for im in images}
        if len(sizes) != 1 or any(im.dtype != torch.uint8 or im.dim() != 4 for im in images):
            raise ValueError(f"parts must be uint8 (N, C, H, W) of one spatial size, got {sizes}")
        self.parts, self.channels = list(images), channels
        self.targets = torch.cat([t.to(torch.long) for t in targets])
        counts = torch.tensor([im.shape[0] for im in images])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        self._tasks = torch.repeat_interleave(torch.arange(len(images)), counts)

    @property
    def tasks(self) -> Tensor:
        return self._tasks

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, indices: Tensor) -> tuple[Tensor, Targets]:
        indices = torch.as_tensor(indices, dtype=torch.long)
        h, w = self.parts[0].shape[2:]
        out = torch.empty((len(indices), self.channels, h, w), dtype=torch.uint8)
        part_of = self._tasks[indices]
        for k in torch.unique(part_of).tolist():
            rows = torch.nonzero(part_of == k).flatten()
            imgs = self.parts[k][indices[rows] - self.offsets[k]]
            out[rows] = imgs.expand(-1, self.channels, -1, -1) if imgs.shape[1] == 1 else imgs
        return out, self.targets[indices]


class FileSplit:
    """Images decoded from files on every load (shorter side resized, centre crop, RGB)."""

    prefetch = True  # BatchLoader decodes the next batch in the background

    def __init__(
        self,
        paths: Sequence[str | Path],
        targets: Tensor,
        tasks: Tensor,
        image_size: int,
        *,
        workers: int | None = None,
        max_unreadable: int = 10,
    ) -> None:
        if not (len(paths) == len(targets) == len(tasks)):
            raise ValueError("paths, targets and tasks must have the same length")
        # numpy array of str keeps 1M+ paths compact
        self.paths = np.asarray([str(p) for p in paths])
        self.targets, self._tasks = targets.to(torch.long), tasks.to(torch.long)
        self.image_size, self.max_unreadable = int(image_size), int(max_unreadable)
        self.workers = workers or default_workers()
        self.unreadable: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def tasks(self) -> Tensor:
        return self._tasks

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, indices: Tensor) -> tuple[Tensor, Targets]:
        indices = torch.as_tensor(indices, dtype=torch.long)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers)
        s = self.image_size
        chosen = [self.paths[i] for i in indices.tolist()]
        out = np.zeros((len(chosen), s, s, 3), dtype=np.uint8)
        for k, arr in enumerate(self._pool.map(lambda p: try_decode(p, s), chosen)):
            if arr is None:
                self._unreadable(chosen[k])
            else:
                out[k] = arr
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), self.targets[indices]

    def _unreadable(self, path: str) -> None:
        if path not in self.unreadable:
            self.unreadable.add(path)
            warnings.warn(
                f"unreadable image replaced by a black image: {path} ({len(self.unreadable)} so far)", stacklevel=3
            )
        if len(self.unreadable) > self.max_unreadable:
            raise DataError(
                f"{len(self.unreadable)} unreadable images (last: {path}), more than data.max_unreadable="
                f"{self.max_unreadable}; re-extract the dataset or raise data.max_unreadable"
            )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None  # thread pools do not pickle; recreated lazily
        return state


__all__ = ["FileSplit", "PartsSplit"]
