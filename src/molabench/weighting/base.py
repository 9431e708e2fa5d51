"""The weighting contract: *how task losses or task gradients are combined*.

A weighting receives the T task losses of one step (and what it may need besides: the shared
parameters, the shared representation, extra loss terms) and fills ``.grad`` of every
trainable parameter. Two families share this contract:

- :class:`LossWeighting` picks task weights ``w`` and back-propagates ``sum_t w_t L_t``;
- gradient methods (``molabench.weighting.gradient``) build the T x P matrix of per-task
  gradients of the shared parameters and ``aggregate`` it into one direction.

Weightings are ``nn.Module`` so that learnable weights (e.g. UW's log-variances) are trained by
the same optimiser and saved in the same checkpoint as the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class StepContext:
    """Everything a weighting may use in one training step.

    ``losses`` has one entry per task; entries of tasks absent from the batch (``present`` is
    False) are zero and carry no gradient. ``extra_loss`` is the weighted sum of penalties
    (TwD, domain terms) and is added to every task's objective exactly once.
    """

    losses: Tensor
    present: Tensor
    shared_params: list[nn.Parameter]
    task_params: list[nn.Parameter]
    representation: Tensor | None = None
    extra_loss: Tensor | None = None
    step: int = 0
    epoch: int = 0
    #: ``Forward.groups``: the batch indices each task's loss is computed on (``None`` for absent
    #: tasks). Optional; when the groups are disjoint (multi-input / domain settings) gradient
    #: methods get all per-task gradients from one backward pass (``weighting.pertask``).
    groups: list[Tensor | None] | None = None
    #: True when every shared parameter reaches the losses only through ``representation`` and every
    #: task-specific parameter lies after it (heads): exact per-task gradients then need one backward
    #: through each head and T batched backwards through the encoder, not T through everything.
    shared_behind_representation: bool = False


class Weighting(nn.Module):
    """Base class of every loss/gradient combination method."""

    def backward(self, ctx: StepContext) -> dict[str, float]:
        """Populate ``.grad`` of all trainable parameters; return scalars worth logging."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, mean_train_losses: Tensor) -> None:
        """Called once per epoch with the mean training loss of every task (used by DWA)."""


class LossWeighting(Weighting):
    """Back-propagates ``sum_t w_t L_t + extra``; subclasses choose ``w`` in :meth:`weights`."""

    def weights(self, losses: Tensor, present: Tensor) -> Tensor:
        """Task weights (T,) for this step; they are treated as constants unless learnable."""
        raise NotImplementedError

    def backward(self, ctx: StepContext) -> dict[str, float]:
        w = self.weights(ctx.losses, ctx.present)
        total = (w * ctx.losses).sum()
        if ctx.extra_loss is not None:
            total = total + ctx.extra_loss
        total.backward()
        return {f"w{t}": float(v) for t, v in enumerate(w.detach())}


def present_tasks(losses: Tensor, present: Tensor) -> Tensor:
    """Indices of the tasks that have samples in this batch."""
    return torch.nonzero(present).flatten()
