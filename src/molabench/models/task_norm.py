"""Per-task BatchNorm statistics in one forward pass (``trainer.bn_stats=per_task``).

In the multi-input and domain settings every sample of a batch belongs to exactly one task. A
train-mode BatchNorm normally normalises all samples with the statistics of the whole batch, so
the output of a sample of task ``u`` depends on the samples of every other task: task ``t``'s loss
reaches the other tasks' samples through the batch mean and variance. The per-task gradients
that gradient methods combine then cannot be read off one backward pass of ``sum_t L_t``.

:class:`TaskBatchNorm2d` (and its 1-D/3-D siblings) normalises the samples of each task with that
task's own batch statistics, with the shared affine parameters: for sample ``s`` of task ``t``,
channel ``c`` and position ``l``,

    mu_tc      = (1 / N_t) sum_{s in t, l} x_scl                       N_t = n_t * L (samples x positions)
    sigma2_tc  = (1 / N_t) sum_{s in t, l} (x_scl - mu_tc)^2            (biased, as BatchNorm normalises)
    y_scl      = gamma_c (x_scl - mu_tc) / sqrt(sigma2_tc + eps) + beta_c

which is exactly what ``nn.BatchNorm`` computes when each task's sub-batch is forwarded on its own
(LibMTL's sequence of per-task forwards), in one pass: samples of different tasks never interact,
so ``dL_u / dx_s = 0`` for ``s`` not in task ``u`` and the one-backward per-sample split of
``weighting.pertask`` (``sample_groups``) yields the exact per-task gradients.

Statistics. Per sample, one pass gives ``m_sc`` and ``v_sc`` (mean and biased variance over the L
positions); the task statistics follow by Chan et al.'s pairwise combination, which is as stable
as a two-pass variance:

    mu_tc = (1 / n_t) sum_{s in t} m_sc,     sigma2_tc = (1 / n_t) sum_{s in t} (v_sc + (m_sc - mu_tc)^2)

Running statistics. The T per-task updates are applied in task order, as T sequential forwards
would: for each present task ``t`` (ascending), ``k <- k + 1`` (``num_batches_tracked``),
``f = momentum`` (or ``1 / k`` when ``momentum=None``), ``r_mean <- (1 - f) r_mean + f mu_t``,
``r_var <- (1 - f) r_var + f sigma2_t N_t / (N_t - 1)`` (unbiased, as PyTorch). A task whose
``N_t`` is 1 (one sample on a 1 x 1 map) is normalised (its output is ``beta``) but does not
update the running statistics (PyTorch refuses such a batch; its unbiased variance is undefined).

Backward (a custom autograd function over PyTorch's native kernels, one call per task's rows;
``xhat = (x - mu_t) / sqrt(sigma2_t + eps)``, ``g = dL/dy``)::

    S_tc   = sum_{s in t, l} g_scl,            R_tc = sum_{s in t, l} g_scl xhat_scl
    dL/dx  = gamma_c / sqrt(sigma2_tc + eps) * (g - S_tc / N_t - xhat R_tc / N_t)
    dL/dgamma_c = sum_t R_tc,                  dL/dbeta_c = sum_t S_tc

``R_t`` and ``S_t`` are task t's contributions to the affine gradients; when ``weighting.pertask``
asks for them (``node.record_per_sample = True``) the backward keeps them on its graph node
(``node.per_task = (R (T', C), S (T', C))``) so that the per-task affine gradients cost nothing extra.

When per-task statistics are not defined the layer is exactly ``nn.BatchNorm``: in eval mode
(running statistics), and in train mode when no task context is set (``predict``, the
single-input setting where every sample serves every task, calls outside
``MultiTaskAlgorithm.update``): then the statistics are those of the whole batch.

The context (:class:`TaskNormContext`) is a plain object all converted layers of a model share,
like MoLA's ``Routing``: the algorithm sets the per-sample task ids for one forward pass. The
batch must be sorted by task: architectures that regroup a batch by task internally (MoLA-Grad's
grouped convolutions) never permute a sorted batch, so the rows the layers see are the rows the
context describes. :func:`sort_by_task` gives the order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

BN_STATS: tuple[str, ...] = ("batch", "per_task", "auto")  # auto: per_task where the method may see the task, else batch


class TaskNormContext:
    """The per-sample task layout of the current forward pass, shared by every :class:`TaskBatchNorm` of a model.

    ``rows[s]`` is the position of sample ``s``'s task among the present tasks (ascending task id),
    :meth:`indicators` the (T', B) indicator of that layout and its transpose (segment sums and
    their broadcast back to rows as small matmuls: deterministic on every device), ``present`` the
    present task ids and ``counts`` their sample counts.
    """

    def __init__(self) -> None:
        self.rows: Tensor | None = None
        self.present: list[int] = []
        self.counts: list[int] = []
        self._onehot: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    @property
    def active(self) -> bool:
        return self.rows is not None

    @property
    def batch(self) -> int:
        return 0 if self.rows is None else int(self.rows.shape[0])

    def set(self, task: Tensor) -> None:
        """Per-task statistics for a batch with task ids ``task`` (B,), which must be sorted."""
        task = task.flatten()
        if task.numel() > 1 and not bool((task[1:] >= task[:-1]).all()):
            raise ValueError(
                "per-task BatchNorm needs the batch sorted by task (sort_by_task): architectures may regroup "
                "a batch by task internally, and only a sorted batch keeps its row order"
            )
        ids, inverse, counts = torch.unique_consecutive(task, return_inverse=True, return_counts=True)
        self.present, self.counts = [int(t) for t in ids.tolist()], [int(n) for n in counts.tolist()]
        self.rows = inverse
        self._onehot = {}

    def clear(self) -> None:
        """Forget the layout: the layers fall back to whole-batch statistics."""
        self.rows, self.present, self.counts, self._onehot = None, [], [], {}

    @contextmanager
    def scope(self, task: Tensor | None) -> Iterator[TaskNormContext]:
        """``set(task)`` for the duration of the block (``None``: whole-batch statistics)."""
        if task is not None:
            self.set(task)
        try:
            yield self
        finally:
            self.clear()

    def indicators(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """The (T', B) task indicator and its (B, T') transpose, in ``like``'s dtype and device
        (built once per forward pass)."""
        assert self.rows is not None
        key = (like.dtype, like.device)
        cached = self._onehot.get(key)
        if cached is None:
            rows = self.rows.to(like.device)
            onehot = torch.zeros(len(self.present), rows.shape[0], dtype=like.dtype, device=like.device)
            onehot[rows, torch.arange(rows.shape[0], device=like.device)] = 1
            cached = self._onehot[key] = (onehot, onehot.T.contiguous())
        return cached


def sort_by_task(task: Tensor) -> Tensor | None:
    """The stable order that sorts ``task`` ascending, or ``None`` when it already is sorted."""
    if task.numel() < 2 or bool((task[1:] >= task[:-1]).all()):
        return None
    return torch.argsort(task, stable=True)


class _SlicedBatchNormFunction(torch.autograd.Function):
    """``y = gamma (x - mu_t) / sqrt(sigma2_t + eps) + beta`` with per-task statistics (module
    docstring), computed by PyTorch's native BatchNorm kernels on each task's contiguous rows (the
    batch is sorted by task): one ``native_batch_norm`` and one ``native_batch_norm_backward`` per
    present task. On CPU this costs about what one plain BatchNorm over the batch costs (measured in
    ``scripts/bench_weighting.py``); a formulation with segment-sum matmuls paid several extra passes.
    ``onehot``/``spread`` (the context's task indicators) stay on the node for ``weighting.pertask``.

    With ``record_per_sample`` the backward keeps the per-task affine gradients on the node
    (``per_task = (dgamma (T', C), dbeta (T', C))``): the native backward yields them directly.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, onehot: Tensor, spread: Tensor, eps: float,
        counts: tuple[int, ...],
    ) -> tuple[Tensor, Tensor, Tensor]:
        outs, means, invstds, start = [], [], [], 0
        for n in counts:
            out, mean, invstd = torch.ops.aten.native_batch_norm(x[start: start + n], weight, bias, None, None, True, 0.0, eps)
            outs.append(out)
            means.append(mean)
            invstds.append(invstd)
            start += n
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        mean_t, invstd_t = torch.stack(means), torch.stack(invstds)
        var_t = invstd_t.pow(-2) - eps  # biased, as BatchNorm normalises
        ctx.save_for_backward(x, weight, mean_t, invstd_t)
        ctx.onehot, ctx.spread, ctx.positions, ctx.counts, ctx.eps = onehot, spread, x[0, 0].numel(), counts, eps
        ctx.task_norm = True  # how weighting.pertask recognises this node
        ctx.record_per_sample = False
        ctx.per_sample = None
        ctx.per_task = None
        ctx.mark_non_differentiable(mean_t, var_t)
        return y, mean_t, var_t

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean_t, invstd_t = ctx.saved_tensors
        affine = weight is not None
        need_x = ctx.needs_input_grad[0]
        gxs, gws, gbs, start = [], [], [], 0
        gy = gy.contiguous()
        for i, n in enumerate(ctx.counts):
            rows = slice(start, start + n)
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                gy[rows], x[rows], weight, None, None, mean_t[i], invstd_t[i], True, ctx.eps, [need_x, True, True]
            )
            gxs.append(gx)
            gws.append(gw)
            gbs.append(gb)
            start += n
        if ctx.record_per_sample:
            ctx.per_task = (torch.stack(gws), torch.stack(gbs))  # sum_l g xhat and sum_l g over each task's rows
        gx = None if not need_x else (gxs[0] if len(gxs) == 1 else torch.cat(gxs))
        gw = torch.stack(gws).sum(0) if affine and ctx.needs_input_grad[1] else None
        gb = torch.stack(gbs).sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None, None


