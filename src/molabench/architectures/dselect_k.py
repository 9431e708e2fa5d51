"""DSelect-k (Hazimeh et al., NeurIPS 2021): sparse, differentiable expert selection per task.

E experts F_1..F_E (whole backbones) shared by all tasks, as MMoE, but each task's gate is k
single-expert selectors (``num_nonzeros``) with m = ⌈log₂E⌉ logits each. Smooth step with the
*configured* γ (LibMTL always uses γ = 1 there; ``docs/architectures.md``)::

    s(u) = 0                              u <= -γ/2
         = -2u³/γ³ + 3u/(2γ) + 1/2        -γ/2 < u < γ/2
         = 1                              u >= γ/2

Selector i's weight on expert e (bits of e most significant first, e = 0..E-1)::

    r_e(z^(i)) = Π_{l=1..m} ( s(z^(i)_l) if bit l of e is 1 else 1 - s(z^(i)_l) )

Expert weights and task output, per example (z and α are linear in the flattened raw image)::

    w_e = Σ_{i=1..k} softmax(α)_i · r_e(z^(i)),      f^t(x) = Σ_e w_e · F_e(x)
    z = Linear(N_in -> k·m)(x),  α = Linear(N_in -> k)(x)

Initialisation as the official Keras gate: weights and biases of z from U(-γ/100, γ/100), of α
from U(-0.05, 0.05). s saturates, so once trained the weights are exactly 0 for all but at most
k experts. When E is not a power of 2 the codes E..2^m-1 are unreachable and Σ_e r_e may be < 1;
the regulariser (``molabench.penalties.dselect_k``) keeps the mass on reachable experts. It reads
``aux["selector_outputs"]`` (N, k, E): r of every gate evaluated in this forward pass (N = B when
each sample runs its own task's gate, B·T when every gate runs on every sample).
``aux["expert_weights"]``: (B, E) own-task weights per sample, or (B, T, E).

Parameters besides the heads: ``E·P + T·(N_in + 1)·k·(m + 1)``. Shared parameters: the experts.

Routing as MMoE (each sample runs all experts and only its own task's gate; single-input: every
gate on every image), except that an expert whose weight is exactly 0 for every sample (and every
task evaluated) of the batch is not run: exact for the outputs and every gradient (the weight and
its derivatives are 0 there); in train mode that expert's BatchNorm running statistics then skip
the batch. ``authors_routing=True`` runs every expert and every gate on every sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Forward, task_groups
from molabench.architectures.experts import (
    ExpertArchitecture,
    PixelLinear,
    assemble,
    check_count,
    check_input_shape,
    mix,
)
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder


def smooth_step(u: Tensor, gamma: float = 1.0) -> Tensor:
    """The cubic smooth step s(u) of the module docstring (0 below -γ/2, 1 above γ/2)."""
    inner = -2.0 * u.pow(3) / gamma**3 + 3.0 * u / (2.0 * gamma) + 0.5
    return torch.where(u <= -gamma / 2, torch.zeros_like(u), torch.where(u >= gamma / 2, torch.ones_like(u), inner))


def binary_codes(num_experts: int) -> Tensor:
    """(E, m) bool: row e holds the m = ⌈log₂E⌉ bits of e, most significant first."""
    m = math.ceil(math.log2(num_experts)) if num_experts > 1 else 0
    bits = [[(e >> (m - 1 - b)) & 1 == 1 for b in range(m)] for e in range(num_experts)]
    return torch.tensor(bits, dtype=torch.bool).reshape(num_experts, m)


def selector_outputs(z: Tensor, codes: Tensor, gamma: float) -> Tensor:
    """r (..., k, E) from selector logits z (..., k, m) and codes (E, m)."""
    s = smooth_step(z, gamma).unsqueeze(-2)  # (..., k, 1, m)
    return torch.where(codes, s, 1 - s).prod(-1)


class DSelectGate(nn.Module):
    """One task's gate: ``x -> (w (B, E), r (B, k, E))`` (module docstring)."""

    codes: Tensor

    def __init__(self, shape: Sequence[int], num_experts: int, k: int, gamma: float, owner: str = "gate") -> None:
        super().__init__()
        self.num_experts, self.k, self.gamma = num_experts, k, gamma
        self.register_buffer("codes", binary_codes(num_experts), persistent=False)
        self.m = int(self.codes.shape[1])
        self.z = PixelLinear(shape, k * self.m, init=(-gamma / 100, gamma / 100), owner=owner)
        self.alpha = PixelLinear(shape, k, init=(-0.05, 0.05), owner=owner)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.z(x).view(x.shape[0], self.k, self.m)
        r = selector_outputs(z, self.codes, self.gamma)  # (B, k, E)
        p = torch.softmax(self.alpha(x), dim=-1)  # (B, k)
        return (p.unsqueeze(-1) * r).sum(1), r


