"""Decoding image files to uint8 tensors at a chosen resolution, and resizing uint8 batches.

Files are decoded the way the authors' *test* transform sees them: ``Resize(size)`` of the
shorter side (bicubic) then ``CenterCrop(size)``, converted to RGB (grayscale files are tiled
to three channels, as their ``Grayscale(num_output_channels=3)``). Train-time crops are taken
batch-wise from that square (see :mod:`molabench.data.augment`).

Decoding runs in a thread pool: Pillow releases the GIL while decoding and resizing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def default_workers() -> int:
    """Decoding threads: the cores this process may use (``MOLABENCH_DECODE_WORKERS`` overrides)."""
    env = os.environ.get("MOLABENCH_DECODE_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """One file -> uint8 (size, size, 3): shorter side resized to ``size``, centre-cropped.

    Raises ``OSError``/``UnidentifiedImageError``/``ValueError`` when the file cannot be read.
    """
    with Image.open(path) as im:
        # JPEG draft mode decodes at a reduced scale (>= 2x the target) for large downsizing.
        im.draft("RGB", (2 * size, 2 * size))
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8)


def try_decode(path: str | Path, size: int) -> np.ndarray | None:
    try:
        return decode_image(path, size)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def decode_files(
    paths: Sequence[str | Path], size: int, workers: int | None = None
) -> tuple[Tensor, list[int]]:
    """Decode ``paths`` into uint8 (N_ok, 3, size, size); also return the indices that failed.

    Failures are not warned about here: the caller decides how many it tolerates and reports
    them (one error when there are too many, else a warning per file).
    """
    workers = workers or default_workers()
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    failed: list[int] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, arr in enumerate(pool.map(lambda p: try_decode(p, size), paths, chunksize=64)):
            if arr is None:
                failed.append(k)
            else:
                out[k] = arr
    if failed:
        out = np.delete(out, failed, axis=0)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), failed


def resize_uint8(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize a uint8 (N, C, h, w) tensor to (N, C, size, size) (bilinear, antialiased), rounded.

    Chunked so that the float intermediate stays small.
    """
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (deterministic across file systems)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


__all__ = ["IMAGE_EXTENSIONS", "decode_files", "decode_image", "default_workers", "list_images", "resize_uint8", "try_decode"]
