"""GradVac: gradient vaccine (Wang et al., "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021), Algorithm 2.

Keeps an EMA target similarity ``phihat_ij`` (init 0) for every task pair. For each task i and
the other tasks j in random order, with ``phi_ij = cos(g_i^GV, g_j)``::

    if phi_ij < phihat_ij:
        g_i^GV += |g_i^GV| (phihat_ij sqrt(1 - phi_ij^2) - phi_ij sqrt(1 - phihat_ij^2))
                  / (|g_j| sqrt(1 - phihat_ij^2)) * g_j
    phihat_ij <- (1 - beta) phihat_ij + beta phi_ij

and ``d = sum_i g_i^GV``. beta = 0.01 (paper). Whole-model granularity (LibMTL's default; the
paper also studies per-layer groups). As in PCGrad, the ``g_i^GV`` are tracked as coefficients
over the original gradients, so only the Gramian is needed. Stateful: ``phihat`` is a buffer
(saved in checkpoints) indexed by global task id, so absent tasks keep their targets.

Not torchjd's ``GradVacWeighting``: it keys ``phihat`` by a task's *position* in the Gramian,
so in a mixed batch where a task is absent, the targets of the remaining tasks shift onto the
wrong pairs; and its default beta is 0.5 rather than the paper's 0.01.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register


@register("gradvac")
class GradVac(GramianWeighting):
    def __init__(self, beta: float = 0.01, num_tasks: int | None = None, grad_mode: str = "auto") -> None:
        super().__init__(grad_mode)
        self.beta = float(beta)
        n = num_tasks or 0
        self.register_buffer("target_similarity", torch.zeros(n, n, dtype=torch.float64))

    def _targets(self, size: int) -> Tensor:
        old = self.target_similarity
        if old.shape[0] < size:  # grow lazily when built without num_tasks
            new = torch.zeros(size, size, dtype=torch.float64)
            new[: old.shape[0], : old.shape[0]] = old
            self.target_similarity = new
        return self.target_similarity

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        T = M.shape[0]
        phihat = self._targets(int(tasks.max()) + 1)
        norms = M.diagonal().clamp_min(0).sqrt()
        C = torch.eye(T, dtype=M.dtype)
        for i in range(T):
            for j in torch.randperm(T).tolist():
                if j == i or norms[j] == 0:
                    continue
                ni = (C[i] @ M @ C[i]).clamp_min(0).sqrt()
                if ni == 0:
                    continue
                a, b = int(tasks[i]), int(tasks[j])
                phi = (C[i] @ M[:, j]) / (ni * norms[j])
                target = phihat[a, b]
                if phi < target:
                    C[i, j] += ni * (target * (1 - phi**2).clamp_min(0).sqrt() - phi * (1 - target**2).sqrt()) / (
                        norms[j] * (1 - target**2).sqrt()
                    )
                phihat[a, b] = (1 - self.beta) * target + self.beta * phi
        return C.sum(0)
