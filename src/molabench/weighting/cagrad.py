"""CAGrad: conflict-averse gradient descent (Liu et al., "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021), official implementation's conventions.

With ``g0 = mean_t g_t`` and ``phi = c^2 |g0|^2`` the update maximises the worst task's
improvement within a ball around g0: ``max_d min_i g_i.d  s.t. |d - g0| <= c|g0|``. Its dual
over the simplex::

    w* = argmin_{w in simplex}  g_w . g0 + c |g0| |g_w|,      g_w = sum_t w_t g_t
    d  = g0 + (c |g0| / |g_w*|) g_w*

then ``rescale`` divides d by 1 (0), ``1 + c^2`` (1, default) or ``1 + c`` (2). c = 0.5.

Not torchjd's ``CAGrad``: it normalises the Gramian before solving, has no ``rescale``
and needs cvxpy; we solve the same dual with FISTA on the simplex (``simplex``) on T x T data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from molabench.errors import ConfigError
from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register
from molabench.weighting.simplex import minimize_on_simplex


def cagrad_dual(M: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Solution ``w*`` of the CAGrad dual for Gramian ``M`` and ``lambda = c|g0| / |g_w*|``."""
    T = M.shape[0]
    scale = float(np.abs(M).max())
    if scale == 0.0:
        return np.full(T, 1.0 / T), 0.0
    A = M / scale  # the argmin and lambda are invariant to scaling M
    b = np.full(T, 1.0 / T)
    Ab = A @ b
    radius = c * np.sqrt(max(b @ Ab, 0.0)) + 1e-8

    def f(w: np.ndarray) -> float:
        return float(w @ Ab + radius * np.sqrt(max(w @ A @ w, 0.0) + 1e-8))

    def grad(w: np.ndarray) -> np.ndarray:
        return Ab + radius * (A @ w) / np.sqrt(max(w @ A @ w, 0.0) + 1e-8)

    w = minimize_on_simplex(f, grad, b.copy())
    return w, radius / (np.sqrt(max(w @ A @ w, 0.0)) + 1e-8)


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
