"""EQRM: Empirical Quantile Risk Minimisation (Eastwood et al., "Probable Domain Generalization via
Quantile Risk Minimization", NeurIPS 2022; DomainBed's port).

The D per-domain risks R_d (here: the present tasks' losses, one task per domain) are treated as
samples of a risk distribution; the objective is its α-quantile under a Gaussian kernel density
estimate:

    h    = 1.06 · std(R) · D^(-1/5)                       (Silverman's rule, unbiased std)
    F(r) = (1/D) Σ_d Φ((r − R_d) / h)
    L    = Q_α = F⁻¹(α), by 32 bisection steps on [R_min + h·Φ⁻¹(α), R_max + h·Φ⁻¹(α)]

returning the final interval's midpoint. The bisection's choices are constants, so Q_α is a convex
combination of the two start points: R_min and R_max get direct gradient, the other risks only through
h (DomainBed's behaviour, kept). α → 1 approaches the worst domain, α = 0.5 the median.

Burn-in: updates 0 … burnin−1 (0-based) minimise the ERM mean (1/D) Σ_d R_d. ``burnin`` is a number of
updates (DomainBed: 2,500) or, when below 1, a fraction of the run's updates (round(fraction · total)).
Just before update ``burnin`` the optimiser is re-created with learning rate ``lr`` (DomainBed's
``eqrm_lr`` = 1e-6; other optimiser settings kept) through :meth:`Weighting.optimizer_reset`.

Edges (counted in the record): with fewer than two present domains, or all risks equal (h = 0, where
DomainBed fails), that step's loss is the ERM mean. EQRM replaces the sum of task losses, so it keeps the
reference's (mean) scale; penalties (``extra_loss``) are added once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from molabench.errors import ConfigError
from molabench.weighting.base import StepContext, Weighting
from molabench.weighting.registration import register

_NORMAL = torch.distributions.Normal(0.0, 1.0)


def kde_bandwidth(risks: Tensor) -> Tensor:
    """Silverman's bandwidth 1.06 · std(R) · n^(-1/5) (unbiased std)."""
    return 1.06 * risks.std(unbiased=True) * risks.numel() ** (-0.2)


def kde_cdf(r: Tensor, risks: Tensor, bandwidth: Tensor) -> Tensor:
    """F(r) = mean_d Φ((r − R_d) / h)."""
    return torch.special.ndtr((r - risks) / bandwidth).mean()


def kde_quantile(risks: Tensor, alpha: float, steps: int = 32) -> Tensor:
    """The α-quantile of the Gaussian KDE of ``risks`` (1-D, n ≥ 2, not all equal) by bisection."""
    h = kde_bandwidth(risks)
    shift = h * float(_NORMAL.icdf(torch.tensor(alpha)))
    low, high = risks.min() + shift, risks.max() + shift
    for _ in range(steps):
        mid = (low + high) / 2
        if float(kde_cdf(mid.detach(), risks.detach(), h.detach())) < alpha:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@register("eqrm")
class EQRM(Weighting):
    state_attributes = ("fallback_steps", "quantile_steps")

    def __init__(self, quantile: float = 0.75, burnin: float = 2500, lr: float = 1e-6) -> None:
        super().__init__()
        if not 0.0 < float(quantile) < 1.0:
            raise ConfigError(f"weighting eqrm: quantile must be in (0, 1), got {quantile!r}")
        if float(burnin) < 0:
            raise ConfigError(f"weighting eqrm: burnin must be >= 0 (updates, or a fraction of the run below 1), got {burnin!r}")
        if float(lr) <= 0:
            raise ConfigError(f"weighting eqrm: lr must be positive, got {lr!r}")
        self.alpha, self.burnin, self.lr = float(quantile), float(burnin), float(lr)
        self.fallback_steps = 0
        self.quantile_steps = 0

    def burnin_steps(self, total_steps: int) -> int:
        """Updates of ERM before the quantile objective (a fraction below 1 is of ``total_steps``)."""
        return round(self.burnin * total_steps) if 0 < self.burnin < 1 else int(self.burnin)

    def optimizer_reset(self, step: int, total_steps: int) -> Mapping[str, Any] | None:
        burnin = self.burnin_steps(total_steps)
        return {"lr": self.lr} if burnin > 0 and step == burnin else None

    def objective(self, losses: Tensor, present: Tensor, step: int, total_steps: int) -> tuple[Tensor, str]:
        """The step's loss and which objective it is (``erm``, ``quantile`` or ``fallback``)."""
        risks = losses[present]
        erm = risks.mean()
        if step < self.burnin_steps(total_steps):
            return erm, "erm"
        if risks.numel() < 2 or not bool((risks.detach() != risks.detach()[0]).any()):
            return erm, "fallback"
        return kde_quantile(risks, self.alpha), "quantile"

    def backward(self, ctx: StepContext) -> dict[str, float]:
        loss, kind = self.objective(ctx.losses, ctx.present.bool(), ctx.step, ctx.total_steps)
        if kind == "fallback":
            self.fallback_steps += 1
        elif kind == "quantile":
            self.quantile_steps += 1
        total = loss + ctx.extra_loss if ctx.extra_loss is not None else loss
        total.backward()
        return {"eqrm_quantile_phase": float(kind != "erm"), "eqrm_objective": float(loss.detach())}

    def describe(self) -> dict[str, Any]:
        return {"eqrm": {"quantile_steps": self.quantile_steps, "fallback_steps": self.fallback_steps, "burnin": self.burnin, "lr": self.lr}}


__all__ = ["EQRM", "kde_bandwidth", "kde_cdf", "kde_quantile"]
