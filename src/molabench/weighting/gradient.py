"""Shared mechanics of gradient-combination methods.

A :class:`GradientWeighting` turns the T task losses of a step into one update direction:

1. the T' x P matrix ``G`` of per-task gradients of the shared parameters (present tasks only;
   ``weighting.pertask`` explains how it is obtained in about one backward pass);
2. ``d = aggregate(G)``, the method proper;
3. ``d`` is written into the shared parameters' ``.grad``;
4. task-specific parameters (heads, and the weighting's own parameters, e.g. IMTL-L scales)
   receive the gradient of ``sum_t L_t`` — each head only sees its own loss, so this is the
   unweighted task gradient whatever the method;
5. the gradient of ``extra_loss`` (penalties) is added once, outside the combination.

Representation-level ("-UB", Sener & Koltun 2018) methods set ``level = "representation"``:
``G`` holds the gradients w.r.t. the shared representation ``z`` (B x D per task, cheap: only the
heads are differentiated), and ``aggregate`` 's result is back-propagated through the encoder.

:class:`GramianWeighting` covers methods whose direction is a combination ``d = w^T G`` with
weights computed from the Gramian ``M = G G^T`` alone (MGDA, PCGrad, CAGrad, IMTL-G, GradVac,
Nash-MTL, Aligned-MTL): T x T algebra instead of T x P vector operations. When the one-backward
per-task gradients are exact (``weighting.pertask``: disjoint task groups, no BatchNorm with
whole-batch statistics, e.g. ``trainer.bn_stats=per_task``) these methods never form ``G``: they
get ``M`` and ``c -> c^T G`` from the backward pass directly.

``path_counts`` counts the steps per way of obtaining the per-task gradients (``exact``,
``sample_groups``, ``sample_groups_approx``, ``representation``) for the run record.

Under torchrun (``StepContext.reducer``) every rank forms its share ``G^r`` of the matrix (never the
Gramian path: the Gramian of a sum is not the sum of the ranks' Gramians), the shares are summed in
the same all-reduce as every other gradient, and every rank combines the global ``G`` with the same
deterministic code. Representation-level methods are exact with less: the ranks hold disjoint rows
of ``z``, so the Gramian of the global ``dL_t/dz`` *is* the sum of the ranks' (T x T); each rank
back-propagates the common combination of its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from molabench.errors import ConfigError
from molabench.weighting.base import StepContext, Weighting, present_tasks
from molabench.weighting.pertask import check_grad_mode, flat_views, gramian, task_gradients


class GradientWeighting(Weighting):
    """Base class: subclasses implement :meth:`aggregate`."""

    #: "parameters": combine gradients of the shared parameters; "representation": of ``z``.
    level: str = "parameters"
    state_attributes = ("path_counts",)  # training checkpoints keep it (Weighting.state_attributes)

    def __init__(self, grad_mode: str = "auto") -> None:
        super().__init__()
        self.grad_mode = check_grad_mode(grad_mode)
        #: weights of the last aggregation (rows of G), for logging; None when not a weighting.
        self.last_weights: Tensor | None = None
        self._buffer: dict[str, Tensor] = {}  # G's memory, reused across steps
        #: steps per per-task gradient path (``TaskGradients.path``), for the run record
        self.path_counts: dict[str, int] = {}

    # -- the method --------------------------------------------------------------------------

    def aggregate(self, G: Tensor, tasks: Tensor | None = None, losses: Tensor | None = None) -> Tensor:
        """Combine per-task gradients ``G`` (T x P) into one direction (P,).

        ``tasks`` are the global task ids of the rows (default ``0..T-1``; stateful methods key
        their state by it); ``losses`` the rows' loss values (used by MGDA's loss normalisation).
        """
        raise NotImplementedError

    def aggregate_representation(self, G: Tensor, tasks: Tensor, losses: Tensor) -> Tensor:
        """Combine representation gradients ``G`` (T x B x ...) into a (B x ...) gradient."""
        return self.aggregate(G.flatten(1), tasks, losses).view(G.shape[1:])

    def aggregate_representation_shard(self, G: Tensor, tasks: Tensor, losses: Tensor, reducer: Any) -> Tensor:
        """Under torchrun: :meth:`aggregate_representation` of the global ``G``, restricted to this rank's
        rows, from this rank's rows ``G`` (T x B_r x ...) and sums over the ranks (``reducer.reduce_small``).
        Gramian methods: the ranks hold disjoint rows of z, so the global Gramian is the sum of theirs,
        and ``c^T G`` restricted to this rank's rows is ``c^T`` of its rows. Other methods override it."""
        if not isinstance(self, GramianWeighting):
            raise ConfigError(
                f"weighting {type(self).__name__} combines representation gradients in a way molabench cannot yet "
                "split over ranks: train it with one process, or use its parameter-level variant under torchrun"
            )
        flat = G.flatten(1)
        coef = self.coefficients(reducer.reduce_small(gramian(flat)), tasks, losses)
        return (coef.to(flat) @ flat).view(G.shape[1:])

    def scale_losses(self, losses: Tensor, tasks: Tensor) -> Tensor:
        """Transform present tasks' losses before differentiation (identity; IMTL-L overrides)."""
        return losses

    # -- mechanics ---------------------------------------------------------------------------

    def backward(self, ctx: StepContext) -> dict[str, float]:
        idx = present_tasks(ctx.losses, ctx.present)
        extra = ctx.extra_loss if ctx.extra_loss is not None and ctx.extra_loss.requires_grad else None
        retain = extra is not None  # the penalty may share the graph: keep it for its own backward
        self.last_weights = None
        if idx.numel():
            losses = self.scale_losses(ctx.losses[idx], idx)
            own = [p for p in self.parameters() if p.requires_grad]
            others = _unique([p for p in ctx.task_params if p.requires_grad] + own)
            if self.level == "representation":
                self._backward_representation(ctx, losses, idx, others, retain)
            elif self._backward_parameters(ctx, losses, idx, others, retain, extra):
                extra = None  # back-propagated before the reduction
        if extra is not None:
            extra.backward()
        logs: dict[str, float] = {}
        if self.last_weights is not None:
            logs = {f"w{int(t)}": float(w) for t, w in zip(idx, self.last_weights, strict=True)}
        return logs

    def _backward_parameters(
        self, ctx: StepContext, losses: Tensor, idx: Tensor, others: list[nn.Parameter], retain: bool, extra: Tensor | None = None,
    ) -> bool:
        """Per-task gradients, combined, into ``.grad``; True when ``extra`` was back-propagated here (torchrun)."""
        shared = _unique([p for p in ctx.shared_params if p.requires_grad])
        groups = None if ctx.groups is None else [ctx.groups[int(t)] for t in idx]
        through = ctx.representation if ctx.shared_behind_representation else None
        reducer = ctx.reducer
        tg = task_gradients(
            losses, shared, others, groups, self.grad_mode, retain, self._buffer, through,  # type: ignore[arg-type]
            gramian=isinstance(self, GramianWeighting) and reducer is None,
            agree=None if reducer is None else reducer.agree,
        )
        self._count(tg.path)
        if reducer is not None:
            # This rank's shares: heads' gradients and the penalties' into .grad, G^r aside; one all-reduce
            # sums them all; then every rank combines the same global G.
            assert tg.G is not None
            accumulate(others, tg.others)
            if extra is not None:
                extra.backward()
            # Without penalties no rank has a gradient of the shared parameters yet (G carries them):
            # leave them out, so that a step sends T P_shared + P_task floats, not (T + 1) P_shared + P_task.
            (G,) = reducer.reduce([tg.G], without=shared if ctx.extra_loss is None else ())
            d = self.aggregate(G, idx, ctx.losses[idx].detach())
            offsets, _ = flat_views(shared)
            accumulate(shared, [d[o: o + p.numel()].view_as(p) for o, p in zip(offsets, shared, strict=True)])
            return True
        if tg.G is None:  # Gramian path: M and c -> c^T G without forming G
            assert tg.M is not None and tg.combine is not None and isinstance(self, GramianWeighting)
            coef = self.coefficients(tg.M, idx, ctx.losses[idx].detach())
            accumulate(shared, tg.combine(coef))
        else:
            d = self.aggregate(tg.G, idx, ctx.losses[idx].detach())
            offsets, _ = flat_views(shared)
            accumulate(shared, [d[o: o + p.numel()].view_as(p) for o, p in zip(offsets, shared, strict=True)])
        accumulate(others, tg.others)
        return False

    def _count(self, path: str) -> None:
        self.path_counts[path] = self.path_counts.get(path, 0) + 1

    def _backward_representation(
        self, ctx: StepContext, losses: Tensor, idx: Tensor, others: list[nn.Parameter], retain: bool
    ) -> None:
        z = ctx.representation
        if z is None or not z.requires_grad:
            raise ConfigError(
                f"weighting {type(self).__name__} differentiates the shared representation, but the architecture "
                "exposes none; use the parameter-level method (e.g. mgda instead of mgda_ub) or an architecture "
                "with one shared encoder (e.g. hps)"
            )
        # Only the heads lie between z and the losses, so exact per-task gradients are cheap.
        tg = task_gradients(losses, [z], others, None, "exact", retain_graph=True)  # type: ignore[list-item]
        assert tg.G is not None
        self._count("representation")
        if ctx.reducer is not None:
            dz = self.aggregate_representation_shard(tg.G.detach().view(len(idx), *z.shape), idx, ctx.losses[idx].detach(), ctx.reducer)
        else:
            dz = self.aggregate_representation(tg.G.view(len(idx), *z.shape), idx, ctx.losses[idx].detach())
        torch.autograd.backward(z, dz.to(z.dtype), retain_graph=retain)
        accumulate(others, tg.others)


