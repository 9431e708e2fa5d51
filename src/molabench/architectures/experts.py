"""Shared pieces of the mixture-of-experts baselines (MMoE, CGC, PLE, DSelect-k).

Every expert is a whole backbone (LibMTL's form, ``docs/architectures.md``). Two pieces recur:

Gates on raw pixels. A gate reads the normalised batch ``x`` (B, C, H, W) flattened to
``N_in = C·H·W`` values (LibMTL: ``Linear(N_in -> n)`` on ``x.flatten(1)``)::

    g(x) = softmax(W x + b),      W ∈ R^{n × N_in},  b ∈ R^n       ((N_in + 1)·n parameters)

so a gate is sized by the input shape at construction (``input_shape``, the data's
``(C, *image_size)``): :class:`PixelLinear` checks every batch against it and says what to change
in one line (a :class:`~molabench.errors.ConfigError`) instead of failing in a matrix product.

Expert mixture. With per-sample scalar weights ``w`` (B, E) and expert outputs ``F_e`` (B, D) or
(B, D, h, w), :func:`mix` gives ``f = Σ_e w_e · F_e`` (weights broadcast over features and
positions; mixing pooled vectors equals pooling the mixed map since average pooling is linear).
An expert that was not run (``None``, e.g. a DSelect-k expert with weight exactly 0 for the whole
batch) contributes nothing.

Routing (multi-input and domain settings, sample ``i`` predicted for ``task[i]`` only): the
architectures compute, per sample, only what its own task's prediction uses; :func:`assemble`
writes per-task rows back into one batch-ordered tensor so that every *shared* expert always sees
the whole batch in batch order (what per-task BatchNorm statistics and the one-backward per-task
gradients of ``weighting.pertask`` expect). :func:`sit_out_single_samples` drops, in training only,
a task with one sample from the step when a task-specific expert would normalise a 1×1 map of a
single sample (BatchNorm cannot; ``single_task`` does the same).

This module registers nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures.base import Architecture
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder

Shape = tuple[int, ...]


# ------------------------------------------------------------------------------ validation

def check_count(value: object, key: str, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``; a bool, float or anything else is a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"method.architecture.{key} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"method.architecture.{key} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_counts(value: object, key: str, num_tasks: int, minimum: int = 1) -> list[int]:
    """One count per task: an int (the same for every task) or a list of ``num_tasks`` ints."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != num_tasks:
            raise ConfigError(
                f"method.architecture.{key} has {len(items)} entries but the data has {num_tasks} tasks; "
                f"give one count per task or a single integer"
            )
        return [check_count(v, f"{key}[{i}]", minimum) for i, v in enumerate(items)]
    return [check_count(value, key, minimum)] * num_tasks


def check_flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"method.architecture.{key} must be true or false, got {value!r}")
    return value


