"""User-facing errors.

Anything raised as a :class:`MolabenchError` is reported by the command-line entry points as
one line (``error: <message>``) with a non-zero exit and no traceback. The message must say
what is wrong *and* how to fix it.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2  # the exit code of a user error (one ``error:`` line)


class MolabenchError(Exception):
    """Base class of errors caused by the user's input rather than by a bug."""


class ConfigError(MolabenchError):
    """An impossible or inconsistent configuration."""


class DataError(MolabenchError):
    """Missing or malformed data on disk."""


class TrainingError(MolabenchError):
    """Training diverged (NaN/inf loss) or otherwise cannot continue."""


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped (a message for a one-line report)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
