"""BatchNorm statistics synchronised over the ranks of a ``torchrun`` launch (``trainer.sync_bn=true``).

Under data parallelism each rank holds a shard of the batch; a plain train-mode BatchNorm then
normalises with the statistics of that shard. :class:`SyncBatchNorm2d` (and its 1-D/3-D siblings)
normalises with the statistics of the whole global batch — of every task's rows on every rank with
``trainer.bn_stats=per_task`` (:mod:`molabench.models.task_norm`), of all rows otherwise — so N ranks
x B compute what one process computes with N x B. It works on every device whose process group can
all-gather and all-reduce (gloo on the CPU, NCCL on CUDA); ``torch.nn.SyncBatchNorm`` has no
per-task statistics and needs a GPU.

Forward, per group g (a task, or the whole batch) and channel c, from every rank's local
``(n_gc^r, mean_gc^r, M2_gc^r)`` (one all-gather, combined in rank order by Chan et al.'s pairwise
formula, as stable as a two-pass variance)::

    n_g = sum_r n_g^r,  mu_g = sum_r n_g^r mu_g^r / n_g,  sigma2_g = sum_r (M2_g^r + n_g^r (mu_g^r - mu_g)^2) / n_g

Backward (one all-reduce of the local ``S_gc = sum g``, ``R_gc = sum g xhat``)::

    dL/dx = gamma / sqrt(sigma2_g + eps) * (g - S_g / n_g - xhat R_g / n_g)

with the global sums, while ``dL/dgamma``, ``dL/dbeta`` stay this rank's share (the trainer sums
them over the ranks with every other gradient). Each rank back-propagates its share of the global
loss, so the summed gradients are those of the global batch. The per-task node keeps the layout
``weighting.pertask`` reads (saved ``x, weight, mean_t, invstd_t``, ``spread``, ``per_task``), so
gradient methods still get the per-task gradients in one backward.

Every rank must run every synchronised layer the same number of times per step on its whole
(local) batch: a layer run on one task's rows only (cross-stitch's and MTAN's task branches) could
run on one rank and not on another. Such architectures refuse ``sync_bn``
(``Architecture.sync_bn_safe``), and a layer called on another number of rows than the step's
batch raises instead of waiting forever for the other ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from molabench.models.task_norm import TaskBatchNorm, TaskNormContext, replace_modules

if TYPE_CHECKING:
    from molabench.engine.distributed import Distributed


class SyncScope:
    """The step's local batch size, shared by the synchronised layers of a model (set by the algorithm)."""

    def __init__(self) -> None:
        self.batch: int | None = None