class TaskBatchNorm:
    """Mixin over ``nn.BatchNorm{1,2,3}d``: per-task statistics while a :class:`TaskNormContext` is set."""

    context: TaskNormContext

    def forward(self, x: Tensor) -> Tensor:
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        ctx = self.context
        if not (bn.training and ctx.active) or x.shape[0] != ctx.batch:
            if bn.training and ctx.active:
                raise RuntimeError(
                    f"per-task BatchNorm got {x.shape[0]} rows but the task context describes {ctx.batch} samples; "
                    "only layers that see the whole (task-sorted) batch can be converted"
                )
            return super().forward(x)  # type: ignore[misc]
        bn._check_input_dim(x)
        onehot, spread = ctx.indicators(x)
        y, mean_t, var_t = _SlicedBatchNormFunction.apply(x, bn.weight, bn.bias, onehot, spread, bn.eps, tuple(ctx.counts))
        if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
            positions = x[0, 0].numel()
            self._update_running(mean_t, var_t, [n * positions for n in ctx.counts])
        return y

    @torch.no_grad()
    def _update_running(self, mean_t: Tensor, var_t: Tensor, counts: list[int]) -> None:
        """The T' sequential momentum updates (module docstring) as one weighted sum per buffer;
        ``counts[i]`` = N_t of the i-th present task (values per channel)."""
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
        keep = [i for i, n in enumerate(counts) if n > 1]
        if not keep:
            return
        tracked = int(bn.num_batches_tracked)
        # r <- (1 - f_i) r + f_i s_i, i = 1..k  ==  r prod_i (1 - f_i) + sum_i f_i prod_{j > i} (1 - f_j) s_i
        factors = []
        for i in range(len(keep)):
            f = bn.momentum if bn.momentum is not None else 1.0 / (tracked + i + 1)
            factors.append(float(f))
        coef, carry = [0.0] * len(keep), 1.0
        for i in range(len(keep) - 1, -1, -1):
            coef[i] = factors[i] * carry
            carry *= 1.0 - factors[i]
        if len(keep) < len(counts):
            idx = torch.tensor(keep, device=mean_t.device)
            mean_t, var_t = mean_t[idx], var_t[idx]
        w = torch.tensor(coef, dtype=mean_t.dtype, device=mean_t.device)
        n = torch.tensor([counts[i] for i in keep], dtype=var_t.dtype, device=var_t.device)
        unbiased = var_t * (n / (n - 1)).unsqueeze(1)
        rm, rv = bn.running_mean, bn.running_var
        rm.mul_(carry).add_((w @ mean_t).to(rm.dtype))
        rv.mul_(carry).add_((w @ unbiased).to(rv.dtype))
        bn.num_batches_tracked.add_(len(keep))


