"""User-facing errors.

Anything raised as a :class:`MolabenchError` is reported by the command-line entry points as
one line (``error: <message>``) with a non-zero exit and no traceback. The message must say
what is wrong *and* how to fix it.
"""

from __future__ import annotations


class MolabenchError(Exception):
    """Base class of errors caused by the user's input rather than by a bug."""


class ConfigError(MolabenchError):
    """An impossible or inconsistent configuration."""


class DataError(MolabenchError):
    """Missing or malformed data on disk."""


class TrainingError(MolabenchError):
    """Training diverged (NaN/inf loss) or otherwise cannot continue."""
