"""GradNorm (Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks", ICML 2018).

Learnable weights ``w_i`` (init 1), network loss ``sum_i w_i L_i``. At a layer ``W``::

    G_i = |grad_W w_i L_i|,   Gbar = mean_i G_i,
    Ltilde_i = L_i / L_i(0),  r_i = Ltilde_i / mean_j Ltilde_j,
    L_grad = sum_i | G_i - Gbar * r_i^alpha |        (the target is a constant)

``w`` is trained on ``L_grad`` only (its gradient replaces that of the network loss) by the
model's optimiser, and renormalised to ``sum_i w_i = T`` before each use (the paper renormalises
after each update; doing it at the start of the next step is the same sequence). alpha = 1.5.

Which ``W``: the paper uses "the last shared layer of weights". We use the shared
*representation* ``z`` when the architecture has one (``layer: auto`` / ``representation``):
its per-task gradients are exact and cheap (only the heads are differentiated) and it is the
output of that last shared layer, as in LibMTL's representation mode. Without one (or with
``layer: last_shared``) we use the last shared parameter tensor with at least 2 dimensions in
``shared_parameters()`` order (e.g. ResNet ``layer4.1.conv2.weight``). ``L_i(0)`` is the loss of
the first step in which task i is present.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molabench.errors import ConfigError
from molabench.weighting.base import LossWeighting, StepContext, present_tasks
from molabench.weighting.pertask import task_gradients
from molabench.weighting.registration import register, require_num_tasks

LAYERS = ("auto", "representation", "last_shared")


@register("gradnorm")
class GradNorm(LossWeighting):
    def __init__(self, num_tasks: int | None = None, alpha: float = 1.5, layer: str = "auto") -> None:
        super().__init__()
        if layer not in LAYERS:
            raise ConfigError(f"gradnorm layer {layer!r} is not one of {', '.join(LAYERS)}")
        n = require_num_tasks("gradnorm", num_tasks)
        self.alpha, self.layer = float(alpha), layer
        self.loss_weight = nn.Parameter(torch.ones(n))
        self.register_buffer("initial_loss", torch.full((n,), float("nan")))

    def weights(self, losses: Tensor, present: Tensor) -> Tensor:
        return self.loss_weight.detach().to(losses)

    @torch.no_grad()
    def _renormalise(self) -> None:
        w = self.loss_weight
        w.clamp_(min=1e-4)
        w.mul_(w.numel() / w.sum())

    def _layer(self, ctx: StepContext) -> Tensor:
        if self.layer != "last_shared" and ctx.representation is not None and ctx.representation.requires_grad:
            return ctx.representation
        if self.layer == "representation":
            raise ConfigError("gradnorm layer=representation needs an architecture with a shared representation")
        matrices = [p for p in ctx.shared_params if p.requires_grad and p.dim() >= 2]
        if not matrices:
            raise ConfigError("gradnorm found no shared weight matrix to balance; the architecture shares no layer")
        return matrices[-1]

    def backward(self, ctx: StepContext) -> dict[str, float]:
        self._renormalise()
        idx = present_tasks(ctx.losses, ctx.present)
        losses = ctx.losses[idx]
        with torch.no_grad():
            fresh = torch.isnan(self.initial_loss[idx])
            self.initial_loss[idx[fresh]] = losses.detach()[fresh].to(self.initial_loss)
        if idx.numel():
            W = self._layer(ctx)
            GW = task_gradients(losses, [W], [], None, "exact", retain_graph=True).G.detach()  # type: ignore[list-item, union-attr]
            if ctx.reducer is None:
                norms = GW.norm(dim=1)
            elif W is ctx.representation:  # torchrun: the ranks hold disjoint rows of z, squared norms add up
                norms = ctx.reducer.reduce_small(GW.pow(2).sum(1)).sqrt()
            else:  # the global gradient at a shared weight is the sum of the ranks' shares
                norms = ctx.reducer.reduce_small(GW).norm(dim=1)
            G = self.loss_weight[idx] * norms.to(self.loss_weight)
            ratio = losses.detach().to(G) / self.initial_loss[idx].clamp_min(1e-12)
            target = (G.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
            (grad,) = torch.autograd.grad((G - target).abs().sum(), self.loss_weight)
            self.loss_weight.grad = grad if self.loss_weight.grad is None else self.loss_weight.grad + grad
        w = self.weights(ctx.losses, ctx.present)
        total = (w * ctx.losses).sum()
        if ctx.extra_loss is not None:
            total = total + ctx.extra_loss
        total.backward()
        return {f"w{t}": float(v) for t, v in enumerate(w)}
