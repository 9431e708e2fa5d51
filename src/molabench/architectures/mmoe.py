"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018), LibMTL's form.

E experts F_1..F_E, each a whole backbone shared by all tasks, and one gate per task on the
flattened raw image (``docs/architectures.md``)::

    f^t(x) = Σ_{e=1..E} g^t_e(x) · F_e(x),      g^t(x) = softmax(W_t x.flatten() + b_t),  W_t ∈ R^{E × N_in}

with ``N_in = C·H·W``; head t reads f^t (a map, or its average pool when every task is a
classification). Parameters besides the heads: ``E·P + T·E·(N_in + 1)`` (P: one backbone).
Shared parameters (what gradient methods combine): the experts; gates are task-specific.

Routing. Every gate mixes every expert, so each sample runs all E experts. In the multi-input
and domain settings sample i uses only gate ``task[i]`` (computed on its own rows only); in the
single-input setting every task's gate runs on every image. ``authors_routing=True`` computes
every task's gate and mixture on every sample as the authors' harness does (same per-sample
outputs in eval mode). ``aux["gate_weights"]``: (B, E) per-sample weights of its own task's gate,
or (B, T, E) when every gate runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Forward, task_groups
from molabench.architectures.experts import ExpertArchitecture, PixelGate, assemble, check_count, check_input_shape, mix
from molabench.data.base import Setting, TaskSpec
from molabench.models.encoder import Encoder


class MMoE(ExpertArchitecture):
    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        backbone: Callable[[], Encoder],
        input_shape: Sequence[int] | None,
        num_experts: int | None = None,
        authors_routing: bool = False,
        head: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(tasks, setting, head, authors_routing)
        shape = check_input_shape(input_shape, "mmoe")
        self.num_experts = self.num_tasks if num_experts is None else check_count(num_experts, "num_experts")
        self.input_shape = shape
        self.experts = nn.ModuleList(backbone() for _ in range(self.num_experts))
        self.heads = self.make_heads(self.experts[0])
        self.gates = nn.ModuleList(
            PixelGate(shape, self.num_experts, owner=f"mmoe gate of task {spec.name!r}") for spec in self.tasks
        )

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        feats = [self.embed(expert, x) for expert in self.experts]
        outputs: list[Tensor | None] = []
        if self.route_all:
            weights = torch.stack([gate(x) for gate in self.gates], dim=1)  # (B, T, E)
            for t, (head, idx) in enumerate(zip(self.heads, groups, strict=True)):
                outputs.append(None if idx is None else head(self.rows(mix(weights[:, t], feats), idx)))
            return Forward(outputs, groups, None, {"gate_weights": weights})
        parts = [(idx, self.gates[t](x[idx])) for t, idx in enumerate(groups) if idx is not None]
        weights = assemble(parts, x.shape[0])  # (B, E): sample i's own task's gate
        mixed = mix(weights, feats)
        outputs = [None if idx is None else head(mixed[idx]) for head, idx in zip(self.heads, groups, strict=True)]
        return Forward(outputs, groups, None, {"gate_weights": weights})

    def shared_modules(self) -> list[nn.Module]:
        return [self.experts]

    def task_modules(self) -> list[nn.Module]:
        return [self.heads, self.gates]

    def param_counts(self) -> dict[str, int]:
        """E, the experts' parameters (E·P) and the gates' (T·E·(N_in + 1))."""
        return {"experts": self.num_experts, "expert_params": self.count(self.experts), "gates": self.count(self.gates)}


@ARCHITECTURES.register("mmoe")
def mmoe(
    tasks: Sequence[TaskSpec],
    setting: Setting,
    backbone: Callable[[], Encoder],
    input_shape: Sequence[int] | None = None,
    num_experts: int | None = None,
    authors_routing: bool = False,
    head: Mapping[str, Any] | None = None,
) -> MMoE:
    return MMoE(tasks, setting, backbone, input_shape, num_experts, authors_routing, head)


__all__ = ["MMoE"]
