"""PLE: Progressive Layered Extraction (Tang et al., RecSys 2020), LibMTL's form.

Every expert is a whole ResNet cut into L = 5 levels: the stem S0 (conv1, bn1, relu, maxpool)
and the stages S1..S4 (layer1..layer4). There are m_s shared experts and m_t experts of each
task t. Each task keeps its own path g^{t,0} = x, ..., g^{t,L}; at level i the level-i blocks of
the shared experts and of task t's experts are applied to the path's previous value and mixed by
a per-task, per-level gate on its flattened input (``docs/architectures.md``)::

    g^{t,i} = Σ_j a^{t,i}_j · [E^i_{t,1..m_t}(g^{t,i-1}); E^i_{s,1..m_s}(g^{t,i-1})]_j,
    a^{t,i} = softmax(W^{t,i} g^{t,i-1}.flatten() + b^{t,i}),   W^{t,i} ∈ R^{(m_t + m_s) × n_i}

n_i = numel of one sample's level-i input (n_0 = C·H·W, n_1 = the stem's output, ...); head t
reads g^{t,L} (its average pool when every task is a classification). No shared gate or shared
path (LibMTL's deviation from the paper). Parameters besides the heads:
``(m_s + Σ_t m_t)·P + Σ_t (m_s + m_t)·Σ_{i=0..4}(n_i + 1)``. Shared parameters: the shared experts.

Routing (multi-input and domain settings): a task-t sample runs only its own path: the shared
experts and task t's experts at every level. The paths of the batch are held in one batch-ordered
tensor (row i = sample i's own path), so each shared expert's level runs once, on the whole batch
in batch order; task t's experts and gates run on task t's rows. In training, a task with a single
sample sits out the step when the experts' final map is 1×1 (BatchNorm); its rows then follow
the shared experts' mean, unused. Single-input setting and ``authors_routing=True``: all T paths
over the whole batch, the shared experts once per path (the authors' / LibMTL's cost and BatchNorm
statistics; same per-sample outputs in eval mode). ``aux["gate_weights/<task>/<level>"]``: each
gate's weights for the rows it ran on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Forward, task_groups
from molabench.architectures.experts import (
    PixelGate,
    Shape,
    SharedAndTaskExperts,
    assemble,
    check_count,
    check_counts,
    check_input_shape,
    mix,
    pool,
    sit_out_single_samples,
)
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder


def level_input_shapes(expert: Encoder, input_shape: Shape) -> list[Shape]:
    """Shapes (C_i, H_i, W_i) of one sample's input to each level (stem, then every stage), and of
    the last level's output (appended): one eval-mode forward of a zero image."""
    names = list(expert.stage_names)
    if not expert.has_feature_maps or not names:
        label = expert.backbone_name
        raise ConfigError(
            f"method=ple cuts every expert into stem + stages (layer1..layer4) and backbone {label} has no stages: "
            "use a ResNet backbone (e.g. backbone=resnet18)"
        )
    was_training = expert.training
    expert.eval()
    try:
        with torch.no_grad():
            param = next(expert.parameters(), None)
            h = torch.zeros(1, *input_shape, device=param.device if param is not None else None)
            shapes: list[Shape] = [tuple(h.shape[1:])]
            h = expert.forward_stem(h)
            shapes.append(tuple(h.shape[1:]))
            for name in names:
                h = expert.forward_stage(name, h)
                shapes.append(tuple(h.shape[1:]))
    finally:
        expert.train(was_training)
    return shapes


