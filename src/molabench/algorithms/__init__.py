"""Training algorithms by name (``method.algorithm.name``): how one ``update`` trains one step.

``multitask`` (the default) is :class:`~molabench.engine.algorithm.MultiTaskAlgorithm`: one forward,
the penalties, the weighting's backward, one optimiser step. A method whose step differs — separate
optimisers, alternating updates — registers an algorithm here (one module each, e.g. ``adversarial``
for DANN's DomainBed schedule and MMD-AAE's prior adversary); see ``docs/adding_a_method.md``.

Every builder takes ``arch``, ``weighting``, ``penalties`` and ``bn_stats`` and its own options from
``method.algorithm``; an option it does not declare is a one-line ConfigError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from molabench.registry import Registry

if TYPE_CHECKING:
    from molabench.engine.algorithm import MultiTaskAlgorithm

ALGORITHMS: Registry[MultiTaskAlgorithm] = Registry("algorithm", package=__name__)


def load_all() -> None:
    """Import every module of this package so that each registers itself."""
    ALGORITHMS.populate()


__all__ = ["ALGORITHMS", "load_all"]
