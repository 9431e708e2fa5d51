"""The task-kind contract: what a kind of task (classification, segmentation, depth, normal) owns.

A :class:`TaskKind` knows, for the tasks of its kind,

- the **loss** of a batch (``loss(spec, output, target)``: a scalar, the mean over the batch's
  valid elements; exactly zero with a gradient path, never NaN, when the batch has none);
- a **metric accumulator** (``accumulator(spec)``) that sees a whole split batch by batch and
  computes the split's metrics at the end (a confusion matrix for mIoU, pooled pixel errors,
  every pixel's angle error for a median), so metrics never depend on the batch size;
- its **metrics** (``metrics``: name, the paper's column label, direction), which evaluation,
  model selection, the console, the loggers, the records and the tables read instead of
  assuming one accuracy per task;
- whether its predictions are **dense** (per pixel, from a feature map) and how many output
  channels a head needs (``out_channels``), and the head's **output activation** (the authors'
  PSP heads emit log-probabilities for segmentation and unit vectors for normals);
- the **target check** (``check_target``) that turns a malformed target into one clear line.

Kinds register by name in :data:`molabench.tasks.TASK_KINDS`; ``kind_of(spec)`` finds a task's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from molabench.data.base import TaskSpec


@dataclass(frozen=True)
class Metric:
    """One reported metric of a task kind.

    ``name`` is the key in records (``metrics[split][task][name]``); ``label`` the paper's column
    label (``mIoU``, ``AbsErr``, ``11.25`` ...); ``higher_is_better`` its direction (what Δm% and
    model selection need).
    """

    name: str
    label: str
    higher_is_better: bool


class Accumulator(Protocol):
    """Sees every batch of one split for one task, then computes that split's metrics."""

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add one batch: ``output`` as the head emits it, ``target`` as the data gives it."""
        ...

    def compute(self) -> dict[str, float]:
        """``metric name -> value`` for every metric of the kind (values may be NaN where a metric
        is undefined, e.g. mIoU with a class absent from the split; ``notes()`` then says why)."""
        ...

    def notes(self) -> list[str]:
        """Human-readable remarks about the computed metrics (e.g. ``class 7 absent: IoU undefined``)."""
        ...

    # Optional, for evaluation under torchrun (``engine.distributed``): ``reduce(group)`` merges, in
    # place, every rank's accumulated state (sums, counts, a confusion matrix, per-pixel errors) so
    # that ``compute`` gives the metrics of the whole split. A kind whose accumulator lacks it is
    # evaluated on the whole split by every rank instead.


class TaskKind:
    """Base class of task kinds; one subclass per kind, one module per subclass."""

    #: registry name, equal to ``TaskSpec.kind``
    name: str = ""
    #: per-pixel predictions: heads read a feature map and return (B, C, H, W) at input size
    dense: bool = False
    #: reported metrics, in table order
    metrics: tuple[Metric, ...] = ()
    #: the metric the console shows first and single-metric model selection uses
    primary: str = ""

    def out_channels(self, spec: TaskSpec) -> int:
        """Channels of a head's output for task ``spec``."""
        raise NotImplementedError

    def check_spec(self, spec: TaskSpec) -> None:
        """Raise a one-line :class:`~molabench.errors.ConfigError` for an impossible task
        (e.g. a classification or segmentation task with no class)."""

    def activate(self, output: Tensor) -> Tensor:
        """The output activation of the authors' heads (identity by default)."""
        return output

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def accumulator(self, spec: TaskSpec) -> Accumulator:
        raise NotImplementedError

    def loss_count(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor | int:
        """How many elements :meth:`loss` averages over in this batch (its samples; dense kinds: valid
        pixels). Under torchrun the global loss of a task is the count-weighted mean of the ranks'
        (``engine.distributed``)."""
        return int(output.shape[0])

    def check_target(self, spec: TaskSpec, output: Tensor, target: Tensor) -> None:
        """Raise a one-line :class:`~molabench.errors.DataError` when ``target`` cannot be a
        target of ``output`` (wrong shape, dtype or range)."""

    # -------------------------------------------------------------- derived helpers
    def higher_is_better(self) -> dict[str, bool]:
        return {m.name: m.higher_is_better for m in self.metrics}

    def labels(self) -> Mapping[str, str]:
        return {m.name: m.label for m in self.metrics}
