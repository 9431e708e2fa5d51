"""PCGrad: projecting conflicting gradients (Yu et al., "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020), Algorithm 1.

For each task i, for the other tasks j in a random order::

    if g_i^PC . g_j < 0:   g_i^PC <- g_i^PC - (g_i^PC . g_j) / |g_j|^2 g_j

and ``d = sum_i g_i^PC``. Every ``g_i^PC`` stays a combination of the original gradients, so
we track the T x T coefficient matrix and need only the Gramian (identical result, T x T
algebra instead of T^2 P-dimensional dot products). The paper (and this code) projects onto
the *other* tasks only; LibMTL's loop also visits j = i. Random order from torch's global RNG.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register


@register("pcgrad")
class PCGrad(GramianWeighting):
    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        T = M.shape[0]
        C = torch.eye(T, dtype=M.dtype)
        for i in range(T):
            for j in torch.randperm(T).tolist():
                if j == i or M[j, j] <= 0:
                    continue
                dot = C[i] @ M[:, j]
                if dot < 0:
                    C[i, j] -= dot / M[j, j]
        return C.sum(0)
