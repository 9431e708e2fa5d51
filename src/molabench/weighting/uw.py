"""UW: uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to
Weigh Losses for Scene Geometry and Semantics", CVPR 2018).

With learnable ``s_t = log sigma_t^2`` (one per task, trained by the model's optimiser)::

    L = sum_t  exp(-s_t) / 2 * L_t  +  s_t / 2

the homoscedastic-uncertainty objective in the log-variance parametrisation of the paper's
implementation (and LibMTL's). ``init_log_var`` is 0 (sigma = 1); only present tasks' terms
enter, so absent tasks' ``s_t`` receive no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molabench.weighting.base import LossWeighting, StepContext
from molabench.weighting.registration import register, require_num_tasks


@register("uw")
class UncertaintyWeighting(LossWeighting):
    def __init__(self, num_tasks: int | None = None, init_log_var: float = 0.0) -> None:
        super().__init__()
        self.log_var = nn.Parameter(torch.full((require_num_tasks("uw", num_tasks),), float(init_log_var)))

    def weights(self, losses: Tensor, present: Tensor) -> Tensor:
        return torch.exp(-self.log_var) / 2 * present.to(losses.dtype)

    def backward(self, ctx: StepContext) -> dict[str, float]:
        w = self.weights(ctx.losses, ctx.present)
        total = (w * ctx.losses).sum() + (self.log_var * ctx.present.to(self.log_var.dtype)).sum() / 2
        if ctx.extra_loss is not None:
            total = total + ctx.extra_loss
        total.backward()
        return {f"w{t}": float(v) for t, v in enumerate(w.detach())}
