"""SelfReg: self-supervised contrastive regularisation (Kim et al., ICCV 2021; DomainBed's port).

With z the representations, o the logits and p = CDPL(z) (class-discriminative projection: Linear(D→H) +
BN + ReLU + Linear(H→H) + BN + ReLU + Linear(H→D) + BN, H = D if D = 2048 else 2D), the batch is grouped by
class label (domains ignored) and within each class two random permutations π1, π2 pair every sample
with a partner of its class (possibly itself); λ ~ Beta(0.5, 0.5) once per step:

    o_mix = λ o_π1 + (1 − λ) o_π2,          p_mix = λ p_π1 + (1 − λ) p_π2
    L_ind = MSE(o, o_π1) + 0.3 · MSE(z, p_π1)
    L_hdl = MSE(o, o_mix) + 0.3 · MSE(z, p_mix)
    term  = c · (λ L_ind + (1 − λ) L_hdl),    c = min(CE, 1) taken as a constant

(the anchor uses its raw z, partners their projections p; MSE = mean over elements). CE is the mean of the
present domains' losses (DomainBed: the whole batch's CE — equal with balanced domains). The penalty is
D · term: DomainBed adds the term to a batch mean where molabench's EW sums the D domains' losses.

Per-sample logits come from ``Forward.outputs`` scattered back to batch order through ``groups``; with one
head per domain (HPS, MoLA) the logit terms pull the heads to agree. Domain setting only: it needs one label
space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures.base import Architecture, Forward
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.penalties import PENALTIES
from molabench.penalties.base import Penalty, PenaltyContext
from molabench.penalties.domains import needs_domains, representation_dim

FEATURE_WEIGHT = 0.3  # DomainBed's hard-coded weight of the feature terms


def cdpl(dim: int) -> nn.Sequential:
    hidden = dim if dim == 2048 else 2 * dim
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, dim), nn.BatchNorm1d(dim),
    )


def class_permutations(y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Two index vectors π1, π2 with y[π(i)] = y[i]: within each class, independent random permutations."""
    pi1 = torch.arange(y.shape[0], device=y.device)
    pi2 = pi1.clone()
    for label in torch.unique(y):
        idx = torch.nonzero(y == label).flatten()
        perm1 = torch.randperm(idx.numel(), generator=generator).to(y.device)
        perm2 = torch.randperm(idx.numel(), generator=generator).to(y.device)
        pi1[idx] = idx[perm1]
        pi2[idx] = idx[perm2]
    return pi1, pi2


def selfreg_term(z: Tensor, o: Tensor, p: Tensor, pi1: Tensor, pi2: Tensor, lam: float) -> Tensor:
    """λ L_ind + (1 − λ) L_hdl of the module docstring (without c and D)."""
    o_mix = lam * o[pi1] + (1 - lam) * o[pi2]
    p_mix = lam * p[pi1] + (1 - lam) * p[pi2]
    l_ind = F.mse_loss(o, o[pi1]) + FEATURE_WEIGHT * F.mse_loss(z, p[pi1])
    l_hdl = F.mse_loss(o, o_mix) + FEATURE_WEIGHT * F.mse_loss(z, p_mix)
    return lam * l_ind + (1 - lam) * l_hdl


def per_sample_outputs(fwd: Forward, n: int) -> Tensor:
    """``outputs[t]`` scattered back to batch order (every sample's prediction for its own task)."""
    present = [(out, idx) for out, idx in zip(fwd.outputs, fwd.groups, strict=True) if out is not None and idx is not None]
    width = {out.shape[1:] for out, _ in present}
    if len(width) != 1:
        raise ConfigError("method selfreg needs every domain's logits over one label space (domain data)")
    first = present[0][0]
    o = first.new_zeros((n, *first.shape[1:]))
    for out, idx in present:
        o = o.index_copy(0, idx, out)
    return o


class SelfReg(Penalty):
    def __init__(self, arch: Architecture, tasks: Sequence[TaskSpec], weight: float = 1.0) -> None:
        super().__init__(weight)
        if arch.setting != "domain":
            raise ConfigError(
                "method selfreg pairs same-class samples across domains, so it needs one label space: use domain data "
                f"(e.g. data=pacs, data=shapes_domains), not {arch.setting} data"
            )
        needs_domains("selfreg", arch)
        self.num_domains = len(tasks)
        self.cdpl = cdpl(representation_dim(arch))

    def draw(self, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, float]:
        """π1, π2 and λ ~ Beta(0.5, 0.5) for one step (torch's global generator unless one is given)."""
        pi1, pi2 = class_permutations(y, generator)
        u = torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5))
        lam = float(u.sample()) if generator is None else float(_beta_with(generator))
        return pi1, pi2, lam

    def forward(self, ctx: PenaltyContext, draws: tuple[Tensor, Tensor, float] | None = None) -> Tensor:
        z = ctx.forward.representation
        assert z is not None
        z = z.flatten(1)
        target = ctx.batch.y  # domain data: one label per sample, one label space
        assert isinstance(target, Tensor)
        o = per_sample_outputs(ctx.forward, z.shape[0])
        p = self.cdpl(z)
        pi1, pi2, lam = draws if draws is not None else self.draw(target)
        present = ctx.task_losses[[out is not None for out in ctx.forward.outputs]]
        c = min(float(present.detach().mean()), 1.0)
        return self.num_domains * c * selfreg_term(z, o, p, pi1, pi2, lam)


def _beta_with(generator: torch.Generator) -> Tensor:
    """Beta(0.5, 0.5) from ``generator``: X / (X + Y) with X, Y ~ Gamma(0.5) drawn as (N²/2) sums (χ²₁ / 2)."""
    normals = torch.randn(2, generator=generator)
    x, y = normals.pow(2)
    return x / (x + y)


@PENALTIES.register("selfreg")
def selfreg(arch: Architecture, tasks: Sequence[TaskSpec], weight: float = 1.0) -> SelfReg:
    return SelfReg(arch, tasks, weight)