class GramianWeighting(GradientWeighting):
    """``d = w^T G`` with ``w = weights_from_gramian(G G^T)``."""

    def weights_from_gramian(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        """Task weights (T,) from the float64 Gramian ``M`` (T x T)."""
        raise NotImplementedError

    def aggregate(self, G: Tensor, tasks: Tensor | None = None, losses: Tensor | None = None) -> Tensor:
        tasks = torch.arange(G.shape[0]) if tasks is None else tasks
        G = G.detach()
        M = gramian(G)
        w = self.weights_from_gramian(M, tasks.cpu(), losses).to(G.dtype).to(G.device)
        self.last_weights = w.detach().cpu()
        return w @ G

    def coefficients(self, M: Tensor, tasks: Tensor, losses: Tensor | None) -> Tensor:
        """``c`` (T,) such that ``aggregate(G) = c^T G`` for any ``G`` with Gramian ``M``.

        Plain subclasses: ``c = weights_from_gramian(M)``. A subclass that overrides ``aggregate``
        (e.g. Nash-MTL's cap on ``|d|``) must keep ``aggregate(G) = c(M)^T G``; it is run on a T x T
        surrogate ``S = V diag(sqrt(lambda))`` with ``S S^T = M`` (``M = V diag(lambda) V^T``) and
        ``c`` solves ``S^T c = aggregate(S)`` (any solution gives the same ``c^T G``: ``G`` and ``S``
        have the same null space of combinations).
        """
        if type(self).aggregate is GramianWeighting.aggregate:
            w = self.weights_from_gramian(M, tasks.cpu(), losses)
            self.last_weights = w.detach().to(torch.float32).cpu()
            return w
        lam, V = torch.linalg.eigh(M.double())
        S = V * lam.clamp_min(0).sqrt()
        d = self.aggregate(S, tasks, losses).double()
        return torch.linalg.pinv(S.T) @ d


def accumulate(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Add ``grads`` into ``.grad`` (the trainer zeroes grads before ``backward``)."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        g = g.detach().to(p.dtype)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def unit_rows(M: Tensor, eps: float = 1e-12) -> Tensor:
    """Norms ``|g_t|`` of the rows of G from its Gramian, floored at ``eps``."""
    return M.diagonal().clamp_min(0).sqrt().clamp_min(eps)