def _shape(x: Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, counts: tuple[int, ...],
        slots: tuple[int, ...], num_groups: int, group: Distributed, onehot: Tensor | None, spread: Tensor | None, task_norm: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        C, positions = x.shape[1], x[0, 0].numel()
        pack = x.new_zeros((num_groups, 2 * C + 1))
        start = 0
        for n, slot in zip(counts, slots, strict=True):
            xs = x[start: start + n].transpose(0, 1).reshape(C, -1)
            mean = xs.mean(1)
            pack[slot, 0] = n * positions
            pack[slot, 1: C + 1] = mean
            pack[slot, C + 1:] = (xs - mean[:, None]).pow(2).sum(1)
            start += n
        gathered = group.all_gather(pack)
        total = torch.stack([p[:, 0] for p in gathered]).sum(0)  # (G,) values per channel of each group
        denom = total.clamp_min(1)[:, None]
        mean_all = sum(p[:, 0:1] * p[:, 1: C + 1] for p in gathered) / denom
        m2_all = sum(p[:, C + 1:] + p[:, 0:1] * (p[:, 1: C + 1] - mean_all).pow(2) for p in gathered)
        var_all = m2_all / denom  # biased, as BatchNorm normalises
        invstd_all = torch.rsqrt(var_all + eps)
        index = torch.tensor(slots, device=x.device)
        mean_t, invstd_t = mean_all[index], invstd_all[index]
        outs, start = [], 0
        shape = _shape(x)
        for i, n in enumerate(counts):
            rows = x[start: start + n]
            scale = invstd_t[i] if weight is None else invstd_t[i] * weight
            shift = -mean_t[i] * scale if bias is None else bias - mean_t[i] * scale
            outs.append(rows * scale.view(shape) + shift.view(shape))
            start += n
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        ctx.save_for_backward(x, weight, mean_t, invstd_t)
        ctx.onehot, ctx.spread, ctx.positions, ctx.counts, ctx.eps = onehot, spread, positions, counts, eps
        ctx.slots, ctx.num_groups, ctx.group, ctx.total = slots, num_groups, group, total
        ctx.task_norm = task_norm  # per-task statistics: weighting.pertask reads this node like task_norm's
        ctx.record_per_sample = False
        ctx.per_sample = None
        ctx.per_task = None
        ctx.mark_non_differentiable(mean_all, var_all, total)
        return y, mean_all, var_all, total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean_t, invstd_t = ctx.saved_tensors
        C = x.shape[1]
        shape = _shape(x)
        dims = [0, *range(2, x.dim())]
        gy = gy.contiguous()
        local_s, local_r, xhats, start = [], [], [], 0
        for i, n in enumerate(ctx.counts):
            rows = slice(start, start + n)
            xhat = (x[rows] - mean_t[i].view(shape)) * invstd_t[i].view(shape)
            local_s.append(gy[rows].sum(dims))
            local_r.append((gy[rows] * xhat).sum(dims))
            xhats.append(xhat)
            start += n
        if ctx.record_per_sample:
            ctx.per_task = (torch.stack(local_r), torch.stack(local_s))
        gx = None
        if ctx.needs_input_grad[0]:
            pack = gy.new_zeros((ctx.num_groups, 2 * C))
            for i, slot in enumerate(ctx.slots):
                pack[slot, :C], pack[slot, C:] = local_s[i], local_r[i]
            pack = ctx.group.all_reduce(pack)  # the global S and R of every group
            n_all = ctx.total.clamp_min(1)[:, None].to(pack)
            mean_s, mean_r = pack[:, :C] / n_all, pack[:, C:] / n_all
            parts, start = [], 0
            for i, (n, slot) in enumerate(zip(ctx.counts, ctx.slots, strict=True)):
                rows = slice(start, start + n)
                scale = invstd_t[i] if weight is None else invstd_t[i] * weight
                parts.append(scale.view(shape) * (gy[rows] - mean_s[slot].view(shape) - xhats[i] * mean_r[slot].view(shape)))
                start += n
            gx = parts[0] if len(parts) == 1 else torch.cat(parts)
        gw = torch.stack(local_r).sum(0) if weight is not None and ctx.needs_input_grad[1] else None
        gb = torch.stack(local_s).sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None, None, None, None, None, None


class SyncBatchNorm(TaskBatchNorm):
    """Mixin over ``nn.BatchNorm{1,2,3}d``: in train mode, statistics over every rank's rows
    (per task while a :class:`TaskNormContext` is set, of the whole batch otherwise); in eval mode
    plain BatchNorm with the running statistics."""

    group: Distributed
    num_tasks: int
    scope: SyncScope

    def forward(self, x: Tensor) -> Tensor:
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        if not bn.training:
            return nn.modules.batchnorm._BatchNorm.forward(bn, x)
        ctx = self.context
        expected = ctx.batch if ctx.active else self.scope.batch
        if expected is not None and x.shape[0] != expected:
            raise RuntimeError(
                f"a BatchNorm layer synchronised over the ranks (trainer.sync_bn=true) got {x.shape[0]} rows in a step of "
                f"{expected}: it runs on part of the batch, which other ranks may not hold; use trainer.sync_bn=false"
            )
        bn._check_input_dim(x)
        if ctx.active:
            onehot, spread = ctx.indicators(x)
            counts, slots, groups = tuple(ctx.counts), tuple(ctx.present), self.num_tasks
        else:
            onehot = spread = None
            counts, slots, groups = (int(x.shape[0]),), (0,), 1
        y, mean_all, var_all, total = _SyncBatchNormFunction.apply(
            x, bn.weight, bn.bias, bn.eps, counts, slots, groups, self.group, onehot, spread, ctx.active,
        )
        if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
            present = [g for g in range(groups) if float(total[g]) > 0]
            index = torch.tensor(present, device=x.device)
            self._update_running(mean_all[index], var_all[index], [int(total[g]) for g in present])
        return y


class SyncBatchNorm1d(SyncBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with statistics over the ranks (see :class:`SyncBatchNorm`)."""


class SyncBatchNorm2d(SyncBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with statistics over the ranks (see :class:`SyncBatchNorm`)."""


class SyncBatchNorm3d(SyncBatchNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with statistics over the ranks (see :class:`SyncBatchNorm`)."""


_SYNC: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d, nn.BatchNorm3d: SyncBatchNorm3d,
}


def _plain_type(module: nn.Module) -> type[nn.Module] | None:
    for plain in _SYNC:
        if isinstance(module, plain):
            return plain
    return None


def convert_sync_batchnorm(
    module: nn.Module, group: Distributed, num_tasks: int, scope: SyncScope, skip: tuple[nn.Module, ...] = (),
) -> int:
    """Replace, in place, every BatchNorm below ``module`` outside the ``skip`` subtrees (plain or per-task)
    by its synchronised twin holding the *same* parameters and buffers; returns how many were replaced."""

    def twin(child: nn.Module) -> nn.Module | None:
        plain = _plain_type(child)
        if plain is None or isinstance(child, SyncBatchNorm):
            return None
        cls = _SYNC[plain]
        made = cls.__new__(cls)
        made.__dict__.update(child.__dict__)
        if not isinstance(child, TaskBatchNorm):
            made.context = TaskNormContext()  # never set: whole-batch statistics
        made.group, made.num_tasks, made.scope = group, num_tasks, scope
        return made

    return replace_modules(module, twin, skip)


def count_batchnorm(module: nn.Module) -> int:
    """BatchNorm layers below ``module`` (any kind)."""
    return sum(1 for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
