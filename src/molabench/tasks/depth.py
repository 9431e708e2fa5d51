"""Depth estimation: L1 loss and absolute / relative errors over valid pixels (target ≠ 0).

    V       = {p: y_p ≠ 0}                                  (the release marks missing depth with 0)
    L       = Σ_{p∈V} |ŷ_p − y_p| / |V|                     (pixels pooled over the batch)
    AbsErr  = Σ_{p∈V} |ŷ_p − y_p| / |V|                     (pixels pooled over the whole split)
    RelErr  = Σ_{p∈V} |ŷ_p − y_p| / y_p / |V|

The split's sums are kept in float64 with an integer count, so a batch without a valid pixel
contributes nothing and the metrics do not depend on the batch size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from molabench.data.base import TaskSpec
from molabench.errors import DataError
from molabench.tasks import TASK_KINDS
from molabench.tasks.base import Metric, TaskKind
from molabench.tasks.segmentation import check_dense_target


def as_float64(x: Tensor) -> Tensor:
    """``x`` detached in float64, on its device where that device has float64 (CPU, CUDA), else on the CPU."""
    x = x.detach()
    if x.device.type not in ("cpu", "cuda"):
        x = x.cpu()
    return x.to(torch.float64)


class DepthErrorAccumulator:
    """Pooled absolute and relative errors over every valid pixel of the split."""

    def __init__(self, spec: TaskSpec) -> None:
        self.name = spec.name
        self.abs_sum: Tensor | None = None
        self.rel_sum: Tensor | None = None
        self.count: Tensor | None = None

    def update(self, output: Tensor, target: Tensor) -> None:
        pred = as_float64(output)
        gt = as_float64(target).to(pred.device)
        valid = gt != 0
        err = (pred - gt).abs()[valid]
        abs_sum, rel_sum, count = err.sum(), (err / gt[valid]).sum(), valid.sum()
        if self.abs_sum is None or self.rel_sum is None or self.count is None:
            self.abs_sum, self.rel_sum, self.count = abs_sum, rel_sum, count
        else:
            self.abs_sum, self.rel_sum, self.count = self.abs_sum + abs_sum, self.rel_sum + rel_sum, self.count + count

    def reduce(self, group: Any) -> None:
        """Sum the pooled errors and the pixel count over the ranks (``engine.distributed``)."""
        zero = torch.zeros((), dtype=torch.float64)
        mine = torch.stack([
            (self.abs_sum if self.abs_sum is not None else zero).detach().cpu().double(),
            (self.rel_sum if self.rel_sum is not None else zero).detach().cpu().double(),
            (self.count if self.count is not None else zero).detach().cpu().double(),
        ])
        total = group.all_reduce(mine)
        self.abs_sum, self.rel_sum, self.count = total[0], total[1], total[2].round().to(torch.int64)

    def _count(self) -> int:
        return int(self.count) if self.count is not None else 0

    def compute(self) -> dict[str, float]:
        n = self._count()
        if n == 0 or self.abs_sum is None or self.rel_sum is None:
            return {"abs_err": float("nan"), "rel_err": float("nan")}
        return {"abs_err": float(self.abs_sum) / n, "rel_err": float(self.rel_sum) / n}

    def notes(self) -> list[str]:
        if self._count():
            return []
        return [f"{self.name}: no valid depth pixel (target ≠ 0) in the split: AbsErr and RelErr undefined (NaN)"]


@TASK_KINDS.register("depth")
class Depth(TaskKind):
    """``L = Σ_{y≠0} |ŷ − y| / #{y≠0}``; AbsErr and RelErr pooled over the split's valid pixels."""

    name = "depth"
    dense = True
    metrics = (Metric("abs_err", "AbsErr", higher_is_better=False), Metric("rel_err", "RelErr", higher_is_better=False))
    primary = "abs_err"

    def out_channels(self, spec: TaskSpec) -> int:
        return 1

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        """Mean absolute error over the batch's valid pixels; 0 (with a graph) when there is none."""
        valid = target != 0
        total = torch.where(valid, (output - target).abs(), 0.0).sum()
        return total / valid.sum().clamp(min=1)

    def accumulator(self, spec: TaskSpec) -> DepthErrorAccumulator:
        return DepthErrorAccumulator(spec)

    def loss_count(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        return (target != 0).sum()

    def check_target(self, spec: TaskSpec, output: Tensor, target: Tensor) -> None:
        check_dense_target(spec, output, target, "float (B, 1, H, W) depth map (0 = missing)", dims=4)
        if target.shape[1] != 1:
            raise DataError(
                f"task {spec.name!r} (depth) needs one depth channel, got {target.shape[1]} "
                f"(target shape {tuple(target.shape)}); give depth as (B, 1, H, W)"
            )
        if not target.is_floating_point():
            raise DataError(
                f"task {spec.name!r} (depth) needs a float depth map, got {target.dtype}; convert it with .float()"
            )
