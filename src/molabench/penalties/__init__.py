"""Extra loss terms by name (TwD, domain-generalisation penalties)."""

from __future__ import annotations

import importlib
import pkgutil

from molabench.penalties.base import Penalty, PenaltyContext
from molabench.registry import Registry

PENALTIES: Registry[Penalty] = Registry("penalty")


def load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["PENALTIES", "Penalty", "PenaltyContext", "load_all"]
