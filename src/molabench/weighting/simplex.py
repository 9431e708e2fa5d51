"""Small solvers on the probability simplex, shared by MGDA and CAGrad.

Problems are T x T (T = number of tasks), so they run in float64 NumPy on the CPU; the big T x P
gradient matrix never leaves torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{x >= 0, sum x = 1}`` (Duchi et al., 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def minimize_on_simplex(
    f: Callable[[np.ndarray], float],
    grad: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    max_iter: int = 2000,
    tol: float = 1e-10,
) -> np.ndarray:
    """Accelerated projected gradient (FISTA with backtracking and adaptive restart) for a
    smooth convex ``f`` on the simplex."""
    x = project_simplex(np.asarray(x0, dtype=np.float64))
    y, t, step = x.copy(), 1.0, 1.0
    fx = f(x)
    for _ in range(max_iter):
        gy, fy = grad(y), f(y)
        while True:  # backtracking: the quadratic model at y must upper-bound f
            x_new = project_simplex(y - step * gy)
            diff = x_new - y
            if f(x_new) <= fy + gy @ diff + diff @ diff / (2 * step) + 1e-15 or step < 1e-20:
                break
            step *= 0.5
        f_new = f(x_new)
        if f_new > fx:  # restart momentum when it stops helping (O'Donoghue & Candes, 2015)
            y, t = x.copy(), 1.0
            continue
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x_new + (t - 1) / t_new * (x_new - x)
        x, fx, t = x_new, f_new, t_new
        step *= 1.5  # let the step grow back after backtracking
        # Stationarity: the projected-gradient residual (problems are scaled to O(1) by callers).
        if np.abs(x - project_simplex(x - grad(x))).max() < tol:
            break
    return x


def min_norm_weights(M: np.ndarray, max_iter: int = 2000) -> np.ndarray:
    """``argmin_{a in simplex} a^T M a``: the min-norm point of the convex hull of the rows of
    ``G`` given the Gramian ``M = G G^T`` (the MGDA sub-problem of Sener & Koltun, 2018).

    Solved by projected gradient, then polished exactly on the detected support by the KKT
    system ``M_SS a_S = mu 1, 1^T a_S = 1`` (kept only if it is feasible and optimal).
    """
    T = M.shape[0]
    scale = float(np.abs(M).max())
    if T == 1 or scale == 0.0:
        return np.full(T, 1.0 / T)
    A = M / scale
    a = minimize_on_simplex(lambda x: float(x @ A @ x), lambda x: 2 * A @ x, np.full(T, 1.0 / T), max_iter)
    support = a > 1e-9
    k = int(support.sum())
    K = np.zeros((k + 1, k + 1))
    K[:k, :k] = A[np.ix_(support, support)]
    K[:k, k] = -1.0
    K[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
    polished = np.zeros(T)
    polished[support] = sol[:k]
    value = polished @ A @ polished
    if (polished >= 0).all() and (A @ polished >= value - 1e-12).all() and value <= a @ A @ a + 1e-15:
        return polished
    return a
