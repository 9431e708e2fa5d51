"""CAGrad: conflict-averse gradient descent (Liu et al., "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021), official implementation's conventions.

With ``g0 = mean_t g_t`` and ``phi = c^2 |g0|^2`` the update maximises the worst task's
improvement within a ball around g0: ``max_d min_i g_i.d  s.t. |d - g0| <= c|g0|``. Its dual
over the simplex::

    w* = argmin_{w in simplex}  g_w . g0 + c |g0| |g_w|,      g_w = sum_t w_t g_t
    d  = g0 + (c |g0| / |g_w*|) g_w*

then ``rescale`` divides d by 1 (0), ``1 + c^2`` (1, default) or ``1 + c`` (2). c = 0.5.

Not torchjd's ``CAGrad``: it normalises the Gramian before solving, has no ``rescale``
and needs cvxpy. We solve the same dual on T x T data (:func:`cagrad_dual`): the term
``c|g0||g_w| = min_{s>0} c|g0| (|g_w|^2/s + s)/2`` makes it, for a fixed ``k = c|g0|/(2|g_w|)``, the
quadratic programme ``min_w g_w.g0 + k|g_w|^2`` on the simplex, which ``simplex.simplex_qp``
solves exactly (Wolfe's min-norm point); the optimal w is the QP's solution at the k where
``2k|g_w(k)| = c|g0|``, found by a bracketed secant search on ``log k`` (a handful of QPs).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from molabench.errors import ConfigError
from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register
from molabench.weighting.simplex import simplex_qp


def cagrad_dual(M: np.ndarray, c: float, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """Solution ``w*`` of the CAGrad dual for Gramian ``M`` and ``lambda = c|g0| / |g_w*|``.

    ``h(log k) = log(2k|g_w(k)|/(c|g0|))`` is zero at the optimum, with ``g_w(k)`` the solution of
    ``min_w g_w.g0 + k|g_w|^2``; the search starts from w = uniform and keeps a bracket
    [h < 0, h > 0] once it has one (secant steps inside it, bisection otherwise).
    """
    T = M.shape[0]
    scale = float(np.abs(M).max())
    u = np.full(T, 1.0 / T)
    if scale == 0.0 or T == 1:
        return u, 0.0
    A = M / scale  # the argmin and lambda are invariant to scaling M
    g0_sq = max(float(u @ A @ u), 0.0)
    radius = c * np.sqrt(g0_sq) + 1e-8
    if c == 0.0 or g0_sq == 0.0:
        return u, radius / (np.sqrt(g0_sq) + 1e-8)

    def h(log_k: float) -> tuple[np.ndarray, float]:
        w = simplex_qp(A, u, float(np.exp(log_k)))
        q = float(w @ A @ w)
        return w, (-np.inf if q <= 1e-30 else log_k + 0.5 * np.log(q) + np.log(2.0 / radius))

    x_prev = float(np.log(radius / (2.0 * np.sqrt(g0_sq))))  # the k that w = uniform would give
    w, h_prev = h(x_prev)
    x = x_prev - h_prev if np.isfinite(h_prev) else x_prev + 1.0
    below: float | None = None  # log k with h < 0
    above: float | None = None  # log k with h > 0
    for _ in range(max_iter):
        w, hx = h(x)
        if np.isfinite(hx) and abs(hx) < 1e-12:
            break
        if hx < 0:
            below = x
        else:
            above = x
        step = x - hx * (x - x_prev) / (hx - h_prev) if np.isfinite(hx) and np.isfinite(h_prev) and hx != h_prev else None
        x_prev, h_prev = x, hx
        if below is not None and above is not None:
            lo, hi = min(below, above), max(below, above)
            if hi - lo < 1e-14:
                break
            x = step if step is not None and lo < step < hi else 0.5 * (lo + hi)
        elif above is None:  # h < 0 so far: k must grow
            x = step if step is not None and step > x else x + 1.0
        else:  # h > 0 so far: k must shrink
            x = step if step is not None and step < x else x - 1.0
    return w, radius / (np.sqrt(max(float(w @ A @ w), 0.0)) + 1e-8)


@register("cagrad")
class CAGrad(GramianWeighting):
    def __init__(self, c: float = 0.5, rescale: int = 1, grad_mode: str = "auto") -> None:
        super().__init__(grad_mode)
        if c < 0 or rescale not in (0, 1, 2):
            raise ConfigError(f"cagrad needs c >= 0 and rescale in 0, 1, 2 (got c={c}, rescale={rescale})")
        self.c, self.rescale = float(c), int(rescale)

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        T = M.shape[0]
        w, lam = cagrad_dual(M.cpu().numpy(), self.c)
        weights = np.full(T, 1.0 / T) + lam * w
        weights /= (1.0, 1.0 + self.c**2, 1.0 + self.c)[self.rescale]
        return torch.from_numpy(weights)
