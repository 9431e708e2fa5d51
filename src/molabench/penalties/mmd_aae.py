"""MMD-AAE: domain generalisation with an adversarial auto-encoder (Li, Pan, Wang, Kot, CVPR 2018).

On top of features f, a code h = Q(f) (the ``coded`` architecture) feeds the classifier; this penalty adds

    λ_ae · ‖P(h) − f‖²  +  λ_mmd · R_mmd(h)  +  λ_adv · (Dis(h) − 1)²

with P = Dropout(0.25) + Linear(h → f) the decoder (f detached: the code must reconstruct the features, the
features are not pulled towards what is reconstructable), R_mmd = Σ over pairs of present domains of
MMD²(H_d, H_d') with the reimplementation's kernel mean_{σ∈{1,5,10}} exp(−‖a − b‖²/(2σ)), and a least-squares
GAN term: the encoder pushes the discriminator's output Dis(h) (Linear(h → 2000) + ReLU + Linear(→ 1) +
sigmoid) towards 1, the label of samples of the Laplace(0, 1) prior. Means over elements/samples.

The discriminator takes its own step on the same batch (``method.algorithm.name=adversarial`` with
``schedule: each_step``) with detached codes labelled 0 and prior samples labelled 1:

    L_dis = mean Dis(h)² + mean (Dis(s) − 1)²,   s ~ Laplace(0, 1)^{code_dim}

Weights (the reimplementation's: cls 1, AE 0.1, MMD 2, adversarial 0.1) are multiplied by D because
molabench's EW sums the domains' classification losses where the reference averages over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures.base import Architecture
from molabench.architectures.coded import Coded
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.penalties import PENALTIES
from molabench.penalties.base import Adversary, PenaltyContext
from molabench.penalties.domains import needs_domains
from molabench.penalties.mmd import mmd_aae_kernel, pairwise_mmd2


class MMDAAE(Adversary):
    needs_alternating = True
    optimizer_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self, arch: Architecture, tasks: Sequence[TaskSpec], ae: float = 0.1, mmd: float = 2.0, adv: float = 0.1,
        dis_width: int = 2000, decoder_dropout: float = 0.25, weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        if not isinstance(arch, Coded):
            raise ConfigError("penalty mmd_aae needs the code layer: method.architecture.name=coded (configs/method/mmd_aae.yaml)")
        needs_domains("mmd_aae", arch)
        if min(ae, mmd, adv) < 0:
            raise ConfigError(f"penalty mmd_aae: weights must be >= 0, got ae={ae}, mmd={mmd}, adv={adv}")
        self.num_domains = len(tasks)
        self.ae, self.mmd, self.adv = float(ae), float(mmd), float(adv)
        self.decoder = nn.Sequential(nn.Dropout(float(decoder_dropout)), nn.Linear(arch.code_dim, arch.feature_dim))
        self.discriminator = nn.Sequential(nn.Linear(arch.code_dim, int(dis_width)), nn.ReLU(inplace=True), nn.Linear(int(dis_width), 1), nn.Sigmoid())
        self.last_terms: dict[str, float] = {}

    def terms(self, ctx: PenaltyContext) -> dict[str, Tensor]:
        """The three unweighted terms of the generator's objective."""
        h, f = ctx.forward.representation, ctx.forward.aux["features"]
        assert h is not None
        total, _ = pairwise_mmd2(h, ctx.batch.task, self.num_domains, mmd_aae_kernel)
        return {
            "ae": F.mse_loss(self.decoder(h), f.detach()),
            "mmd": total,
            "adv": (self.discriminator(h) - 1).pow(2).mean(),
        }

    def forward(self, ctx: PenaltyContext) -> Tensor:
        if not self.alternating:
            raise ConfigError("penalty mmd_aae trains its prior adversary in steps of its own: set method.algorithm.name=adversarial")
        terms = self.terms(ctx)
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        d = self.num_domains
        return d * (self.ae * terms["ae"] + self.mmd * terms["mmd"] + self.adv * terms["adv"])

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def discriminator_loss(self, ctx: PenaltyContext) -> Tensor:
        h = ctx.forward.representation
        assert h is not None
        h = h.detach()
        prior = torch.distributions.Laplace(torch.zeros((), device=h.device), torch.ones((), device=h.device)).sample(h.shape)
        return self.discriminator(h).pow(2).mean() + (self.discriminator(prior) - 1).pow(2).mean()


@PENALTIES.register("mmd_aae")
def mmd_aae(
    arch: Architecture, tasks: Sequence[TaskSpec], ae: float = 0.1, mmd: float = 2.0, adv: float = 0.1,
    dis_width: int = 2000, decoder_dropout: float = 0.25, weight: float = 1.0,
) -> MMDAAE:
    return MMDAAE(arch, tasks, ae, mmd, adv, dis_width, decoder_dropout, weight)
