"""The authors' list files: one ``<path> <label>`` line per image.

Paths may contain spaces (OfficeHome's ``Real World``), so a line is split at its *last*
whitespace. Paths are resolved against the dataset root; the authors' own lists carry absolute
paths from their machines, so a path that does not exist as given is also tried by its trailing
components under the root (``Real_World`` also as ``Real World``).
"""

from __future__ import annotations

from pathlib import Path

from molabench.errors import DataError


def read_list_file(list_file: Path, num_classes: int) -> list[tuple[int, str, int]]:
    """``(line number, path text, label)`` of every non-empty line, labels checked against ``num_classes``."""
    try:
        lines = list_file.read_text().splitlines()
    except OSError as e:
        raise DataError(f"cannot read list file {list_file} ({e.strerror}); check data.root") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(maxsplit=1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataError(f"{list_file}:{n}: expected '<path> <label>', got {line!r}")
        label = int(fields[1])
        if not 0 <= label < num_classes:
            raise DataError(f"{list_file}:{n}: label {label} out of range [0, {num_classes})")
        out.append((n, fields[0], label))
    return out


def resolve_listed(root: Path, text: str, list_file: Path, line_no: int, *, search_tails: bool = True) -> Path:
    """The file a list line names; a DataError naming the list file and line when it is missing."""
    p = Path(text)
    candidates = [p] if p.is_absolute() else [root / p]
    if search_tails:
        parts = p.parts
        for k in range(min(len(parts) - 1, 4), 0, -1):  # trailing components, longest first
            tail = Path(*parts[-k:])
            candidates += [root / tail, root / str(tail).replace("Real_World", "Real World")]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"{list_file}:{line_no} names image {text!r}, not found under {root}; fix data.root or the list file")


__all__ = ["read_list_file", "resolve_listed"]
