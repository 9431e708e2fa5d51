"""CGC: Customized Gate Control (Tang et al., RecSys 2020; single-level PLE), LibMTL's form.

m_s shared experts E_{s,1..m_s} and m_t experts E_{t,1..m_t} of each task t, each a whole
backbone; one gate per task on the flattened raw image over [task-t experts; shared experts]
(``docs/architectures.md``)::

    f^t(x) = Σ_j g^t_j(x) · [E_{t,1..m_t}(x); E_{s,1..m_s}(x)]_j,
    g^t(x) = softmax(W_t x.flatten() + b_t),   W_t ∈ R^{(m_t + m_s) × N_in}

Parameters besides the heads: ``(m_s + Σ_t m_t)·P + Σ_t (m_s + m_t)(N_in + 1)``; the authors' 1
shared + 1 per task: ``(T + 1)·P + 2T(N_in + 1)``. Shared parameters: the shared experts only.

Routing (multi-input and domain settings): a task-t sample runs the m_s shared experts (once, on
the whole batch) and task t's own m_t experts and gate only (on task t's samples): m_s + m_t
backbones per sample instead of m_s + Σ m_t. Task t's loss never reaches another task's experts
(gradient isolation). In training, a task with a single sample sits out the step when its experts'
final map is 1×1 (BatchNorm cannot normalise one value; ``single_task`` does the same). Single-input
setting and ``authors_routing=True``: every expert and every gate on every sample (the authors'
cost; same per-sample outputs in eval mode). ``aux["gate_weights/<task>"]``: each task's gate
weights over [own experts; shared experts] for the rows it ran on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Forward, task_groups
from molabench.architectures.experts import (
    PixelGate,
    SharedAndTaskExperts,
    check_count,
    check_counts,
    check_input_shape,
    mix,
    single_sample_safe,
    sit_out_single_samples,
)
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder


class CGC(SharedAndTaskExperts):
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
        shape = check_input_shape(input_shape, "cgc")
        if isinstance(shared_experts, int) and not isinstance(shared_experts, bool) and shared_experts < 1:
            raise ConfigError(
                f"method.architecture.shared_experts must be an integer >= 1, got {shared_experts} "
                "(without shared experts CGC is one network per task: use method=single_task)"
            )
        self.num_shared = check_count(shared_experts, "shared_experts")
        self.num_task_experts = check_counts(task_experts, "task_experts", self.num_tasks)
        self.input_shape = shape
        self.shared = nn.ModuleList(backbone() for _ in range(self.num_shared))
        self.task_experts = nn.ModuleList(nn.ModuleList(backbone() for _ in range(m)) for m in self.num_task_experts)
        self.heads = self.make_heads(self.shared[0])
        self.gates = nn.ModuleList(
            PixelGate(shape, m + self.num_shared, owner=f"cgc gate of task {spec.name!r}")
            for spec, m in zip(self.tasks, self.num_task_experts, strict=True)
        )
        self.single_sample_ok = single_sample_safe(self.shared[0], shape)

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        if self.training and not self.route_all and not self.single_sample_ok:
            groups = sit_out_single_samples(groups)
        shared = [self.embed(expert, x) for expert in self.shared]  # the whole batch, once
        outputs: list[Tensor | None] = []
        aux: dict[str, Tensor] = {}
        for t, (spec, head, idx) in enumerate(zip(self.tasks, self.heads, groups, strict=True)):
            if idx is None:
                outputs.append(None)
                continue
            xt = x if self.route_all else x[idx]
            own = [self.embed(expert, xt) for expert in self.task_experts[t]]
            weights = self.gates[t](xt)
            z = mix(weights, own + (shared if self.route_all else [s[idx] for s in shared]))
            outputs.append(head(self.rows(z, idx) if self.route_all else z))
            aux[f"gate_weights/{spec.name}"] = weights
        return Forward(outputs, groups, None, aux)


@ARCHITECTURES.register("cgc")
def cgc(
    tasks: Sequence[TaskSpec],
    setting: Setting,
    backbone: Callable[[], Encoder],
    input_shape: Sequence[int] | None = None,
    shared_experts: int = 1,
    task_experts: int | Sequence[int] = 1,
    authors_routing: bool = False,
    head: Mapping[str, Any] | None = None,
) -> CGC:
    return CGC(tasks, setting, backbone, input_shape, shared_experts, task_experts, authors_routing, head)


__all__ = ["CGC"]
