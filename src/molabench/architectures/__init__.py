"""Architectures by name: ``ARCHITECTURES.build(name, tasks=..., setting=..., backbone=...)``.

``backbone`` is a zero-argument factory so that architectures needing several encoders
(Single-Task, Cross-Stitch, MMoE experts) can build as many as they need.
"""

from __future__ import annotations

import importlib
import pkgutil

from molabench.architectures.base import Architecture, Forward, task_groups
from molabench.registry import Registry

ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def load_all() -> None:
    """Import every module of this package so that each registers its architectures."""
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["ARCHITECTURES", "Architecture", "Forward", "load_all", "task_groups"]
