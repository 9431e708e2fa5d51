"""The penalty contract: extra loss terms added to the task losses.

A penalty looks at one forward pass (representation, side outputs such as router logits,
task ids, targets) and returns an *unweighted* scalar; the algorithm multiplies it by
``weight`` and hands the sum to the weighting as ``extra_loss``. Penalties are modules so that
their own parameters (TwD's projection, DANN's discriminator) are optimised and saved with
the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from molabench.architectures.base import Forward
from molabench.data.base import Batch


@dataclass
class PenaltyContext:
    batch: Batch
    forward: Forward
    task_losses: Tensor


class Penalty(nn.Module):
    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, ctx: PenaltyContext) -> Tensor:
        raise NotImplementedError
