"""Small solvers on the probability simplex, shared by MGDA and CAGrad.

Problems are T x T (T = number of tasks), so they run in float64 NumPy on the CPU; the big T x P
gradient matrix never leaves torch. Both solvers are exact and finite, not iterative to a
tolerance: a training step spends well under a millisecond in them at T = 9 (a projected-gradient
loop to 1e-10 took 30-60 ms per step, a third of a ResNet-18 step, and rarely reached it).

* :func:`min_norm_weights`: ``argmin_{a in simplex} a^T M a``, Wolfe's (1976) min-norm-point
  algorithm on the Gramian. It keeps a "corral" S of affinely independent points and the convex
  weights on them; each major step adds the point most opposed to the current minimiser
  ``x = sum_S a_i g_i`` (``argmin_j (M a)_j``); each minor step moves ``a`` toward the minimiser of
  ``|x|`` on the affine hull of S (the KKT system ``M_SS y = mu 1, 1^T y = 1``) and drops the points
  whose weight reaches zero. It stops when no point lies beyond the supporting hyperplane,
  ``(M a)_j >= a^T M a`` for every j: the KKT conditions of the problem.
* :func:`simplex_qp`: ``argmin_{w in simplex} b.w + k w^T A w`` for ``b = A u`` (the form of
  CAGrad's sub-problem); since ``sum w = 1``, ``b.w = w^T (b 1^T + 1 b^T) w / 2``, so it is the
  min-norm point for the Gramian ``A + (b 1^T + 1 b^T)/(2k) + u^T A u/(4k^2)`` (the points
  ``g_i + g_0/(2k)``; the constant makes it a Gramian and moves no minimiser).
"""

from __future__ import annotations

import numpy as np


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{x >= 0, sum x = 1}`` (Duchi et al., 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def _affine_minimiser(M: np.ndarray, S: list[int]) -> np.ndarray:
    """Weights ``y`` (sum 1) of the min-norm point of the affine hull of the points ``S``."""
    k = len(S)
    K = np.zeros((k + 1, k + 1))
    K[:k, :k] = M[np.ix_(S, S)]
    K[:k, k] = -1.0
    K[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    return np.linalg.lstsq(K, rhs, rcond=None)[0][:k]


def min_norm_weights(M: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """``argmin_{a in simplex} a^T M a``: the min-norm point of the convex hull of the rows of
    ``G`` given the Gramian ``M = G G^T`` (the MGDA sub-problem of Sener & Koltun, 2018), by Wolfe's
    algorithm (see the module docstring). ``tol`` is relative to the largest squared norm."""
    T = M.shape[0]
    scale = float(np.abs(M).max()) if T else 0.0
    if T == 1 or scale == 0.0:
        return np.full(T, 1.0 / T)
    A = np.asarray(M, dtype=np.float64) / scale
    eps = tol * float(np.diag(A).max())
    first = int(np.argmin(np.diag(A)))
    S, a = [first], np.zeros(T)
    a[first] = 1.0
    for _ in range(50 * T):  # Wolfe's algorithm is finite; the cap only guards against round-off cycling
        Ma = A @ a
        j = int(np.argmin(Ma))
        if Ma[j] >= a @ Ma - eps or j in S:
            break
        S.append(j)
        while True:  # minor cycle
            y = _affine_minimiser(A, S)
            weights = a[S]
            if (y > 1e-15).all():
                a[:] = 0.0
                a[S] = y
                break
            # Move from a toward y until the first weight reaches zero, and drop it.
            shrinking = y <= 1e-15
            theta = float(np.min(weights[shrinking] / (weights[shrinking] - y[shrinking])))
            new = weights + theta * (y - weights)
            keep = new > 1e-15
            if not keep.any():  # round-off: keep the largest
                keep[int(np.argmax(new))] = True
            a[:] = 0.0
            S = [i for i, kept in zip(S, keep, strict=True) if kept]
            a[S] = new[keep]
            a /= a.sum()
    a = np.maximum(a, 0.0)
    return a / a.sum()


def simplex_qp(A: np.ndarray, u: np.ndarray, k: float) -> np.ndarray:
    """``argmin_{w in simplex} (A u).w + k w^T A w`` for ``k > 0`` (exact, via :func:`min_norm_weights`)."""
    b = A @ u
    P = A + (b[:, None] + b[None, :]) / (2.0 * k) + float(u @ b) / (4.0 * k * k)
    return min_norm_weights(P)


__all__ = ["min_norm_weights", "project_simplex", "simplex_qp"]
