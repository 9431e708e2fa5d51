"""``multitask``: the default algorithm — one forward, penalties, the weighting's backward, one step."""

from __future__ import annotations

from collections.abc import Mapping

from molabench.algorithms import ALGORITHMS
from molabench.architectures.base import Architecture
from molabench.engine.algorithm import MultiTaskAlgorithm
from molabench.penalties.base import Penalty
from molabench.weighting.base import Weighting


@ALGORITHMS.register("multitask")
def multitask(arch: Architecture, weighting: Weighting, penalties: Mapping[str, Penalty], bn_stats: str = "batch") -> MultiTaskAlgorithm:
    return MultiTaskAlgorithm(arch, weighting, penalties, bn_stats)
