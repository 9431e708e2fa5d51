"""The penalty contract: extra loss terms added to the task losses.

A penalty looks at one forward pass (representation, side outputs such as router logits,
task ids, targets) and returns an *unweighted* scalar; the algorithm multiplies it by
``weight`` and hands the sum to the weighting as ``extra_loss``. Penalties are modules so that
their own parameters (TwD's projection, DANN's discriminator) are optimised and saved with
the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from molabench.architectures.base import Forward
from molabench.data.base import Batch


@dataclass
class PenaltyContext:
    """One training step as a penalty sees it: the batch, its forward, the task losses, and where
    training stands (``step`` updates done of ``total_steps``; 0 of 0 outside a trainer)."""

    batch: Batch
    forward: Forward
    task_losses: Tensor
    step: int = 0
    total_steps: int = 0

    @property
    def progress(self) -> float:
        """Training progress p in [0, 1] (schedules such as DANN's λ ramp); 0 outside a trainer."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


class Penalty(nn.Module):
    """Base class: ``forward(ctx)`` returns the unweighted term.

    ``optimizer_options``: options of the optimiser's parameter group holding this penalty's own
    parameters (e.g. DANN's discriminator: ``{"betas": (0.5, 0.9)}``); empty = the main group.

    ``across_ranks``: under torchrun each rank computes the penalty on its rows; ``mean`` (a statistic
    of the batch: MMD, a discriminator's loss; or of the parameters alone, then exact) averages the
    ranks' values, ``sum`` (a sum over the batch's samples, e.g. DSelect-k's) adds them, which is exact.
    """

    optimizer_options: ClassVar[Mapping[str, Any]] = {}
    across_ranks: ClassVar[str] = "mean"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, ctx: PenaltyContext) -> Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the run record should state about this penalty (counters, schedules); empty by default."""
        return {}


class Adversary(Penalty):
    """A penalty with a discriminator of its own (DANN's domain classifier, MMD-AAE's prior adversary).

    Under the default algorithm (``multitask``) the discriminator trains in the same backward as the
    model, through a gradient-reversal layer where the method allows it. Under ``method.algorithm.name=
    adversarial`` the algorithm sets :attr:`alternating` and runs separate discriminator updates with
    :meth:`discriminator_loss` (on detached features) and its own optimiser over
    :meth:`discriminator_parameters`; ``forward`` then returns the generator's side only.
    """

    #: True when the method cannot train under one backward (e.g. a least-squares GAN): it then needs
    #: ``method.algorithm.name=adversarial``.
    needs_alternating: bool = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.alternating = False

    def discriminator_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def discriminator_loss(self, ctx: PenaltyContext) -> Tensor:
        """The discriminator's loss on ``ctx`` with the features detached (the discriminator step)."""
        raise NotImplementedError
