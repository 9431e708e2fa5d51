"""PCGrad: projecting conflicting gradients (Yu et al., "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020), Algorithm 1.

For each task i, for the other tasks j in a random order::

    if g_i^PC . g_j < 0:   g_i^PC <- g_i^PC - (g_i^PC . g_j) / |g_j|^2 g_j

and ``d = sum_i g_i^PC``. Every ``g_i^PC`` stays a combination of the original gradients, so
we track the T x T coefficient matrix and need only the Gramian (identical result, T x T
algebra instead of T^2 P-dimensional dot products). The paper projects onto the *other* tasks
only (LibMTL's loop also visits j = i). Random order from torch's global RNG.

The weights come from torchjd's ``PCGradWeighting`` (pinned in pyproject.toml): it is this
algorithm on the Gramian, one ``randperm(T)`` per task, exactly as above.
"""

from __future__ import annotations

from torch import Tensor

from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register


@register("pcgrad")
class PCGrad(GramianWeighting):
    def __init__(self, grad_mode: str = "auto") -> None:
        super().__init__(grad_mode)
        from torchjd.aggregation import PCGradWeighting  # imported on use: torchjd takes seconds to load

        self._weighting = PCGradWeighting()

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        return self._weighting(M)
