"""RLW: random loss weighting (Lin et al., "Reasonable Effectiveness of Random Weighting: A
Litmus Test for Multi-Task Learning", TMLR 2022).

Every step draws fresh weights on the simplex of present tasks and minimises ``sum_t w_t L_t``:

- ``normal`` (default, as LibMTL): ``w = softmax(z)``, ``z ~ N(0, I)``;
- ``dirichlet``: ``w ~ Dir(alpha 1)``;
- ``uniform``: ``w = u / sum u``, ``u ~ U(0, 1)``.

Randomness comes from torch's global generator, so runs are reproducible for a fixed seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.errors import ConfigError
from molabench.weighting.base import LossWeighting
from molabench.weighting.registration import register

DISTRIBUTIONS = ("normal", "dirichlet", "uniform")


@register("rlw")
class RandomLossWeighting(LossWeighting):
    def __init__(self, distribution: str = "normal", alpha: float = 1.0) -> None:
        super().__init__()
        if distribution not in DISTRIBUTIONS:
            raise ConfigError(f"rlw distribution {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
        self.distribution, self.alpha = distribution, float(alpha)

    def weights(self, losses: Tensor, present: Tensor) -> Tensor:
        n = int(present.sum())
        if self.distribution == "normal":
            w = torch.softmax(torch.randn(n, dtype=torch.float64), 0)
        elif self.distribution == "dirichlet":
            w = torch.distributions.Dirichlet(torch.full((n,), self.alpha, dtype=torch.float64)).sample()
        else:
            u = torch.rand(n, dtype=torch.float64)
            w = u / u.sum()
        out = torch.zeros(losses.shape[0], dtype=losses.dtype, device=losses.device)
        out[present.bool()] = w.to(out)
        return out
