"""Learning to Branch (Guo et al., ICML 2020), in LibMTL's one-phase ResNet form.

T columns, one full ResNet per task, levels 0..4 = stem, layer1..layer4. For i = 1..4 the input
of column t's level i is a sampled choice of parents among every column's level i-1 output:

    in_t^(i) = sum_j a[i, t, j] * out_j^(i-1)
    a[i, t, :] = gumbel_softmax(theta[i, t, :], tau, hard=True)     (one-hot, straight-through)

one draw per forward, shared by the batch. ``theta`` is (6, T, T), initialised to ones (slices 0
and 5 are never used): the architecture adds ``T*P + 6*T^2`` parameters. Task t's head reads
column t's layer4 map.

Schedule (epoch e of E, 0-based, given by :meth:`on_epoch_start`): warm-up while ``e < E / 100``,
during which ``a`` = 1 everywhere (every level sums all parents); then temperature

    tau(e) = (E / 20) / sqrt(e + 1)          (E = 200: 10 -> 0.71; E = 10: 0.5 -> 0.16)

Before the first ``on_epoch_start`` call the model is at epoch 0 of 1: warm-up (LibMTL's first
epoch is always warm-up).

Evaluation (``eval_mode``; after warm-up): ``argmax`` (default) takes the arg-max branching
``a[i, t, :] = onehot(argmax_j theta[i, t, j])``, deterministic; ``sampling`` draws as in training
(LibMTL, whose test metrics are stochastic). During warm-up evaluation also sums all parents (the
network as trained).

Routing (multi-input and domain settings): in training the straight-through gradient of
``theta[i, t, j]`` needs every parent's output, so every column runs through layer3 on every
sample and column t's layer4 on task t's samples (as Cross-Stitch); no unsampled parent is
skipped. In eval mode after warm-up no logit gradient is needed and the branching is one-hot:
a task-t sample runs only its ancestor chain (layer4 of column t, layer3 of its parent, ...: one
column per level), each (level, column) once on the union of the samples that use it.
``authors_routing: true`` runs every column on every sample. In eval mode all routings give the
same per-sample outputs.

Shared parameters: the whole encoder, columns and ``theta`` (LibMTL's ``get_share_params``);
task-specific: the heads. ``aux["branching"]`` holds the (6, T, T) weights ``a`` of the forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Forward, task_groups
from molabench.architectures.cross_stitch import STAGES, StageColumns, head_input
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder

EVAL_MODES: tuple[str, ...] = ("argmax", "sampling")


class LearningToBranch(StageColumns):
    """LTB (module docstring)."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        backbone: Callable[[], Encoder],
        head: Mapping[str, Any] | None = None,
        eval_mode: str = "argmax",
        authors_routing: bool = False,
    ) -> None:
        if eval_mode not in EVAL_MODES:
            raise ConfigError(f"method.architecture.eval_mode must be one of {', '.join(EVAL_MODES)} (ltb), got {eval_mode!r}")
        super().__init__(tasks, setting, backbone, head, authors_routing, "ltb")
        self.eval_mode = eval_mode
        self.branching_logits = nn.Parameter(torch.ones(6, self.num_tasks, self.num_tasks))
        self.epoch, self.epochs = 0, 1

    # ------------------------------------------------------------ schedule
    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        if epochs < 1 or epoch < 0:
            raise ConfigError(f"LTB needs 0 <= epoch and epochs >= 1 (trainer.epochs), got epoch {epoch} of {epochs}")
        self.epoch, self.epochs = int(epoch), int(epochs)

    @property
    def warming_up(self) -> bool:
        """True while ``epoch < epochs / 100``: every level sums all parents."""
        return self.epoch < self.epochs / 100

    @property
    def temperature(self) -> float:
        """``tau = (epochs / 20) / sqrt(epoch + 1)``."""
        return (self.epochs / 20) / math.sqrt(self.epoch + 1)

    def branching(self) -> Tensor:
        """The (6, T, T) weights ``a`` of one forward: ones (warm-up), a hard Gumbel-softmax draw
        (training, or ``eval_mode: sampling``) or the one-hot arg-max of the logits (evaluation)."""
        theta = self.branching_logits
        if self.warming_up:
            return torch.ones_like(theta)
        if self.training or self.eval_mode == "sampling":
            return F.gumbel_softmax(theta, tau=self.temperature, hard=True, dim=-1)
        return F.one_hot(theta.argmax(-1), theta.shape[-1]).to(theta.dtype)

    # ------------------------------------------------------------- forward
    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        a = self.branching()
        if not self.training and not self.warming_up and not self.authors_routing:
            fwd = self._chains(x, groups, a)
        else:
            fwd = self.run_columns(x, task, groups, [a[1], a[2], a[3], a[4]])
        fwd.aux["branching"] = a
        return fwd

    def _chains(self, x: Tensor, groups: list[Tensor | None], a: Tensor) -> Forward:
        """One-hot branching without logit gradients: each sample runs its task's ancestor chain only."""
        parent = a.argmax(-1).tolist()  # parent[i][c]: the column of level i-1 feeding column c at level i
        need: list[dict[int, Tensor]] = [{} for _ in range(5)]  # level -> column -> sample rows (ascending)
        for t, idx in enumerate(groups):
            if idx is None:
                continue
            column = t
            for level in range(4, -1, -1):
                rows = need[level].get(column)
                need[level][column] = idx if rows is None else torch.unique(torch.cat([rows, idx]))
                if level:
                    column = parent[level][column]
        outs: list[dict[int, tuple[Tensor, Tensor]]] = [{} for _ in range(5)]
        for column, rows in need[0].items():
            outs[0][column] = rows, self.columns[column].forward_stem(x[rows])
        for level in range(1, 5):
            for column, rows in need[level].items():
                p = parent[level][column]
                prows, pout = outs[level - 1][p]
                inp = pout[torch.searchsorted(prows, rows)] * a[level, column, p]  # a = 1: the same values as the full mix
                outs[level][column] = rows, self.columns[column].forward_stage(STAGES[level - 1], inp)
        outputs: list[Tensor | None] = []
        for t, (head, idx) in enumerate(zip(self.heads, groups, strict=True)):
            outputs.append(None if idx is None else head(head_input(outs[4][t][1], self.features)))
        return Forward(outputs, groups, None)

    def param_counts(self) -> dict[str, int]:
        return {"columns": len(self.columns), "branching": self.branching_logits.numel()}


ARCHITECTURES.register("ltb")(LearningToBranch)

__all__ = ["EVAL_MODES", "LearningToBranch"]
