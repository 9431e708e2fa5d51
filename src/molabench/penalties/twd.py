"""Task-wise Decorrelation (TwD) loss of MoLA-Router (Zhou et al., ICML 2024, Sec. 3.5).

The router logits of each sample are mapped by a trainable map to omega (dim ``omega_dim``,
paper: an MLP, dim 32; authors' code: one Linear(E -> 32) on the pre-softmax logits), then
L2-normalised. With s_ij = omega_i . omega_j / tau and P = {(i, j): i != j, t_i = t_j}:

    L_TwD = - 1/|P| sum_{(i,j) in P} log( exp(s_ij) / sum_{k != i} exp(s_ik) )

i.e. a supervised-contrastive loss pulling same-task mixing weights together and pushing
different tasks apart. Computed with one (N, N) similarity matrix (no loops over pairs). With one
router per adapted stage, each router has its own map and the losses are averaged. The map lives
here (saved with the penalty); the routers live in the architecture only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures.base import Architecture
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.penalties import PENALTIES
from molabench.penalties.base import Penalty, PenaltyContext


def twd_loss(omega: Tensor, task: Tensor, tau: float = 1.0) -> Tensor:
    """TwD on L2-normalised embeddings ``omega`` (N, d) with task ids ``task`` (N,); 0 without positive pairs."""
    n = omega.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=omega.device)
    sim = (omega @ omega.T) / tau
    log_prob = sim - torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    positive = (task[:, None] == task[None, :]) & ~eye
    count = positive.sum()
    # Every sample alone in its task: no positive pair, nothing to pull together.
    return -(log_prob * positive).sum() / count.clamp(min=1)


def omega_map(num_experts: int, omega_dim: int, kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(num_experts, omega_dim), nn.ReLU(inplace=True), nn.Linear(omega_dim, omega_dim))
    if kind == "linear":
        return nn.Linear(num_experts, omega_dim)
    raise ConfigError(f"method.omega_map must be 'mlp' (paper) or 'linear' (authors' code), got {kind!r}")


class TwD(Penalty):
    def __init__(
        self, weight: float, num_experts: int, num_routers: int = 1, omega_dim: int = 32, tau: float = 1.0,
        omega_map_kind: str = "mlp", enabled: bool = True,
    ) -> None:
        # Disabled TwD (method.twd=false) is weight 0 and has no parameters, so the method config needs no branch.
        super().__init__(weight if enabled else 0.0)
        if tau <= 0:
            raise ConfigError(f"method.tau must be > 0, got {tau}")
        self.tau, self.enabled = float(tau), bool(enabled)
        self.maps = nn.ModuleList(
            omega_map(num_experts, int(omega_dim), omega_map_kind) for _ in range(num_routers if enabled else 0)
        )

    def embed(self, logits: Tensor) -> Tensor:
        """Router logits (N, E) or (N, S, E) -> normalised omega (N, S, d)."""
        logits = logits.unsqueeze(1) if logits.dim() == 2 else logits
        return torch.stack([F.normalize(m(logits[:, s]), dim=-1) for s, m in enumerate(self.maps)], dim=1)

    def forward(self, ctx: PenaltyContext) -> Tensor:
        logits = ctx.forward.aux.get("router_logits")
        if logits is None:
            raise ConfigError("penalty twd needs router logits: use it with method=mola_router")
        if not self.enabled:
            return logits.new_zeros(())
        omega = self.embed(logits)
        return torch.stack([twd_loss(omega[:, s], ctx.batch.task, self.tau) for s in range(omega.shape[1])]).mean()


@PENALTIES.register("twd")
def twd(
    arch: Architecture, tasks: Sequence[TaskSpec], weight: float = 0.1, omega_dim: int = 32, tau: float = 1.0,
    omega_map: str = "mlp", enabled: bool = True,
) -> TwD:
    routers = getattr(arch, "routers", None)
    if not isinstance(routers, nn.ModuleList) or len(routers) == 0:
        raise ConfigError("penalty twd needs an architecture with a router: use method=mola_router")
    return TwD(weight, arch.num_experts, len(routers), omega_dim, tau, omega_map, enabled)  # type: ignore[attr-defined]
