"""Loss-weighting and gradient-combination methods by name.

``build(name, **hparams)`` returns a :class:`~molabench.weighting.base.Weighting`.
"""

from __future__ import annotations

from typing import Any

from molabench.registry import Registry
from molabench.weighting.base import LossWeighting, StepContext, Weighting

WEIGHTINGS: Registry[Weighting] = Registry("weighting", package=__name__)


def load_all() -> None:
    """Import every module of this package so that each registers itself."""
    WEIGHTINGS.populate()


def build(name: str, **hparams: Any) -> Weighting:
    return WEIGHTINGS.build(name, **hparams)


__all__ = ["WEIGHTINGS", "LossWeighting", "StepContext", "Weighting", "build", "load_all"]