class PLE(SharedAndTaskExperts):
    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        backbone: Callable[[], Encoder],
        input_shape: Sequence[int] | None,
        shared_experts: int = 1,
        task_experts: int | Sequence[int] = 1,
        authors_routing: bool = False,
        head: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(tasks, setting, head, authors_routing)
        shape = check_input_shape(input_shape, "ple")
        if isinstance(shared_experts, int) and not isinstance(shared_experts, bool) and shared_experts < 1:
            raise ConfigError(
                f"method.architecture.shared_experts must be an integer >= 1, got {shared_experts} "
                "(without shared experts PLE is one network per task: use method=single_task)"
            )
        self.num_shared = check_count(shared_experts, "shared_experts")
        self.num_task_experts = check_counts(task_experts, "task_experts", self.num_tasks)
        self.input_shape = shape
        first = backbone()
        shapes = level_input_shapes(first, shape)
        self.level_names: list[str] = ["stem", *first.stage_names]
        self.level_shapes: list[Shape] = shapes[: len(self.level_names)]  # level inputs n_0..n_{L-1}
        self.single_sample_ok = shapes[-1][1] * shapes[-1][2] > 1
        self.shared = nn.ModuleList([first, *(backbone() for _ in range(self.num_shared - 1))])
        self.task_experts = nn.ModuleList(nn.ModuleList(backbone() for _ in range(m)) for m in self.num_task_experts)
        self.heads = self.make_heads(first)
        self.gates = nn.ModuleList(
            nn.ModuleList(
                PixelGate(level_shape, m + self.num_shared, owner=f"ple gate of task {spec.name!r} at level {level}")
                for level, level_shape in zip(self.level_names, self.level_shapes, strict=True)
            )
            for spec, m in zip(self.tasks, self.num_task_experts, strict=True)
        )

    def level(self, expert: Encoder, i: int, h: Tensor) -> Tensor:
        """Level ``i`` of ``expert``: the stem (i = 0) or stage i."""
        return expert.forward_stem(h) if i == 0 else expert.forward_stage(self.level_names[i], h)

    def path_level(self, t: int, i: int, h: Tensor, shared: Sequence[Tensor], aux: dict[str, Tensor]) -> Tensor:
        """Task t's level i on its path value ``h`` given the shared experts' level-i outputs on ``h``."""
        own = [self.level(expert, i, h) for expert in self.task_experts[t]]
        weights = self.gates[t][i](h)
        aux[f"gate_weights/{self.tasks[t].name}/{self.level_names[i]}"] = weights
        return mix(weights, own + list(shared))

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        aux: dict[str, Tensor] = {}
        if self.route_all:
            finals: list[Tensor | None] = []
            for t, idx in enumerate(groups):
                if idx is None:
                    finals.append(None)
                    continue
                h = x
                for i in range(len(self.level_names)):
                    h = self.path_level(t, i, h, [self.level(expert, i, h) for expert in self.shared], aux)
                finals.append(self.rows(h, idx))
        else:
            if self.training and not self.single_sample_ok:
                groups = sit_out_single_samples(groups)
            present = [(t, idx) for t, idx in enumerate(groups) if idx is not None]
            h, parts = x, []
            for i in range(len(self.level_names)):
                shared = [self.level(expert, i, h) for expert in self.shared]  # whole batch, batch order
                parts = [(idx, self.path_level(t, i, h[idx], [s[idx] for s in shared], aux)) for t, idx in present]
                if i + 1 < len(self.level_names):
                    covered = sum(int(idx.numel()) for _, idx in present) == x.shape[0]
                    base = None if covered else (torch.stack(shared).mean(0).detach())
                    h = assemble(parts, x.shape[0], base)
            by_task = {t: rows for (t, _), (_, rows) in zip(present, parts, strict=True)}
            finals = [by_task.get(t) for t in range(self.num_tasks)]
        outputs = [
            None if z is None else head(pool(z) if self.features == "pooled" else z)
            for head, z in zip(self.heads, finals, strict=True)
        ]
        return Forward(outputs, groups, None, aux)


@ARCHITECTURES.register("ple")
def ple(
    tasks: Sequence[TaskSpec],
    setting: Setting,
    backbone: Callable[[], Encoder],
    input_shape: Sequence[int] | None = None,
    shared_experts: int = 1,
    task_experts: int | Sequence[int] = 1,
    authors_routing: bool = False,
    head: Mapping[str, Any] | None = None,
) -> PLE:
    return PLE(tasks, setting, backbone, input_shape, shared_experts, task_experts, authors_routing, head)


__all__ = ["PLE", "level_input_shapes"]
