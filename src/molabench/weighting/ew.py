"""EW: equal weighting, ``L = sum_t L_t`` — the plain multi-task objective."""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.weighting import WEIGHTINGS
from molabench.weighting.base import LossWeighting


class EqualWeighting(LossWeighting):
    def weights(self, losses: Tensor, present: Tensor) -> Tensor:
        return torch.ones_like(losses)


@WEIGHTINGS.register("ew")
def ew(num_tasks: int | None = None) -> EqualWeighting:
    """No hyper-parameters; ``num_tasks`` (every weighting gets it) is not needed."""
    return EqualWeighting()
