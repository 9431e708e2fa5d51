"""MMD: domain alignment by the maximum mean discrepancy of the representations (DomainBed's ``MMD``,
the base of MMD-AAE; Li et al., CVPR 2018).

For two samples X (n, d) and Y (m, d) and a kernel K, the biased estimator (diagonals included) is

    MMD²(X, Y) = mean_{i,j} K(x_i, x_j) + mean_{i,j} K(y_i, y_j) − 2 mean_{i,j} K(x_i, y_j).

Kernels: ``domainbed`` K(a, b) = Σ_{g ∈ {1e-3, 1e-2, …, 1e3}} exp(−g ‖a − b‖²) (squared distances clamped
at 1e-30); ``mmd_aae`` K(a, b) = mean_{σ ∈ {1, 5, 10}} exp(−‖a − b‖² / (2σ)) (the MMD-AAE reimplementation).

The penalty (DomainBed's MMD) is the mean of MMD²(Z_d, Z_d') over the pairs d < d' of domains present in
the batch (Z_d: the representations of domain d's samples), times D: DomainBed averages the domains'
losses where molabench's EW sums them, so its weight γ (``gamma``, DomainBed's ``mmd_gamma`` = 1) becomes
γ·D here. A domain absent from the batch is dropped from the pairs; one present sample is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from molabench.architectures.base import Architecture
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.penalties import PENALTIES
from molabench.penalties.base import Penalty, PenaltyContext
from molabench.penalties.domains import needs_domains

DOMAINBED_GAMMAS = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
MMD_AAE_SIGMAS = (1.0, 5.0, 10.0)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """‖x_i − y_j‖² (n, m), clamped at 1e-30 (as DomainBed, so that no exp sees a negative rounding)."""
    return ((x * x).sum(1, keepdim=True) + (y * y).sum(1) - 2 * x @ y.T).clamp_min(1e-30)


def domainbed_kernel(x: Tensor, y: Tensor, gammas: Sequence[float] = DOMAINBED_GAMMAS) -> Tensor:
    d = squared_distances(x, y)
    return sum(torch.exp(-g * d) for g in gammas)  # type: ignore[return-value]


def mmd_aae_kernel(x: Tensor, y: Tensor, sigmas: Sequence[float] = MMD_AAE_SIGMAS) -> Tensor:
    d = squared_distances(x, y)
    return sum(torch.exp(-d / (2 * s)) for s in sigmas) / len(sigmas)  # type: ignore[return-value]


KERNELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"domainbed": domainbed_kernel, "mmd_aae": mmd_aae_kernel}


def mmd2(x: Tensor, y: Tensor, kernel: Callable[[Tensor, Tensor], Tensor] = domainbed_kernel) -> Tensor:
    """The biased MMD² estimator of the module docstring."""
    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def pairwise_mmd2(z: Tensor, domain: Tensor, num_domains: int, kernel: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, int]:
    """Σ over pairs d < d' of present domains of MMD²(Z_d, Z_d'), and the number of pairs."""
    parts = [z[domain == d] for d in range(num_domains)]
    parts = [p for p in parts if p.shape[0] > 0]
    total, pairs = z.new_zeros(()), 0
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            total = total + mmd2(parts[i], parts[j], kernel)
            pairs += 1
    return total, pairs


class MMD(Penalty):
    def __init__(self, arch: Architecture, tasks: Sequence[TaskSpec], gamma: float = 1.0, kernel: str = "domainbed", weight: float = 1.0) -> None:
        super().__init__(weight)
        needs_domains("mmd", arch)
        if kernel not in KERNELS:
            raise ConfigError(f"penalty mmd: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.gamma, self.kernel_name, self.num_domains = float(gamma), kernel, len(tasks)

    def forward(self, ctx: PenaltyContext) -> Tensor:
        z = ctx.forward.representation
        assert z is not None
        total, pairs = pairwise_mmd2(z.flatten(1), ctx.batch.task, self.num_domains, KERNELS[self.kernel_name])
        return self.gamma * self.num_domains * total / max(pairs, 1)


@PENALTIES.register("mmd")
def mmd(arch: Architecture, tasks: Sequence[TaskSpec], gamma: float = 1.0, kernel: str = "domainbed", weight: float = 1.0) -> MMD:
    return MMD(arch, tasks, gamma, kernel, weight)
