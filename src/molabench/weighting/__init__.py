"""Loss-weighting and gradient-combination methods by name.

``build(name, **hparams)`` returns a :class:`~molabench.weighting.base.Weighting`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from molabench.registry import Registry
from molabench.weighting.base import LossWeighting, StepContext, Weighting

WEIGHTINGS: Registry[Weighting] = Registry("weighting")


def load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def build(name: str, **hparams: Any) -> Weighting:
    load_all()
    return WEIGHTINGS.build(name, **hparams)


__all__ = ["WEIGHTINGS", "LossWeighting", "StepContext", "Weighting", "build", "load_all"]
