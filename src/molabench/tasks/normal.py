"""Surface normal estimation: cosine loss and angle-error statistics over valid pixels.

    V       = {p: n_x + n_y + n_z ≠ 0}                       (missing normals are (0, 0, 0); the reference
                                                              codes' test, kept: a sum of exactly 0 is "missing")
    ŷ_p     = z_p / ‖z_p‖                                    (the prediction, L2-normalised; targets as given)
    L       = 1 − Σ_{p∈V} ⟨ŷ_p, n_p⟩ / |V|                   (pixels pooled over the batch)
    e_p     = degrees(arccos(clip(⟨ŷ_p, n_p⟩, −1, 1)))       (every valid pixel of the split)
    Mean    = mean_p e_p;  Median = median_p e_p             (numpy's median: for an even count, the mean
                                                              of the two middle values)
    11.25, 22.5, 30 = #{e_p < t} / |V|                       (strict, fractions in [0, 1])

The split's errors are kept per pixel (float64, on the CPU) for the exact median.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from molabench.data.base import TaskSpec
from molabench.errors import DataError
from molabench.tasks import TASK_KINDS
from molabench.tasks.base import Metric, TaskKind
from molabench.tasks.depth import as_float64
from molabench.tasks.segmentation import check_dense_target

THRESHOLDS = (11.25, 22.5, 30.0)
_NAMES = ("within_11.25", "within_22.5", "within_30")


def valid_normals(target: Tensor) -> Tensor:
    """(B, H, W) mask of the pixels with a normal: components not summing to exactly 0."""
    return target.sum(dim=1) != 0


def median(values: Tensor) -> float:
    """numpy's median of a non-empty 1-D tensor: the middle value, or the mean of the two middle ones."""
    n = values.numel()
    upper = float(torch.kthvalue(values, n // 2 + 1).values)
    if n % 2:
        return upper
    lower = float(torch.kthvalue(values, n // 2).values)
    return (lower + upper) / 2.0


class AngleErrorAccumulator:
    """The angle error (degrees, float64, on the CPU) of every valid pixel of the split."""

    def __init__(self, spec: TaskSpec) -> None:
        self.name = spec.name
        self.errors: list[Tensor] = []

    def update(self, output: Tensor, target: Tensor) -> None:
        pred = F.normalize(as_float64(output), dim=1)
        gt = as_float64(target).to(pred.device)
        cosine = (pred * gt).sum(dim=1)[valid_normals(gt)]
        self.errors.append(torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0))).cpu())

    def reduce(self, group: Any) -> None:
        """Every rank's per-pixel errors, in rank order (the median needs them all; ``engine.distributed``)."""
        mine = torch.cat(self.errors) if self.errors else torch.zeros(0, dtype=torch.float64)
        self.errors = [e for e in group.all_gather_object(mine) if e.numel()]

    def compute(self) -> dict[str, float]:
        errors = torch.cat(self.errors) if self.errors else torch.zeros(0, dtype=torch.float64)
        n = errors.numel()
        if n == 0:
            return {name: float("nan") for name in ("mean", "median", *_NAMES)}
        values = {"mean": float(errors.sum()) / n, "median": median(errors)}
        for name, threshold in zip(_NAMES, THRESHOLDS, strict=True):
            values[name] = int((errors < threshold).sum()) / n
        return values

    def notes(self) -> list[str]:
        if any(e.numel() for e in self.errors):
            return []
        return [
            f"{self.name}: no valid normal pixel (components summing to ≠ 0) in the split: angle errors undefined (NaN)"
        ]


@TASK_KINDS.register("normal")
class Normal(TaskKind):
    """``L = 1 − Σ_V ⟨ŷ/‖ŷ‖, n⟩ / |V|``; angle error mean, median and fractions below 11.25°, 22.5°, 30°."""

    name = "normal"
    dense = True
    metrics = (
        Metric("mean", "Mean", higher_is_better=False),
        Metric("median", "Median", higher_is_better=False),
        Metric("within_11.25", "11.25", higher_is_better=True),
        Metric("within_22.5", "22.5", higher_is_better=True),
        Metric("within_30", "30", higher_is_better=True),
    )
    primary = "mean"

    def out_channels(self, spec: TaskSpec) -> int:
        return 3

    def activate(self, output: Tensor) -> Tensor:
        """Unit vectors (L2 normalisation over channels); the loss and metrics normalise again, unchanged."""
        return F.normalize(output, dim=1)

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        """``1 − mean cosine`` over the batch's valid pixels, as ``Σ_V (1 − cos) / |V|``; 0 (with a graph)
        when there is none."""
        valid = valid_normals(target)
        cosine = (F.normalize(output, dim=1) * target).sum(dim=1)
        count = valid.sum()
        return (count - torch.where(valid, cosine, 0.0).sum()) / count.clamp(min=1)

    def accumulator(self, spec: TaskSpec) -> AngleErrorAccumulator:
        return AngleErrorAccumulator(spec)

    def loss_count(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        return valid_normals(target).sum()

    def check_target(self, spec: TaskSpec, output: Tensor, target: Tensor) -> None:
        check_dense_target(spec, output, target, "float (B, 3, H, W) normal map ((0, 0, 0) = missing)", dims=4)
        if target.shape[1] != 3:
            raise DataError(
                f"task {spec.name!r} (normal) needs three normal channels (x, y, z), got {target.shape[1]} "
                f"(target shape {tuple(target.shape)}); give normals as (B, 3, H, W)"
            )
        if not target.is_floating_point():
            raise DataError(
                f"task {spec.name!r} (normal) needs float normals, got {target.dtype}; convert them with .float()"
            )
