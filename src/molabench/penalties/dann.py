"""DANN: domain-adversarial training (Ganin et al., JMLR 2016; DomainBed's ``DANN``).

A discriminator MLP z → width → … → D (``mlp_depth`` linear layers, ReLU, dropout; DomainBed: width 256,
depth 3, dropout 0) predicts the domain d of each sample from its representation z:

    L_disc = CE(Dis(z), d) + β · mean_batch ‖∇_z Σ CE(Dis(z), d)‖²        (β = ``grad_penalty`` = 0)

and the encoder is trained to make it fail: L_gen = Σ_d CE_d − λ·D·L_disc (λ = ``lam``, DomainBed's
``lambda`` = 1; × D because molabench's EW sums the domains' losses where DomainBed averages them).

Two schedules:

- ``reversal`` (default, one backward, ``method.algorithm.name=multitask``): the penalty is
  CE(Dis(GRL(z)), d) (+ β term) where GRL is the identity forward and multiplies the gradient by −λ·D
  backward; the discriminator thus descends its own loss (weight 1) while the encoder ascends it with
  λ·D. With ``lambda_schedule: ganin`` the coefficient ramps as λ_p = 2 / (1 + exp(−10 p)) − 1 (p: training
  progress), as in the original paper; DomainBed has no ramp (``constant``).
- ``alternating`` (``method.algorithm.name=adversarial``, DomainBed): discriminator and generator take
  turns on successive batches (``d_steps_per_g_step``), each with its own Adam (betas (0.5, 0.9)); the
  generator's term is −λ·D·L_disc.

The discriminator's parameters form their own optimiser group with Adam betas (0.5, 0.9) and weight decay 0
(DomainBed's discriminator optimiser).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures.base import Architecture
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.penalties import PENALTIES
from molabench.penalties.base import Adversary, PenaltyContext
from molabench.penalties.domains import needs_domains, representation_dim

LAMBDA_SCHEDULES = ("constant", "ganin")


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * grad, None


def grad_reverse(x: Tensor, coefficient: float) -> Tensor:
    """Identity forward; the gradient is multiplied by −``coefficient`` backward."""
    return _Reverse.apply(x, coefficient)


def ganin_ramp(progress: float) -> float:
    """λ_p = 2 / (1 + exp(−10 p)) − 1: 0 at the start, → 1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def mlp(n_in: int, n_out: int, width: int, depth: int, dropout: float) -> nn.Sequential:
    """DomainBed's MLP: ``depth`` linear layers (in → width → … → out), dropout and ReLU between them."""
    layers: list[nn.Module] = []
    dims = [n_in] + [width] * (depth - 1)
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.Dropout(dropout), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], n_out))
    return nn.Sequential(*layers)


class DANN(Adversary):
    optimizer_options: ClassVar[Mapping[str, Any]] = {"betas": (0.5, 0.9), "weight_decay": 0.0}

    def __init__(
        self, arch: Architecture, tasks: Sequence[TaskSpec], lam: float = 1.0, mlp_width: int = 256, mlp_depth: int = 3,
        mlp_dropout: float = 0.0, grad_penalty: float = 0.0, lambda_schedule: str = "constant", weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        needs_domains("dann", arch)
        if len(tasks) < 2:
            raise ConfigError("method dann needs at least two domains to discriminate")
        if lambda_schedule not in LAMBDA_SCHEDULES:
            raise ConfigError(f"penalty dann: lambda_schedule must be one of {', '.join(LAMBDA_SCHEDULES)}, got {lambda_schedule!r}")
        if int(mlp_depth) < 1 or int(mlp_width) < 1:
            raise ConfigError(f"penalty dann: mlp_depth and mlp_width must be >= 1, got {mlp_depth}, {mlp_width}")
        if not 0 <= float(mlp_dropout) < 1:
            raise ConfigError(f"penalty dann: mlp_dropout must be in [0, 1), got {mlp_dropout}")
        self.num_domains = len(tasks)
        self.lam, self.grad_penalty, self.lambda_schedule = float(lam), float(grad_penalty), lambda_schedule
        self.discriminator = mlp(representation_dim(arch), self.num_domains, int(mlp_width), int(mlp_depth), float(mlp_dropout))

    def coefficient(self, progress: float) -> float:
        """λ·D, times Ganin's ramp when ``lambda_schedule=ganin``."""
        ramp = ganin_ramp(progress) if self.lambda_schedule == "ganin" else 1.0
        return self.lam * self.num_domains * ramp

    def disc_loss(self, z: Tensor, domain: Tensor) -> Tensor:
        """L_disc on features ``z`` (the gradient penalty differentiates w.r.t. ``z``)."""
        if self.grad_penalty > 0 and not z.requires_grad:
            z = z.detach().requires_grad_(True)
        logits = self.discriminator(z)
        loss = F.cross_entropy(logits, domain)
        if self.grad_penalty > 0:
            grad = torch.autograd.grad(F.cross_entropy(logits, domain, reduction="sum"), z, create_graph=True)[0]
            loss = loss + self.grad_penalty * grad.pow(2).sum(1).mean()
        return loss

    def forward(self, ctx: PenaltyContext) -> Tensor:
        z = ctx.forward.representation
        assert z is not None
        z = z.flatten(1)
        if self.alternating:
            return -self.coefficient(ctx.progress) * self.disc_loss(z, ctx.batch.task)
        return self.disc_loss(grad_reverse(z, self.coefficient(ctx.progress)), ctx.batch.task)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def discriminator_loss(self, ctx: PenaltyContext) -> Tensor:
        z = ctx.forward.representation
        assert z is not None
        return self.disc_loss(z.detach().flatten(1), ctx.batch.task)


@PENALTIES.register("dann")
def dann(
    arch: Architecture, tasks: Sequence[TaskSpec], lam: float = 1.0, mlp_width: int = 256, mlp_depth: int = 3,
    mlp_dropout: float = 0.0, grad_penalty: float = 0.0, lambda_schedule: str = "constant", weight: float = 1.0,
) -> DANN:
    return DANN(arch, tasks, lam, mlp_width, mlp_depth, mlp_dropout, grad_penalty, lambda_schedule, weight)
