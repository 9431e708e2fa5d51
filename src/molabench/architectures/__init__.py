"""Architectures by name: ``ARCHITECTURES.build(name, tasks=..., setting=..., backbone=...)``.

``backbone`` is a zero-argument factory so that architectures needing several encoders
(Single-Task, Cross-Stitch, MMoE experts) can build as many as they need.
"""

from __future__ import annotations

from molabench.architectures.base import Architecture, Forward, task_groups
from molabench.registry import Registry

ARCHITECTURES: Registry[Architecture] = Registry("architecture", package=__name__)


def load_all() -> None:
    """Import every module of this package so that each registers itself."""
    ARCHITECTURES.populate()


__all__ = ["ARCHITECTURES", "Architecture", "Forward", "load_all", "task_groups"]