class TaskBatchNorm1d(TaskBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with per-task statistics (see :class:`TaskBatchNorm`)."""


class TaskBatchNorm2d(TaskBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with per-task statistics (see :class:`TaskBatchNorm`)."""


class TaskBatchNorm3d(TaskBatchNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with per-task statistics (see :class:`TaskBatchNorm`)."""


_CONVERT: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: TaskBatchNorm1d, nn.BatchNorm2d: TaskBatchNorm2d, nn.BatchNorm3d: TaskBatchNorm3d,
}


def to_task_norm(bn: nn.Module, context: TaskNormContext) -> nn.Module:
    """A task-statistics twin of ``bn`` holding the *same* parameters and buffers (no copy)."""
    cls = _CONVERT[type(bn)]
    twin = cls.__new__(cls)
    twin.__dict__.update(bn.__dict__)  # parameters, buffers, hooks, hyper-parameters: shared, not copied
    twin.context = context
    return twin


def replace_modules(module: nn.Module, twin: Callable[[nn.Module], nn.Module | None], skip: tuple[nn.Module, ...] = ()) -> int:
    """Replace, in place, every module below ``module`` (outside the ``skip`` subtrees) for which
    ``twin`` returns a module by that module (its children are not visited); returns how many."""
    skipped = {id(m) for m in skip}

    def visit(parent: nn.Module) -> int:
        replaced = 0
        for name, child in list(parent.named_children()):
            if id(child) in skipped:
                continue
            new = twin(child)
            if new is not None:
                setattr(parent, name, new)
                replaced += 1
            else:
                replaced += visit(child)
        return replaced

    return 0 if id(module) in skipped else visit(module)


def convert_batchnorm(module: nn.Module, context: TaskNormContext, skip: tuple[nn.Module, ...] = ()) -> int:
    """Replace, in place, every plain ``nn.BatchNorm{1,2,3}d`` below ``module`` (outside the ``skip``
    subtrees) by its :class:`TaskBatchNorm` twin bound to ``context``; returns how many were replaced."""
    return replace_modules(module, lambda child: to_task_norm(child, context) if type(child) in _CONVERT else None, skip)


def task_norm_layers(module: nn.Module) -> list[TaskBatchNorm]:
    """Every :class:`TaskBatchNorm` below ``module``."""
    return [m for m in module.modules() if isinstance(m, TaskBatchNorm)]


@contextmanager
def task_norm_rows(module: nn.Module, task: Tensor, rows: Tensor | None) -> Iterator[None]:
    """Per-task BatchNorm (``trainer.bn_stats=per_task``) for a forward of ``module`` over the samples ``rows``.

    The algorithm describes the whole (task-sorted) batch ``task`` to the converted layers; a
    branch run on a subset of it (a task's own layer4 or attention path) would not match. For
    the duration of the block the active contexts of ``module``'s layers describe ``task[rows]``
    (``rows`` ascending keeps it sorted), then the whole batch again. Nothing happens without
    converted layers, without an active context, or when ``rows`` is None (the whole batch).
    """
    contexts = {}
    if rows is not None and rows.numel() != task.numel():
        for m in module.modules():
            ctx = getattr(m, "context", None) if isinstance(m, TaskBatchNorm) else None
            if ctx is not None and ctx.active and ctx.batch == task.numel():
                contexts[id(ctx)] = ctx
    for ctx in contexts.values():
        ctx.set(task[rows])
    try:
        yield
    finally:
        for ctx in contexts.values():
            ctx.set(task)
