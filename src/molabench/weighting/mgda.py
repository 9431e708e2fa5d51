"""MGDA and MGDA-UB (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018; Desideri, 2012).

The common descent direction is the min-norm point of the convex hull of the task gradients::

    alpha = argmin_{alpha in simplex} | sum_t alpha_t g_t / n_t |^2,    d = sum_t alpha_t g_t

where ``n_t`` is the gradient normaliser of the official code (``normalization``):
``none`` (1), ``l2`` (|g_t|), ``loss`` (L_t), ``loss+`` (L_t |g_t|). As in the official code,
alpha is found on the normalised gradients and applied to the *unnormalised* ones (it becomes
the weight of loss t). Default ``none``: the paper's formulation, and LibMTL's default (the
official sample config uses ``loss+``; set it to compare).

MGDA-UB ("upper bound") solves the same problem on gradients w.r.t. the shared representation
``z`` and back-propagates ``sum_t alpha_t dL_t/dz`` through the encoder, which equals the paper's
``backward(sum_t alpha_t L_t)`` for the shared parameters.

Not torchjd's ``MGDA``: its Frank-Wolfe loop stops at a loose tolerance (1e-3) and has no
gradient normalisation; we solve the QP to machine precision (``simplex.min_norm_weights``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.errors import ConfigError
from molabench.weighting.gradient import GramianWeighting, unit_rows
from molabench.weighting.registration import register
from molabench.weighting.simplex import min_norm_weights

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register("mgda")
class MGDA(GramianWeighting):
    def __init__(self, normalization: str = "none", grad_mode: str = "auto") -> None:
        super().__init__(grad_mode)
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"mgda normalization {normalization!r} is not one of {', '.join(NORMALIZATIONS)}")
        self.normalization = normalization

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        n = torch.ones(M.shape[0], dtype=M.dtype)
        if self.normalization in ("loss", "loss+"):
            if losses is None:
                raise ConfigError(f"mgda normalization={self.normalization} needs the task losses")
            n = losses.detach().cpu().to(M.dtype).clamp_min(1e-12)
        if self.normalization in ("l2", "loss+"):
            n = n * unit_rows(M).cpu()
        Mn = M.cpu() / torch.outer(n, n)
        return torch.from_numpy(min_norm_weights(Mn.numpy()))


@register("mgda_ub")
class MGDAUB(MGDA):
    level = "representation"
