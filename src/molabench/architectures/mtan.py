"""MTAN: Multi-Task Attention Network (Liu et al., CVPR 2019), in LibMTL's ResNet form.

One shared ResNet; stage i (layer i+1, i = 0..3, c_i = (64, 128, 256, 512)[i] * e channels, e the
block expansion: 1 for BasicBlock/ResNet-18, 4 for Bottleneck/ResNet-50) is split into its blocks
but the last, giving u_i, and its last block, giving p_i (the shared trunk: u_0 = S_0[:-1](stem(x)),
p_i = S_i[-1](u_i), u_{i+1} = S_{i+1}[:-1](p_i)). Task t attends to each stage:

    a_0^t = att_0^t(u_0)                         a_i^t = att_i^t([u_i ; down(â_{i-1}^t)])   (i >= 1)
    â_i^t = a_i^t ⊙ p_i,   then for i < 3:       â_i^t <- f_i(â_i^t)
    att_i^t = sigmoid(BN(conv1x1_{c_i/e -> c_i}(ReLU(BN(conv1x1_{in -> c_i/e}(.))))))   (convs with bias)
              in = c_0 at stage 0, 2 c_i after
    f_i = BasicBlock | Bottleneck (c_i -> c_{i+1}, stride 1, 1x1 conv + BN projection shortcut),
          one per stage, SHARED by all tasks
    down = 2 x 2 max-pool (ceil mode) after stage 0 always, later only when â's size differs from
           u_i's (never with dilated backbones)

and task t's head reads z_t = â_3^t (c_3 channels at the backbone's output size). Parameters:
P + F + T*A, F (the three f blocks) = 4,822,272 / 7,931,392 and A (one task's four attention
modules) = 1,046,144 / 4,175,936 for ResNet-18 / ResNet-50.

Deviations from LibMTL (documented): ``down`` uses ``ceil_mode`` so that odd map sizes (e.g.
7 x 7 after a 28-pixel input) meet the stride-2 stage's ceil(n/2) (identical for even sizes,
where LibMTL's floor pooling works); the shared f blocks count as shared parameters (LibMTL's
``get_share_params`` lists the stem and stages only).

Routing: the trunk runs once on the whole batch. Multi-input and domain settings: each sample runs
its own task's attention branch only (the batch grouped by task); every f_i, shared, runs once
over the batch, sample s carrying its own task's â (the trunk's BatchNorm convention: whole-batch
statistics with ``trainer.bn_stats=batch``, each task's own with ``per_task`` = LibMTL's per-task
forwards). Single-input: all T branches on every image, f_i once per task (LibMTL).
``authors_routing: true`` runs every branch on every sample (f_i once per task on the whole
batch). In eval mode all routings give the same per-sample outputs.

Shared parameters: stem + stages + the f blocks; task-specific: the attention modules and heads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Architecture, Forward, task_groups
from molabench.architectures.cross_stitch import (
    STAGES,
    check_flag,
    head_input,
    sit_out_singletons,
    stage_wise_encoder,
)
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder
from molabench.models.task_norm import task_norm_rows


def attention_unit(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    """``sigmoid(BN(conv1x1(ReLU(BN(conv1x1(x))))))``, both convolutions with bias."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, kernel_size=1),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, kernel_size=1),
        nn.BatchNorm2d(out_channels),
        nn.Sigmoid(),
    )


