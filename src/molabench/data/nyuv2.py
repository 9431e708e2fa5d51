"""NYUv2 (13-class segmentation, depth, surface normal) in the MTAN release layout (paper Table 5).

Release format (Liu et al., MTAN, CVPR 2019): ``<root>/{train,val}/{image,label,depth,normal}/{i}.npy``,
795 train / 654 val samples of 288x384: image HxWx3 float in [0, 1], label HxW (classes 0..12,
-1 = ignore), depth HxWx1, normal HxWx3 (unit vectors; zero where undefined). MTAN's ``val``
folder is the set everyone reports, so it is our ``test`` split; ``val`` is a seeded
``val_fraction`` of train for clean model selection (``val_fraction: 0`` trains on all 795).

Setting ``single_input``: every sample has all three targets, ``tasks`` is all zeros and
targets are ``{"segmentation": long (N,H,W), "depth": float (N,1,H,W), "normal": float (N,3,H,W)}``.

Images are stored as uint8, ``round(255 * image)``, like every other dataset here (the loader turns
them back into [0, 1] floats): a quantisation error of at most 0.5/255 against the release's
floats. Labels are held as int8 and widened to int64 per batch. No normalisation (mean 0, std 1),
as MTAN and the authors. Augmentation: MTAN's RandomScaleCrop + flip
(:class:`~molabench.data.augment.ScaleCropFlip`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molabench.data import DATASETS
from molabench.data.augment import ScaleCropFlip
from molabench.data.base import MultiTaskData, Targets, TaskSpec
from molabench.data.images import default_workers
from molabench.data.splits import check_fraction, holdout
from molabench.errors import DataError

NUM_CLASSES = 13
KINDS = ("image", "label", "depth", "normal")
TASKS = (
    TaskSpec("segmentation", NUM_CLASSES, kind="segmentation", column="seg"),
    TaskSpec("depth", 0, kind="depth", column="depth"),
    TaskSpec("normal", 0, kind="normal", column="normal"),
)


class DenseSplit:
    """In-memory single-input split with dense targets; compact storage, widened per batch."""

    def __init__(self, images: Tensor, label: Tensor, depth: Tensor, normal: Tensor) -> None:
        n = images.shape[0]
        if images.dtype != torch.uint8 or any(t.shape[0] != n for t in (label, depth, normal)):
            raise ValueError("images must be uint8 and every target must have one entry per image")
        self.images, self.label, self.depth, self.normal = images, label, depth, normal
        self._tasks = torch.zeros(n, dtype=torch.long)

    @property
    def tasks(self) -> Tensor:
        return self._tasks

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: Tensor) -> DenseSplit:
        return DenseSplit(self.images[indices], self.label[indices], self.depth[indices], self.normal[indices])

    def load(self, indices: Tensor) -> tuple[Tensor, Targets]:
        return self.images[indices], {
            "segmentation": self.label[indices].long(),
            "depth": self.depth[indices],
            "normal": self.normal[indices],
        }


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} ({e}); re-extract the NYUv2 release") from None


def _sample(folder: Path, i: int) -> tuple[np.ndarray, ...]:
    image, label, depth, normal = (_load_npy(folder / k / f"{i}.npy") for k in KINDS)
    h, w = label.shape[:2] if label.ndim == 2 else (-1, -1)
    expected = {"image": (h, w, 3), "label": (h, w), "depth": (h, w, 1), "normal": (h, w, 3)}
    for k, arr in zip(KINDS, (image, label, depth, normal), strict=True):
        if arr.shape != expected[k]:
            raise DataError(f"{folder / k / f'{i}.npy'} has shape {arr.shape}, expected HxW{expected[k][2:]} (MTAN layout)")
    if not (np.isfinite(image).all() and image.min() >= -1e-3 and image.max() <= 1 + 1e-3):
        raise DataError(f"{folder / 'image' / f'{i}.npy'}: image values must lie in [0, 1] (MTAN release), got {image.min()}..{image.max()}")
    if label.min() < -1 or label.max() >= NUM_CLASSES or not np.array_equal(label, np.round(label)):
        raise DataError(f"{folder / 'label' / f'{i}.npy'}: labels must be integers in -1..{NUM_CLASSES - 1}, got {label.min()}..{label.max()}")
    if not np.isfinite(depth).all() or not (depth != 0).any():
        raise DataError(
            f"{folder / 'depth' / f'{i}.npy'}: depth must be finite with at least one valid (non-zero) pixel; "
            "re-extract the release or remove the sample (every split's files numbered 0..N-1)"
        )
    return image, label, depth, normal


def _read_folder(folder: Path, workers: int) -> DenseSplit:
    if not all((folder / k).is_dir() for k in KINDS):
        missing = [k for k in KINDS if not (folder / k).is_dir()]
        raise DataError(f"NYUv2: {folder} lacks {missing}; expected {{train,val}}/{{image,label,depth,normal}}/{{i}}.npy")
    n = len(list((folder / "image").glob("*.npy")))
    if n == 0:
        raise DataError(f"NYUv2: no .npy files in {folder / 'image'}")
    for k in KINDS:
        gaps = [i for i in range(n) if not (folder / k / f"{i}.npy").is_file()]
        if gaps:
            raise DataError(f"NYUv2: {folder / k} lacks {gaps[0]}.npy (files must be numbered 0..{n - 1})")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        samples = list(pool.map(lambda i: _sample(folder, i), range(n)))
    if len({s[1].shape for s in samples}) != 1:
        raise DataError(f"NYUv2: samples in {folder} differ in size; the MTAN release is 288x384 throughout")
    images = np.stack([s[0] for s in samples])
    images = torch.from_numpy(np.rint(images * 255.0).clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    label = torch.from_numpy(np.stack([s[1] for s in samples]).astype(np.int8))
    depth = torch.from_numpy(np.stack([s[2] for s in samples]).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    normal = torch.from_numpy(np.stack([s[3] for s in samples]).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    return DenseSplit(images, label, depth, normal)


@DATASETS.register("nyuv2")
def build_nyuv2(
    root: str | os.PathLike,
    seed: int = 0,
    val_fraction: float = 0.1,
    augment: bool = True,
    scales: tuple[float, ...] = (1.0, 1.2, 1.5),
    workers: int | None = None,
) -> MultiTaskData:
    """NYUv2 from the MTAN ``.npy`` release at ``root`` (the folder holding ``train/`` and ``val/``)."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(f"NYUv2 root {root_path} does not exist; set data.root=DIR (the folder holding train/ and val/)")
    for sub in ("train", "val"):
        if not (root_path / sub).is_dir():
            raise DataError(f"NYUv2: {root_path / sub} missing; data.root must hold the MTAN release's train/ and val/")
    val_fraction = check_fraction("val_fraction", val_fraction)
    workers = workers or default_workers()
    train, test = _read_folder(root_path / "train", workers), _read_folder(root_path / "val", workers)
    splits: dict[str, DenseSplit] = {"train": train, "test": test}
    if val_fraction > 0:
        kept, held = holdout(train.tasks, val_fraction, seed)
        splits = {"train": train.subset(kept), "val": train.subset(held), "test": test}
    return MultiTaskData(
        name="nyuv2",
        setting="single_input",
        tasks=list(TASKS),
        splits=splits,  # type: ignore[arg-type]
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        augment=ScaleCropFlip(scales=tuple(float(s) for s in scales)) if augment else None,
        info={"root": str(root_path), "image_storage": "uint8 = round(255 * image)"},
    )


__all__ = ["NUM_CLASSES", "TASKS", "DenseSplit", "build_nyuv2"]
