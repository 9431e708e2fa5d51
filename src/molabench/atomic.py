"""Atomic file writes: a file is either its old self, its new self, or absent — never half-written.

Every writer of molabench (records, tables, checkpoints, caches, downloads, benchmark JSON,
figures) goes through :func:`atomic_write`: the content is written to a temporary sibling
(``.<name>.<random>.tmp``), flushed to disk and renamed over the target with ``os.replace``
(atomic on POSIX and Windows within one file system). On any error the temporary file is
removed and the target is untouched. Files get the permissions a plain ``open`` would give
(``mkstemp`` would leave 0600).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

# The process umask: reading it means setting it, so once at import, before any worker thread.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file's content, then rename it onto ``path``.

    ``write`` receives the temporary file's path (so ``torch.save``, ``np.save``, ``savefig`` or a
    download can write it however they like); the temporary file is created empty beforehand.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # the content is on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _with_handle(mode: str, body: Callable[[IO[Any]], None]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, mode) as handle:
            body(handle)

    return write


def write_text_atomic(path: Path | str, text: str) -> Path:
    return atomic_write(path, _with_handle("w", lambda h: h.write(text)))


def write_bytes_atomic(path: Path | str, body: Callable[[IO[bytes]], None]) -> Path:
    """``body(handle)`` writes the content into a binary handle."""
    return atomic_write(path, _with_handle("wb", body))


def json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, tensors and numpy values become numbers or lists."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # torch / numpy tensors and scalars
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: Path | str, payload: Mapping[str, Any]) -> Path:
    """``payload`` as indented JSON (NaN/inf as null), atomically. A value JSON cannot hold raises
    ``TypeError`` before anything is renamed, so the old file survives."""
    text = json.dumps(json_safe(payload), indent=2, sort_keys=False) + "\n"
    return write_text_atomic(path, text)