class DSelectK(ExpertArchitecture):
    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        backbone: Callable[[], Encoder],
        input_shape: Sequence[int] | None,
        num_experts: int | None = None,
        num_nonzeros: int = 2,
        gamma: float = 1.0,
        authors_routing: bool = False,
        head: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(tasks, setting, head, authors_routing)
        shape = check_input_shape(input_shape, "dselect_k")
        self.num_experts = self.num_tasks if num_experts is None else check_count(num_experts, "num_experts")
        self.k = check_count(num_nonzeros, "num_nonzeros")
        if self.k > self.num_experts:
            raise ConfigError(
                f"method.architecture.num_nonzeros (k={self.k}) must be at most num_experts (E={self.num_experts}): "
                "a gate selects k of the E experts"
            )
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not math.isfinite(gamma) or gamma <= 0:
            raise ConfigError(f"method.architecture.gamma must be a positive number (the smooth step's width), got {gamma!r}")
        self.gamma = float(gamma)
        self.input_shape = shape
        self.experts = nn.ModuleList(backbone() for _ in range(self.num_experts))
        self.heads = self.make_heads(self.experts[0])
        self.gates = nn.ModuleList(
            DSelectGate(shape, self.num_experts, self.k, self.gamma, owner=f"dselect_k gate of task {spec.name!r}")
            for spec in self.tasks
        )

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        if self.route_all:
            pairs = [gate(x) for gate in self.gates]
            weights = torch.stack([w for w, _ in pairs], dim=1)  # (B, T, E)
            r = torch.stack([r for _, r in pairs], dim=1).flatten(0, 1)  # (B·T, k, E)
        else:
            pairs = [(idx, self.gates[t](x[idx])) for t, idx in enumerate(groups) if idx is not None]
            weights = assemble([(idx, w) for idx, (w, _) in pairs], x.shape[0])  # (B, E)
            r = torch.cat([r for _, (_, r) in pairs])
        if self.authors_routing:
            run = [True] * self.num_experts
        else:
            used = (weights != 0).flatten(0, -2).any(0)
            run = used.tolist() if bool(used.any()) else [e == 0 for e in range(self.num_experts)]
        feats = [self.embed(expert, x) if go else None for expert, go in zip(self.experts, run, strict=True)]
        outputs: list[Tensor | None] = []
        if self.route_all:
            for t, (head, idx) in enumerate(zip(self.heads, groups, strict=True)):
                outputs.append(None if idx is None else head(self.rows(mix(weights[:, t], feats), idx)))
        else:
            mixed = mix(weights, feats)
            outputs = [None if idx is None else head(mixed[idx]) for head, idx in zip(self.heads, groups, strict=True)]
        return Forward(outputs, groups, None, {"expert_weights": weights, "selector_outputs": r})

    def shared_modules(self) -> list[nn.Module]:
        return [self.experts]

    def task_modules(self) -> list[nn.Module]:
        return [self.heads, self.gates]

    def param_counts(self) -> dict[str, int]:
        """E, k, the experts' parameters (E·P) and the gates' (T·(N_in + 1)·k·(⌈log₂E⌉ + 1))."""
        return {
            "experts": self.num_experts,
            "num_nonzeros": self.k,
            "expert_params": self.count(self.experts),
            "gates": self.count(self.gates),
        }


@ARCHITECTURES.register("dselect_k")
def dselect_k(
    tasks: Sequence[TaskSpec],
    setting: Setting,
    backbone: Callable[[], Encoder],
    input_shape: Sequence[int] | None = None,
    num_experts: int | None = None,
    num_nonzeros: int = 2,
    gamma: float = 1.0,
    authors_routing: bool = False,
    head: Mapping[str, Any] | None = None,
) -> DSelectK:
    return DSelectK(tasks, setting, backbone, input_shape, num_experts, num_nonzeros, gamma, authors_routing, head)


__all__ = ["DSelectGate", "DSelectK", "binary_codes", "selector_outputs", "smooth_step"]
