"""The weighting contract: *how task losses or task gradients are combined*.

A weighting receives the T task losses of one step (and what it may need besides: the shared
parameters, the shared representation, extra loss terms) and fills ``.grad`` of every
trainable parameter. Two families share this contract:

- :class:`LossWeighting` picks task weights ``w`` and back-propagates ``sum_t w_t L_t``;
- gradient methods (``molabench.weighting.gradient``) build the T x P matrix of per-task
  gradients of the shared parameters and ``aggregate`` it into one direction.

Weightings are ``nn.Module`` so that learnable weights (e.g. UW's log-variances) are trained by
the same optimiser and saved in the same checkpoint as the model. State that changes during
training but is neither a parameter nor a buffer (DWA's loss history, Nash-MTL's step counter)
is named in :attr:`Weighting.state_attributes`, so that a training checkpoint holds it too
(:meth:`Weighting.training_state`) and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

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
    #: Updates of the whole run (epochs x steps per epoch; 0 outside a trainer): schedules by progress.
    total_steps: int = 0
    #: Under torchrun, the step's :class:`~molabench.engine.distributed.GradReducer` (``None`` in one
    #: process). ``losses`` then hold the global batch's losses as values and this rank's share of their
    #: gradients; the trainer sums every gradient over the ranks after ``backward`` unless the weighting
    #: did (gradient methods reduce the per-task gradient matrix with it, before combining it).
    reducer: Any = None


class Weighting(nn.Module):
    """Base class of every loss/gradient combination method."""

    #: Attributes that training changes and that are neither parameters nor buffers (so not in
    #: ``state_dict``): a subclass with such state names them here, and training checkpoints save
    #: and restore them through :meth:`training_state` / :meth:`load_training_state`. Their values
    #: must be what ``torch.load(weights_only=True)`` reads back: tensors, numbers, strings,
    #: ``None`` and lists/tuples/dicts of them.
    #: A class declares only its own attributes; those of its base classes are added
    #: (:meth:`state_names`).
    state_attributes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def state_names(cls) -> list[str]:
        """The :attr:`state_attributes` of this class and of all its base classes."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names += [n for n in vars(klass).get("state_attributes", ()) if n not in names]
        return names

    def training_state(self) -> dict[str, Any]:
        """A copy of the declared state attributes (the rest of the state is in ``state_dict``)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.state_names()}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`training_state` returned."""
        missing = [name for name in self.state_names() if name not in state]
        if missing:
            raise KeyError(f"{type(self).__name__}: the saved training state lacks {missing}")
        for name in self.state_names():
            setattr(self, name, copy.deepcopy(state[name]))

    def backward(self, ctx: StepContext) -> dict[str, float]:
        """Populate ``.grad`` of all trainable parameters; return scalars worth logging."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, mean_train_losses: Tensor) -> None:
        """Called once per epoch with the mean training loss of every task (used by DWA)."""

    def optimizer_reset(self, step: int, total_steps: int) -> Mapping[str, Any] | None:
        """Called before update ``step`` (0-based) of ``total_steps``: options of ``trainer.optimizer`` to
        re-create the optimiser with at this step (e.g. EQRM's ``{"lr": 1e-6}`` after burn-in), else None."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the run record should state about this weighting (e.g. counted fallbacks); empty by default."""
        return {}


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
