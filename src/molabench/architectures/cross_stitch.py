"""Cross-Stitch networks (Misra et al., CVPR 2016), in LibMTL's ResNet form.

T columns, one full ResNet per task (stem S0, stages S1..S4). After stages 1, 2 and 3 a
cross-stitch unit k (one T x T matrix of scalars alpha_k, shared over channels and positions)
mixes the columns' outputs; column t continues from

    x~_t = sum_j alpha_k[t, j] x_j            x_j = output of stage k+1 of column j, k = 0, 1, 2

and task t's head reads column t's layer4 map z_t. ``alpha`` is stored as (4, T, T) like LibMTL
(slice 3 is never used), so the architecture adds ``T*P + 4*T^2`` parameters (P: one backbone).

``init``: ``paper`` (default; a convex mix, alpha[t, t] = 0.9, alpha[t, j] = 0.1 / (T - 1), our
generalisation of the paper's two-task 0.9/0.1 to T > 2; 1.0 when T = 1) or ``ones`` (LibMTL and
the MoLA authors: all ones, which with identical ImageNet columns keeps stem..layer3 of every
column identical; docs/architectures.md, "Pitfall (symmetry)").

Routing (multi-input and domain settings): a task-t sample needs every column through layer3
(its stitched inputs mix all columns) but only column t's layer4: cost T*(S0..S3) + 1*S4.
``authors_routing: true`` runs every column, layer4 included, on every sample (the authors'
cost and layer4 BatchNorm statistics). Single-input: all T columns on every image. In eval mode
both routings give the same per-sample outputs.

Shared parameters (what gradient methods combine) are LibMTL's ``get_share_params``: the whole
encoder, columns and alpha; task-specific parameters are the heads.

:class:`StageColumns` (the T-column machinery with a mixing matrix in front of each stage) is
also the base of Learning to Branch (``ltb``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Architecture, Forward, task_groups
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder
from molabench.models.task_norm import task_norm_rows

STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
INITS: tuple[str, ...] = ("paper", "ones")


def stage_wise_encoder(encoder: Encoder, method: str) -> Encoder:
    """``encoder`` when it has the per-stage ResNet API (stem, layer1..layer4), else a one-line ConfigError."""
    if not encoder.has_feature_maps or tuple(encoder.stage_names) != STAGES:
        name = encoder.backbone_name
        raise ConfigError(
            f"method={method} is a stage-wise architecture (stem, layer1..layer4) and needs a ResNet backbone "
            f"(e.g. backbone=resnet18); backbone {name} has no stages"
        )
    return encoder


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"method.architecture.{name} must be true or false, got {value!r}")
    return value


def sit_out_singletons(groups: list[Tensor | None], positions: int) -> list[Tensor | None]:
    """Training with per-task branches: a task with a single sample whose branch ends on a 1 x 1 map
    sits out this step (a train-mode BatchNorm cannot normalise one value per channel), as Single-Task's."""
    if positions > 1:
        return groups
    return [None if idx is not None and idx.numel() < 2 else idx for idx in groups]


def head_input(z: Tensor, features: str) -> Tensor:
    """A head's input from a map ``z``: the map itself, or its global average (``pooled`` features)."""
    return z if features == "map" else torch.flatten(F.adaptive_avg_pool2d(z, 1), 1)


def _mix(outs: Sequence[Tensor], matrix: Tensor | None) -> list[Tensor]:
    """``[sum_j matrix[t, j] outs[j] for t]`` (``outs`` itself when ``matrix`` is None)."""
    if matrix is None:
        return list(outs)
    return list(torch.tensordot(matrix, torch.stack(list(outs)), dims=1).unbind(0))