def check_input_shape(input_shape: object, arch: str) -> Shape:
    """The data's ``(C, H, W)``, which sizes gates on raw pixels."""
    if input_shape is None:
        raise ConfigError(
            f"architecture {arch} sizes its gates from the input shape: build it with input_shape=(C, H, W) "
            "(build_architecture passes the data's in_channels and image_size)"
        )
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ConfigError(f"architecture {arch} needs input_shape as three positive integers (C, H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


# ----------------------------------------------------------------------------------- gates

class PixelLinear(nn.Module):
    """``W x.flatten(1) + b`` for inputs of one fixed shape (B, *shape); ``(N_in + 1)·out`` parameters.

    ``init``: ``(low, high)`` draws weight and bias from U(low, high); None = ``nn.Linear``'s
    default distribution, U(-1/√N_in, 1/√N_in) for both.
    """

    def __init__(self, shape: Sequence[int], out_features: int, init: tuple[float, float] | None = None, owner: str = "gate") -> None:
        super().__init__()
        self.shape: Shape = tuple(int(s) for s in shape)
        self.in_features = math.prod(self.shape)
        self.out_features = int(out_features)
        self.owner = owner
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features))
        bound = 1.0 / math.sqrt(self.in_features)
        low, high = init if init is not None else (-bound, bound)
        with torch.no_grad():
            self.weight.uniform_(low, high)
            self.bias.uniform_(low, high)

    def check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            raise ConfigError(
                f"{self.owner} was built for inputs of shape {_shape_text(self.shape)} (the data's image size at "
                f"construction) but got {_shape_text(x.shape[1:])}: gates on raw pixels need every batch at that size "
                "(make train crops and evaluation images end at data.image_size)"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return F.linear(x.flatten(1), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"shape={_shape_text(self.shape)}, in_features={self.in_features}, out_features={self.out_features}"


class PixelGate(PixelLinear):
    """``softmax(W x.flatten(1) + b)``: (B, *shape) -> weights (B, n) on the simplex."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(super().forward(x), dim=-1)


# --------------------------------------------------------------------------------- mixture

def mix(weights: Tensor, outputs: Sequence[Tensor | None]) -> Tensor:
    """``Σ_e weights[:, e] · outputs[e]`` over the experts that ran (``outputs[e]`` not None)."""
    if weights.shape[-1] != len(outputs):
        raise ValueError(f"{weights.shape[-1]} weights for {len(outputs)} experts")
    total: Tensor | None = None
    for e, out in enumerate(outputs):
        if out is None:
            continue
        w = weights[:, e].reshape(-1, *([1] * (out.dim() - 1))).to(out.dtype)
        total = w * out if total is None else torch.addcmul(total, w, out)
    if total is None:
        raise ValueError("no expert output to mix")
    return total


def assemble(parts: Sequence[tuple[Tensor, Tensor]], batch: int, base: Tensor | None = None) -> Tensor:
    """One (batch, ...) tensor whose rows ``idx`` hold ``rows`` for every ``(idx, rows)`` of ``parts``.

    Rows no part covers take ``base``'s (zeros when ``base`` is None). Differentiable in ``rows``.
    """
    index = torch.cat([idx for idx, _ in parts])
    values = torch.cat([rows for _, rows in parts])
    if base is None and index.numel() == batch:
        order = torch.empty_like(index)
        order[index] = torch.arange(batch, device=index.device)
        return values[order]
    if base is None:
        base = values.new_zeros((batch, *values.shape[1:]))
    return base.index_copy(0, index, values)


def pool(z: Tensor) -> Tensor:
    """Global average pooling of a map (B, D, h, w) -> (B, D); (B, D) passes through."""
    return torch.flatten(F.adaptive_avg_pool2d(z, 1), 1) if z.dim() == 4 else z


def single_sample_safe(expert: Encoder, input_shape: Shape) -> bool:
    """Whether a train-mode forward of one sample works (every BatchNorm sees more than one value per
    channel): true unless the backbone's final feature map of one ``input_shape`` image is 1×1."""
    if not expert.has_feature_maps:
        return True  # no spatial maps (ViT): LayerNorm, no batch statistics
    was_training = expert.training
    expert.eval()
    try:
        with torch.no_grad():
            param = next(expert.parameters(), None)
            probe = torch.zeros(1, *input_shape, device=param.device if param is not None else None)
            final = expert.forward_features(probe)
    finally:
        expert.train(was_training)
    return math.prod(final.shape[2:]) > 1


def sit_out_single_samples(groups: list[Tensor | None]) -> list[Tensor | None]:
    """``groups`` with every one-sample group set to None (that task sits out this training step)."""
    return [None if idx is not None and idx.numel() < 2 else idx for idx in groups]


# ------------------------------------------------------------------------------------ base

class ExpertArchitecture(Architecture):
    """Base of the four mixtures: no single shared representation; shared = the shared experts.

    Subclasses list their shared experts in :meth:`shared_modules` and their task-specific modules
    (gates, task experts, heads) in :meth:`task_modules`. ``route_all`` is True when every branch
    runs on every sample: ``authors_routing`` (the authors' harness) or the single-input setting.
    """

    has_shared_representation = False
    shared_behind_representation = False

    def __init__(
        self, tasks: Sequence[TaskSpec], setting: Setting, head: Mapping[str, Any] | None, authors_routing: object
    ) -> None:
        super().__init__(tasks, setting, head)
        self.authors_routing = check_flag(authors_routing, "authors_routing")
        self.route_all = self.authors_routing or setting == "single_input"

    def shared_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def task_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def rows(self, z: Tensor, idx: Tensor) -> Tensor:
        """Rows ``idx`` of a whole-batch tensor (all of it in the single-input setting)."""
        return z if self.setting == "single_input" else z[idx]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter([p for module in self.shared_modules() for p in module.parameters()])

    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        return iter([p for module in self.task_modules() for p in module.parameters()])

    @staticmethod
    def count(module: nn.Module | Sequence[nn.Module]) -> int:
        modules = [module] if isinstance(module, nn.Module) else list(module)
        return sum(p.numel() for m in modules for p in m.parameters())


class SharedAndTaskExperts(ExpertArchitecture):
    """CGC and PLE: ``self.shared`` experts for every task and ``self.task_experts[t]`` for task t only."""

    num_shared: int
    num_task_experts: list[int]

    def shared_modules(self) -> list[nn.Module]:
        return [self.shared]

    def task_modules(self) -> list[nn.Module]:
        return [self.heads, self.gates, self.task_experts]

    def param_counts(self) -> dict[str, int]:
        """Expert counts, the experts' parameters ((m_s + Σ m_t)·P) and the gates' (the architecture's formula)."""
        return {
            "experts": self.num_shared + sum(self.num_task_experts),
            "shared_experts": self.num_shared,
            "task_experts": sum(self.num_task_experts),
            "expert_params": self.count([self.shared, self.task_experts]),
            "gates": self.count(self.gates),
        }


__all__ = [
    "ExpertArchitecture",
    "PixelGate",
    "PixelLinear",
    "SharedAndTaskExperts",
    "assemble",
    "check_count",
    "check_counts",
    "check_flag",
    "check_input_shape",
    "mix",
    "pool",
    "single_sample_safe",
    "sit_out_single_samples",
]