def shared_block(block_type: type[nn.Module], expansion: int, in_channels: int, out_channels: int) -> nn.Module:
    """A residual block of the backbone's type, ``in_channels -> out_channels``, stride 1, with a
    1x1 convolution + BN projection shortcut (torchvision signature ``(inplanes, planes, stride, downsample)``)."""
    projection = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), nn.BatchNorm2d(out_channels))
    return block_type(in_channels, out_channels // expansion, 1, projection)


def _down(x: Tensor) -> Tensor:
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


class MTAN(Architecture):
    """MTAN (module docstring)."""

    sync_bn_safe = False  # task branches run shared BatchNorm layers on one task's rows (models.sync_norm)

    has_shared_representation = False

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        backbone: Callable[[], Encoder],
        head: Mapping[str, Any] | None = None,
        authors_routing: bool = False,
    ) -> None:
        super().__init__(tasks, setting, head)
        self.authors_routing = check_flag("authors_routing", authors_routing)
        if not self.tasks:
            raise ConfigError("method=mtan needs at least one task")
        encoder = stage_wise_encoder(backbone(), "mtan")
        expansion = int(encoder.block_expansion)
        channels = [int(info["num_chs"]) for info in encoder.feature_info]
        short = [name for name in STAGES if len(encoder.stage_blocks(name)) < 2]
        if short or any(c % expansion for c in channels):
            raise ConfigError(
                f"method=mtan splits every ResNet stage into its blocks but the last and its last block; "
                f"stages {short or STAGES} of this backbone cannot be split (channels {channels}, expansion {expansion})"
            )
        self.encoder = encoder
        self.channels = channels
        self.attention = nn.ModuleList(
            nn.ModuleList(
                attention_unit(c if i == 0 else 2 * c, c // expansion, c) for i, c in enumerate(channels)
            )
            for _ in self.tasks
        )
        self.shared_f = nn.ModuleList(
            shared_block(encoder.block_type, expansion, channels[i], channels[i + 1]) for i in range(3)
        )
        self.heads = self.make_heads(encoder)

    # ------------------------------------------------------------- forward
    def trunk(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The shared trunk: ``(u_i, p_i)`` for the four stages."""
        h = self.encoder.forward_stem(x)
        out = []
        for name in STAGES:
            u = self.encoder.forward_stage_body(name, h)
            h = self.encoder.forward_stage_last(name, u)
            out.append((u, h))
        return out

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        trunk = self.trunk(x)
        everyone = self.authors_routing or self.setting == "single_input"
        if self.training and not everyone:
            groups = sit_out_singletons(groups, trunk[3][1].shape[-2] * trunk[3][1].shape[-1])
        branches = [(t, None if everyone else idx) for t, idx in enumerate(groups) if idx is not None]
        attended: list[Tensor] = []  # â of each branch
        for i, (u, p) in enumerate(trunk):
            for b, (t, rows) in enumerate(branches):
                u_b, p_b = (u, p) if rows is None else (u[rows], p[rows])
                if i == 0:
                    mask = self.attention[t][0](u_b)
                else:
                    prev = attended[b]
                    if i == 1 or prev.shape[-2:] != u_b.shape[-2:]:
                        prev = _down(prev)
                    mask = self.attention[t][i](torch.cat([u_b, prev], dim=1))
                if i == 0:
                    attended.append(mask * p_b)
                else:
                    attended[b] = mask * p_b
            if i < 3:
                attended = self._shared_f(i, attended, branches, task, everyone)
        outputs: list[Tensor | None] = [None] * self.num_tasks
        for (t, rows), z in zip(branches, attended, strict=True):
            idx = groups[t]
            assert idx is not None
            if rows is None and self.setting != "single_input":
                z = z[idx]  # authors' routing: every branch ran on every sample
            outputs[t] = self.heads[t](head_input(z, self.features))
        return Forward(outputs, groups, None)

    def _shared_f(
        self, i: int, attended: list[Tensor], branches: list[tuple[int, Tensor | None]], task: Tensor, everyone: bool
    ) -> list[Tensor]:
        """``f_i`` on every branch's â: once per branch (whole batch), or once over the batch when each
        sample has one branch (multi-input/domain routing; rows ascending, as the batch)."""
        f = self.shared_f[i]
        if everyone or not branches:
            return [f(a) for a in attended]
        rows = torch.cat([r for _, r in branches if r is not None])
        order = torch.argsort(rows)
        with task_norm_rows(f, task, rows[order]):
            merged = f(torch.cat(attended)[order])
        back = merged[torch.argsort(order)]
        return list(back.split([a.shape[0] for a in attended]))

    # ---------------------------------------------------------- parameters
    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        """The attention modules and the heads."""
        yield from self.attention.parameters()
        yield from self.heads.parameters()

    def param_counts(self) -> dict[str, int]:
        return {
            "attention": sum(p.numel() for p in self.attention.parameters()),
            "shared_f": sum(p.numel() for p in self.shared_f.parameters()),
        }


ARCHITECTURES.register("mtan")(MTAN)

__all__ = ["MTAN", "attention_unit", "shared_block"]
