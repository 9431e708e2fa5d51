"""Aligned-MTL and Aligned-MTL-UB (Senushkin et al., "Independent Component Alignment for
Multi-Task Learning", CVPR 2023), Algorithm 1 and the official ``ProcrustesSolver``.

With the Gramian ``M = G G^T = V Lambda V^T`` restricted to its rank R (eigenvalues above
``max(lambda) T eps``)::

    B = sqrt(lambda_min) V Lambda^{-1/2} V^T,    Ghat = B G,    d = sum_t Ghat_t = (B 1)^T G

``Ghat`` has orthogonal rows of equal norm ``sqrt(lambda_min)`` (condition number 1): the
stable, aligned version of G closest to it (a Procrustes problem). ``scale_mode`` picks the
common singular value: ``min`` (paper, default), ``median`` or ``rmse`` (mean eigenvalue). The
official code sums the aligned gradients (preference vector of ones), as here.
Aligned-MTL-UB applies it to the gradients w.r.t. the shared representation.

torchjd's ``AlignedMTL`` matches this up to its default preference vector (1/T: a T times smaller
step), so we keep our own 10 lines rather than a dependency for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.errors import ConfigError
from molabench.weighting.gradient import GramianWeighting
from molabench.weighting.registration import register

SCALE_MODES = ("min", "median", "rmse")


def balance_transform(M: Tensor, scale_mode: str = "min") -> Tensor:
    """The T x T matrix ``B`` with ``B G`` the aligned gradients."""
    lam, V = torch.linalg.eigh(M)
    tol = lam.max() * M.shape[0] * torch.finfo(M.dtype).eps
    keep = lam > tol
    if not keep.any():
        return torch.eye(M.shape[0], dtype=M.dtype)
    lam, V = lam[keep], V[:, keep]
    scale = {"min": lam.min(), "median": lam.median(), "rmse": lam.mean()}[scale_mode]
    return scale.sqrt() * (V / lam.sqrt()) @ V.T


@register("aligned_mtl")
class AlignedMTL(GramianWeighting):
    def __init__(self, scale_mode: str = "min", grad_mode: str = "auto") -> None:
        super().__init__(grad_mode)
        if scale_mode not in SCALE_MODES:
            raise ConfigError(f"aligned_mtl scale_mode {scale_mode!r} is not one of {', '.join(SCALE_MODES)}")
        self.scale_mode = scale_mode

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        return balance_transform(M.cpu(), self.scale_mode).sum(1)


@register("aligned_mtl_ub")
class AlignedMTLUB(AlignedMTL):
    level = "representation"
