"""A disk cache of decoded image folders: uint8 (N, 3, S, S) arrays keyed by files and size.

Decoding thousands of JPEGs costs seconds to minutes; a training run then only memory-maps
one ``.npy`` per (group of files, resolution). The key hashes every file's path, byte size and
modification time plus the resolution and the decoder version, so editing, adding or removing
a file (or changing ``image_size``) rebuilds the entry. Entries are written atomically
(temp file + ``os.replace``) so that concurrent runs never read a half-written cache.

Location: ``cache_dir`` argument, else ``$MOLABENCH_CACHE``, else ``~/.cache/molabench``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molabench.atomic import write_bytes_atomic
from molabench.data.images import decode_files
from molabench.errors import DataError

# Bump when decode_image changes what it produces, to invalidate old entries.
DECODER_VERSION = 1


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MOLABENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "molabench"


def _key(paths: Sequence[Path], size: int) -> str:
    h = hashlib.sha1(f"v{DECODER_VERSION}|{size}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _atomic_write(target: Path, write) -> None:
    write_bytes_atomic(target, write)


def cached_decode(
    paths: Sequence[Path], size: int, cache_dir: str | Path | None, tag: str, *, use_cache: bool = True
) -> tuple[Tensor, list[int]]:
    """Decoded uint8 (N_ok, 3, size, size) images of ``paths`` and the indices that failed to decode.

    ``tag`` names the entry for humans (e.g. ``pacs-photo``). With ``use_cache=False`` nothing is
    read or written.
    """
    if not use_cache:
        return decode_files(paths, size)
    try:
        key = _key(paths, size)
    except OSError as e:
        raise DataError(f"cannot read image file {e.filename}: {e.strerror}; check the dataset root") from None
    root = resolve_cache_dir(cache_dir)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)
    array_path, meta_path = root / f"{stem}-{size}px-{key}.npy", root / f"{stem}-{size}px-{key}.json"
    if array_path.exists() and meta_path.exists():
        try:
            failed = [int(i) for i in json.loads(meta_path.read_text())["failed"]]
            array = np.load(array_path, allow_pickle=False)
            if array.dtype != np.uint8 or array.shape != (len(paths) - len(failed), 3, size, size):
                raise ValueError(f"it holds {array.dtype} {array.shape}, not uint8 ({len(paths) - len(failed)}, 3, {size}, {size})")
        except (OSError, ValueError, EOFError, KeyError, TypeError) as e:  # damaged (e.g. truncated) outside molabench
            reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
            warnings.warn(f"rebuilding the damaged image cache entry {array_path} ({reason})", stacklevel=2)
        else:
            return torch.from_numpy(array), failed
    images, failed = decode_files(paths, size)
    try:
        _atomic_write(array_path, lambda f: np.save(f, images.numpy()))
        meta = {"tag": tag, "size": size, "count": len(paths), "failed": failed}
        _atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    except OSError as e:
        raise DataError(
            f"cannot write the image cache in {root} ({e.strerror}); set data.cache_dir=DIR or MOLABENCH_CACHE to a writable folder"
        ) from None
    return images, failed


__all__ = ["DECODER_VERSION", "cached_decode", "resolve_cache_dir"]
