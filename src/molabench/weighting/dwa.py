"""DWA: dynamic weight average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
Attention", CVPR 2019).

With ``L_k(e)`` task k's mean training loss of epoch e and ``r_k(e-1) = L_k(e-1) / L_k(e-2)``::

    w_k(e) = K * exp(r_k(e-1) / T) / sum_i exp(r_i(e-1) / T)

and ``w = 1`` for the first two epochs. Temperature ``T = 2`` (paper). Loss history arrives
through :meth:`on_epoch_end`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.weighting.base import LossWeighting
from molabench.weighting.registration import register


@register("dwa")
class DynamicWeightAverage(LossWeighting):
    state_attributes = ("history",)  # the last two epochs' mean losses (checkpointed)

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.history: list[Tensor] = []

    def on_epoch_end(self, epoch: int, mean_train_losses: Tensor) -> None:
        self.history = [*self.history[-1:], mean_train_losses.detach().double().cpu()]

    def weights(self, losses: Tensor, present: Tensor) -> Tensor:
        if len(self.history) < 2:
            return torch.ones_like(losses)
        ratio = self.history[-1] / self.history[-2].clamp_min(1e-12)
        K = ratio.numel()
        return (K * torch.softmax(ratio / self.temperature, 0)).to(losses)
