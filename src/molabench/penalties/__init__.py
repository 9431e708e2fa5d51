"""Extra loss terms by name (TwD, domain-generalisation penalties)."""

from __future__ import annotations

from molabench.penalties.base import Penalty, PenaltyContext
from molabench.registry import Registry

PENALTIES: Registry[Penalty] = Registry("penalty", package=__name__)


def load_all() -> None:
    """Import every module of this package so that each registers itself."""
    PENALTIES.populate()


__all__ = ["PENALTIES", "Penalty", "PenaltyContext", "load_all"]
