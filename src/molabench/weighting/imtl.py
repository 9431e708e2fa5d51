"""IMTL: impartial multi-task learning (Liu et al., "Towards Impartial Multi-task Learning",
ICLR 2021), the hybrid IMTL = IMTL-L + IMTL-G of the paper.

IMTL-G finds the combination ``d = sum_t alpha_t g_t`` (``sum alpha = 1``) whose projections
onto every unit gradient ``u_t = g_t/|g_t|`` are equal. With ``D`` the rows ``g_1 - g_t`` and
``U`` the rows ``u_1 - u_t`` (t = 2..T)::

    alpha_{2:T} = g_1 U^T (D U^T)^{-1},     alpha_1 = 1 - sum_{t>=2} alpha_t

computed from the Gramian (``g_a . u_b = M_ab / |g_b|``). IMTL-L (``loss_scaling: true``)
first replaces each loss by ``e^{s_t} L_t - s_t`` with learnable ``s_t`` (init 0, trained by the
model's optimiser). ``loss_scaling: false`` gives IMTL-G alone.

The IMTL-G weights come from torchjd's ``IMTLGWeighting`` (pinned in pyproject.toml):
``alpha = M^+ n / (1^T M^+ n)`` with ``n_t = |g_t|``, the same point as the closed form above when
the gradients are linearly independent, and still defined (via the pseudo-inverse) when they are not.

The common projection is ``d . u_t = 1 / (1^T M^+ n)``, whose sign is that of ``1^T M^+ n``: it can be
negative (e.g. one gradient ten times longer than two others that point against it), and then ``d``
conflicts with *every* task. That is IMTL-G as its paper, LibMTL and torchjd define it; molabench
keeps it (``tests/test_weighting_aggregators.py`` pins such a case) and leaves IMTL out of the family's
non-conflict property.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register, require_num_tasks


@register("imtl")
class IMTL(GramianWeighting):
    def __init__(self, num_tasks: int | None = None, loss_scaling: bool = True, grad_mode: str = "auto") -> None:
        super().__init__(grad_mode)
        from torchjd.aggregation import IMTLGWeighting  # imported on use: torchjd takes seconds to load

        self._imtl_g = IMTLGWeighting()
        self.log_scale = nn.Parameter(torch.zeros(require_num_tasks("imtl", num_tasks))) if loss_scaling else None

    def scale_losses(self, losses: Tensor, tasks: Tensor) -> Tensor:
        if self.log_scale is None:
            return losses
        s = self.log_scale[tasks.to(self.log_scale.device)].to(losses)
        return torch.exp(s) * losses - s

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        return self._imtl_g(M.cpu())
