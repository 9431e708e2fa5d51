"""Semantic segmentation: per-pixel cross-entropy; mIoU and pixel accuracy (%) from the split's confusion matrix.

    L       = Σ_{p: y_p ≠ -1} CE(z_p, y_p) / #{p: y_p ≠ -1}        (pixels pooled over the batch)
    M_ij    = #{p: y_p = i, argmax z_p = j}                        (over the split, labels in [0, C))
    IoU_c   = M_cc / (Σ_j M_cj + Σ_i M_ic − M_cc)
    mIoU    = 100 · (1/C) Σ_c IoU_c                                (plain mean: NaN when a class's union is empty)
    PixAcc  = 100 · Σ_c M_cc / Σ_ij M_ij

Label −1 marks ignored pixels. The module also holds :func:`check_dense_target`, the shape check
shared by the dense kinds (segmentation, depth, normal).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from molabench.data.base import TaskSpec
from molabench.errors import ConfigError, DataError
from molabench.tasks import TASK_KINDS
from molabench.tasks.base import Metric, TaskKind

IGNORE = -1


def check_dense_target(spec: TaskSpec, output: Tensor, target: Tensor, expected: str, dims: int) -> None:
    """Raise a one-line :class:`DataError` unless ``target`` has ``dims`` dimensions, ``output``'s batch
    size and ``output``'s height and width. ``expected`` describes the target (e.g. ``float (B, 1, H, W)``)."""
    if target.dim() != dims:
        raise DataError(
            f"task {spec.name!r} ({spec.kind}) needs a {expected} target, got shape {tuple(target.shape)}; "
            "is the task's kind right?"
        )
    if target.shape[0] != output.shape[0]:
        raise DataError(
            f"task {spec.name!r} ({spec.kind}): the prediction holds {output.shape[0]} images but the target "
            f"{target.shape[0]}; every image needs one target"
        )
    if tuple(target.shape[-2:]) != tuple(output.shape[-2:]):
        (h, w), (th, tw) = output.shape[-2:], target.shape[-2:]
        raise DataError(
            f"task {spec.name!r} ({spec.kind}): the prediction is {h}x{w} but the target is {th}x{tw}; image "
            "height and width must be multiples of the backbone's output stride"
        )


class ConfusionAccumulator:
    """A C×C int64 confusion matrix (rows: ground truth, columns: arg-max prediction) over the split."""

    def __init__(self, spec: TaskSpec) -> None:
        self.name = spec.name
        self.num_classes = spec.num_classes
        self.matrix: Tensor | None = None  # created on the first batch's device

    def update(self, output: Tensor, target: Tensor) -> None:
        c = self.num_classes
        if self.matrix is None:
            self.matrix = torch.zeros(c * c, dtype=torch.int64, device=output.device)
        target = target.to(output.device)
        labelled = (target >= 0) & (target < c)
        pred = output.detach().argmax(dim=1)
        index = c * target[labelled] + pred[labelled]
        self.matrix += torch.bincount(index, minlength=c * c)

    def _matrix(self) -> Tensor:
        c = self.num_classes
        if self.matrix is None:
            return torch.zeros(c, c, dtype=torch.float64)
        return self.matrix.view(c, c).cpu().to(torch.float64)

    def reduce(self, group: Any) -> None:
        """Sum the confusion matrices over the ranks (``engine.distributed``)."""
        c = self.num_classes
        mine = self.matrix if self.matrix is not None else torch.zeros(c * c, dtype=torch.int64)
        self.matrix = group.all_reduce(mine)

    def iou(self) -> Tensor:
        """``IoU_c`` of every class (NaN where the class's union is empty), float64."""
        m = self._matrix()
        inter = m.diagonal()
        return inter / (m.sum(dim=1) + m.sum(dim=0) - inter)

    def compute(self) -> dict[str, float]:
        m = self._matrix()
        total = m.sum()
        miou = 100.0 * float(self.iou().mean()) if self.num_classes else float("nan")
        pix_acc = 100.0 * float(m.diagonal().sum() / total) if total > 0 else float("nan")
        return {"miou": miou, "pix_acc": pix_acc}

    def notes(self) -> list[str]:
        m = self._matrix()
        if m.sum() == 0:
            return [f"{self.name}: no labelled pixel in the split: mIoU and PixAcc undefined (NaN)"]
        absent = torch.nonzero(self.iou().isnan()).flatten().tolist()
        if not absent:
            return []
        return [
            f"{self.name}: classes {absent} absent from the split and never predicted: IoU undefined, "
            "mIoU is NaN (as the reference codes)"
        ]


@TASK_KINDS.register("segmentation")
class Segmentation(TaskKind):
    """``L = Σ_{y_p≠-1} CE(z_p, y_p) / #{y_p≠-1}``; mIoU (plain mean of ``IoU_c``) and PixAcc, in %."""

    name = "segmentation"
    dense = True
    metrics = (Metric("miou", "mIoU", higher_is_better=True), Metric("pix_acc", "PixAcc", higher_is_better=True))
    primary = "miou"

    def out_channels(self, spec: TaskSpec) -> int:
        return spec.num_classes

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.num_classes < 1:
            raise ConfigError(
                f"segmentation task {spec.name!r} has no class (num_classes={spec.num_classes}); "
                "give it the number of label classes (labels 0..C-1, -1 = ignore)"
            )

    def activate(self, output: Tensor) -> Tensor:
        """Log-probabilities (``log_softmax`` over channels); the loss and metrics are unchanged by it."""
        return F.log_softmax(output, dim=1)

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy averaged over the batch's non-ignored pixels; 0 (with a graph) when there is none."""
        total = F.cross_entropy(output, target, ignore_index=IGNORE, reduction="sum")
        return total / (target != IGNORE).sum().clamp(min=1)

    def accumulator(self, spec: TaskSpec) -> ConfusionAccumulator:
        return ConfusionAccumulator(spec)

    def loss_count(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        return (target != IGNORE).sum()

    def check_target(self, spec: TaskSpec, output: Tensor, target: Tensor) -> None:
        check_dense_target(spec, output, target, "int64 (B, H, W) label map (-1 = ignore)", dims=3)
        if target.dtype != torch.int64:
            raise DataError(
                f"task {spec.name!r} (segmentation) needs int64 labels, got {target.dtype}; "
                "convert the label maps with .long()"
            )
        if target.numel():
            low, high = (int(v) for v in torch.aminmax(target))
            if low < IGNORE or high >= spec.num_classes:
                raise DataError(
                    f"task {spec.name!r} (segmentation) has labels in {low}..{high} but its "
                    f"{spec.num_classes} classes allow -1..{spec.num_classes - 1} (-1 = ignore); "
                    "fix the label maps or the task's num_classes"
                )
