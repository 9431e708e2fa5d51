"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

The Nash bargaining solution ``d = G^T alpha`` with ``alpha > 0`` solving::

    (G G^T alpha)_i = 1 / alpha_i      for every task i

then ``d`` is clipped to norm ``max_norm`` (1.0; the official code clips the shared gradient).
The weights are recomputed every ``update_weights_every`` steps (1) and reused in between.

The condition is the stationarity of the strictly convex ``f(alpha) = 1/2 alpha^T M alpha
- sum_i log alpha_i`` (M = G G^T), so instead of the official sequence of cvxpy convex
programs we run damped Newton on f (``optim_niter`` = 20 iterations at most, warm-started from
the previous alpha like the official code; on a normalised M, rescaled back). If it does not
converge (f is unbounded when some task gradient is a non-negative combination of the others'
negatives), the previous alpha is kept, as the official code does on solver failure.
torchjd's ``NashMTL`` needs cvxpy/ecos, absent here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register


def nash_weights(M: Tensor, start: Tensor, max_iter: int, tol: float = 1e-10) -> tuple[Tensor, bool]:
    """Solve ``M alpha = 1/alpha`` (float64); returns alpha and whether it converged."""
    scale = torch.linalg.matrix_norm(M)
    if scale <= 0:
        return start, False
    A = M / scale
    a = (start * scale.sqrt()).clamp_min(1e-8)  # alpha for A is sqrt(scale) times alpha for M

    def f(x: Tensor) -> Tensor:
        return 0.5 * x @ A @ x - torch.log(x).sum()

    for _ in range(max_iter):
        g = A @ a - 1 / a
        H = A + torch.diag(1 / a**2)
        step = torch.linalg.solve(H, g)
        decrement = g @ step
        if decrement / 2 < tol:
            break
        t, fa = 1.0, f(a)
        while (a - t * step).min() <= 0 or f(a - t * step) > fa - 0.25 * t * decrement:
            t *= 0.5
            if t < 1e-12:
                return start, False
        a = a - t * step
    residual = (a * (A @ a) - 1).abs().max()
    return a / scale.sqrt(), bool(residual < 1e-4)


@register("nash_mtl")
class NashMTL(GramianWeighting):
    state_attributes = ("calls",)  # steps seen: when the weights are next recomputed (checkpointed)

    def __init__(
        self,
        update_weights_every: int = 1,
        optim_niter: int = 20,
        max_norm: float = 1.0,
        num_tasks: int | None = None,
        grad_mode: str = "auto",
    ) -> None:
        super().__init__(grad_mode)
        self.update_weights_every, self.optim_niter, self.max_norm = int(update_weights_every), int(optim_niter), float(max_norm)
        self.register_buffer("alpha", torch.ones(num_tasks or 0, dtype=torch.float64))
        self.calls = 0

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        size = int(tasks.max()) + 1
        if self.alpha.numel() < size:
            self.alpha = torch.cat([self.alpha, torch.ones(size - self.alpha.numel(), dtype=torch.float64)])
        if self.calls % self.update_weights_every == 0:
            alpha, ok = nash_weights(M.cpu(), self.alpha[tasks], self.optim_niter)
            if ok:
                self.alpha[tasks] = alpha
        self.calls += 1
        return self.alpha[tasks].clone()

    def aggregate(self, G: Tensor, tasks: Tensor | None = None, losses: Tensor | None = None) -> Tensor:
        d = super().aggregate(G, tasks, losses)
        norm = d.norm()
        if self.max_norm > 0 and norm > self.max_norm:
            d = d * (self.max_norm / (norm + 1e-6))
        return d