class StageColumns(Architecture):
    """T ResNet columns (one per task); the input of column t's stage ``i`` is ``sum_j M_i[t, j] out_j``
    where ``out_j`` is column j's previous level (stem or stage) output and ``M_i = mixing()[i]``
    (None: column t's own output). Task t's head reads column t's layer4 map.

    Routing: every column through layer3 on every sample, column t's layer4 on task t's samples
    only (multi-input/domain, unless ``authors_routing``); single-input: everything on every sample.
    """

    sync_bn_safe = False  # task branches run shared BatchNorm layers on one task's rows (models.sync_norm)

    has_shared_representation = False

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        backbone: Callable[[], Encoder],
        head: Mapping[str, Any] | None,
        authors_routing: bool,
        method: str,
    ) -> None:
        super().__init__(tasks, setting, head)
        self.authors_routing = check_flag("authors_routing", authors_routing)
        if not self.tasks:
            raise ConfigError(f"method={method} needs at least one task")
        first = stage_wise_encoder(backbone(), method)
        self.columns = nn.ModuleList([first, *(backbone() for _ in self.tasks[1:])])
        self.heads = self.make_heads(first)
        reductions = [int(info["reduction"]) for info in first.feature_info]
        self.last_stride = max(1, reductions[3] // reductions[2])

    def mixing(self) -> list[Tensor | None]:
        """The four (T, T) matrices in front of layer1..layer4 (None: no mixing)."""
        raise NotImplementedError

    def _final_positions(self, layer3_out: Tensor) -> int:
        h, w = layer3_out.shape[-2:]
        return math.ceil(h / self.last_stride) * math.ceil(w / self.last_stride)

    def run_columns(self, x: Tensor, task: Tensor, groups: list[Tensor | None], mixing: list[Tensor | None]) -> Forward:
        """The forward pass with the given mixing matrices (class docstring)."""
        everyone = self.authors_routing or self.setting == "single_input"
        outs = [column.forward_stem(x) for column in self.columns]
        for name, matrix in zip(STAGES[:3], mixing[:3], strict=True):
            outs = [column.forward_stage(name, inp) for column, inp in zip(self.columns, _mix(outs, matrix), strict=True)]
        if self.training and not everyone:
            groups = sit_out_singletons(groups, self._final_positions(outs[0]))
        last = mixing[3]
        outputs: list[Tensor | None] = []
        for t, (column, head, idx) in enumerate(zip(self.columns, self.heads, groups, strict=True)):
            if idx is None:
                outputs.append(None)
                continue
            rows = None if everyone else idx
            parents = outs if rows is None else [o[rows] for o in outs]
            inp = parents[t] if last is None else torch.tensordot(last[t], torch.stack(parents), dims=1)
            with task_norm_rows(column, task, rows):
                z = column.forward_stage(STAGES[3], inp)
            if rows is None and self.setting != "single_input":
                z = z[idx]  # authors' routing: every sample went through every column
            outputs.append(head(head_input(z, self.features)))
        return Forward(outputs, groups, None)


class CrossStitch(StageColumns):
    """Cross-Stitch (module docstring): stitch units after layer1, layer2, layer3."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        backbone: Callable[[], Encoder],
        head: Mapping[str, Any] | None = None,
        init: str = "paper",
        authors_routing: bool = False,
    ) -> None:
        if init not in INITS:
            raise ConfigError(f"method.architecture.init must be one of {', '.join(INITS)} (cross_stitch), got {init!r}")
        super().__init__(tasks, setting, backbone, head, authors_routing, "cross_stitch")
        self.init = init
        self.stitch = nn.Parameter(initial_stitch(self.num_tasks, init).expand(4, -1, -1).clone())

    def mixing(self) -> list[Tensor | None]:
        return [None, self.stitch[0], self.stitch[1], self.stitch[2]]

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        return self.run_columns(x, task, task_groups(task, self.num_tasks, self.setting), self.mixing())

    def param_counts(self) -> dict[str, int]:
        return {"columns": len(self.columns), "stitch": self.stitch.numel()}


def initial_stitch(num_tasks: int, init: str) -> Tensor:
    """One (T, T) stitch matrix at initialisation: ``ones``, or ``paper`` (0.9 on the diagonal,
    0.1 / (T - 1) elsewhere; [[1.0]] for one task)."""
    if init == "ones":
        return torch.ones(num_tasks, num_tasks)
    if num_tasks == 1:
        return torch.ones(1, 1)
    eye = torch.eye(num_tasks)
    return 0.9 * eye + (0.1 / (num_tasks - 1)) * (1 - eye)


ARCHITECTURES.register("cross_stitch")(CrossStitch)

__all__ = [
    "CrossStitch", "StageColumns", "head_input", "initial_stitch", "sit_out_singletons", "stage_wise_encoder",
]
