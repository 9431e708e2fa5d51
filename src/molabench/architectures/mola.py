"""MoLA: a shared backbone whose layers carry E low-rank adapters, plus one head per task.

Zhou et al., "Exploring Training on Heterogeneous Data with Mixture of Low-rank Adapters",
ICML 2024. Two variants (see docs/mola.md):

- ``mola_grad`` (target-aware, Sec. 3.4): E = T, sample of task t uses W0 + B_t A_t only, so task
  t's loss reaches adapter t and the shared weights only (explicit gradient separation). When
  every task has the same number of samples in the batch, the batch is sorted by task and
  every adapted layer runs one grouped convolution over tasks; otherwise the adapters are mixed
  with one-hot weights (exactly zero for other tasks' adapters).
- ``mola_router`` (target-agnostic, Sec. 3.5): alpha = softmax(router(x)) per sample, dense over E
  adapters; router logits are exposed as ``aux["router_logits"]`` ((N, E), or (N, S, E) with one
  router per adapted stage) for the TwD penalty (``molabench.penalties.twd``).

The mixing weights are computed once per forward and shared by all adapted layers through
:class:`~molabench.models.mola.Routing` objects; routers are submodules of this architecture
only (``routers``), so a checkpoint holds each router once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Architecture, Forward, task_groups
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder
from molabench.models.mola import MoLAAdapted, Routing, build_router, default_stages, inject_mola
from molabench.models.mola.inject import VIT_TARGETS
from molabench.models.mola.layer import Factorization
from molabench.registry import declare_keywords

Variant = Literal["grad", "router"]


def _stage_ranks(stages: Sequence[str], rank: int, stage_ranks: object) -> dict[str, int]:
    """``stage_ranks``: None (``rank`` everywhere), a list aligned with ``stages``, or ``stage -> rank``."""
    if stage_ranks is None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"method.rank must be an integer >= 1 (the adapters' rank r, e.g. 8), got {rank!r}")
        return {s: int(rank) for s in stages}
    if isinstance(stage_ranks, Mapping):
        missing = [s for s in stages if s not in stage_ranks]
        if missing:
            raise ConfigError(f"method.stage_ranks lacks stages {missing}; give a rank for every stage in method.stages")
        return {s: int(stage_ranks[s]) for s in stages}
    if isinstance(stage_ranks, Sequence) and not isinstance(stage_ranks, str):
        if len(stage_ranks) != len(stages):
            raise ConfigError(
                f"method.stage_ranks has {len(stage_ranks)} entries but method.stages has {len(stages)} ({list(stages)})"
            )
        return {s: int(r) for s, r in zip(stages, stage_ranks, strict=True)}
    raise ConfigError(f"method.stage_ranks must be null, a list or a mapping, got {stage_ranks!r}")


def _in_channels(backbone: nn.Module) -> int:
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ConfigError("MoLA-Router needs a backbone whose first layer is a convolution (to size the router input)")
    return first.in_channels


class MoLA(Architecture):
    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        setting: Setting,
        encoder: Encoder,
        variant: Variant,
        rank: int = 8,
        stage_ranks: object = None,
        stages: Sequence[str] | None = None,
        experts: int | None = None,
        factorization: Factorization = "paper",
        lora_alpha: float = 16.0,
        adapt_downsample: bool = False,
        vit_targets: Sequence[str] = VIT_TARGETS,
        router: str = "authors",
        router_sharing: str = "shared",
        grad_path: str = "auto",
        head: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(tasks, setting, head)
        self.variant: Variant = variant
        num_experts = self.num_tasks if experts is None else int(experts)
        if variant == "grad" and num_experts != self.num_tasks:
            raise ConfigError(f"MoLA-Grad uses one adapter per task: method.experts must be null or {self.num_tasks}")
        if grad_path not in ("auto", "dense"):
            raise ConfigError(f"method.grad_path must be 'auto' (grouped when task counts are equal) or 'dense', got {grad_path!r}")
        if router_sharing not in ("shared", "per_stage"):
            raise ConfigError(f"method.router_sharing must be 'shared' or 'per_stage', got {router_sharing!r}")
        self.num_experts, self.grad_path = num_experts, grad_path
        in_channels = _in_channels(encoder)
        stage_list = list(stages) if stages is not None else default_stages(encoder)
        if not stage_list:
            raise ConfigError("method.stages is empty; list at least one stage to adapt (e.g. [layer1, layer2, layer3, layer4])")
        per_stage = variant == "router" and router_sharing == "per_stage"
        self.routings = [Routing() for _ in stage_list] if per_stage else [Routing()]
        by_stage = {s: self.routings[i if per_stage else 0] for i, s in enumerate(stage_list)}
        self.adapted_layers = inject_mola(
            encoder, stage_list, _stage_ranks(stage_list, rank, stage_ranks), by_stage, num_experts,
            lora_alpha, factorization, adapt_downsample, list(vit_targets),
        )
        self.encoder = encoder
        self.heads = self.make_heads(encoder)
        self.routers = nn.ModuleList(
            build_router(router, in_channels, num_experts) for _ in self.routings if variant == "router"
        )
        # Grad on single-input data gives every task its own features: no single shared representation.
        self.has_shared_representation = not (variant == "grad" and setting == "single_input")
        # Router: encoder (+ routers) then heads. Grad: task-specific adapters sit inside the encoder.
        self.shared_behind_representation = variant == "router"

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor, task: Tensor) -> Forward:
        groups = task_groups(task, self.num_tasks, self.setting)
        try:
            if self.variant == "router":
                logits = torch.stack([router(x) for router in self.routers], dim=1)  # (N, S, E)
                for routing, alpha in zip(self.routings, F.softmax(logits, dim=-1).unbind(1), strict=True):
                    routing.set_dense(alpha)
                z = self.embed(self.encoder, x)
                aux = {"router_logits": logits[:, 0] if len(self.routers) == 1 else logits}
                return Forward(self.decode(z, groups), groups, z, aux)
            if self.setting == "single_input":
                return self._grad_single_input(x, groups)
            z = self._grad_encode(x, task)
            return Forward(self.decode(z, groups), groups, z)
        finally:
            for routing in self.routings:
                routing.clear()

    def _grad_encode(self, x: Tensor, task: Tensor) -> Tensor:
        """Encoder pass where sample n uses adapter task[n] only."""
        n, t = x.shape[0], self.num_experts
        routing = self.routings[0]
        counts = torch.bincount(task, minlength=t)
        # One host sync for all decisions: largest count, tasks present, first task, already sorted?
        ordered = (task[1:] >= task[:-1]).all() if n > 1 else torch.ones((), dtype=torch.bool, device=task.device)
        largest, present, first, ordered = torch.stack([counts.max(), (counts > 0).sum(), task[0], ordered.long()]).tolist()
        if present == 1:
            routing.set_single(first)
            return self.embed(self.encoder, x)
        if self.grad_path == "auto" and present == t and largest * t == n:
            routing.set_grouped(t, largest)
            if ordered:
                return self.embed(self.encoder, x)
            order = torch.argsort(task, stable=True)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(n, device=order.device)
            return self.embed(self.encoder, x[order])[inverse]
        routing.set_dense(F.one_hot(task, t).to(x.dtype))
        return self.embed(self.encoder, x)

    def _grad_single_input(self, x: Tensor, groups: list[Tensor | None]) -> Forward:
        """Every sample is predicted for every task: one pass over the batch repeated T times, grouped by task."""
        n, t = x.shape[0], self.num_experts
        self.routings[0].set_grouped(t, n)
        z = self.embed(self.encoder, x.repeat(t, *([1] * (x.dim() - 1))))
        z = z.view(t, n, *z.shape[1:])
        return Forward([head(z[i]) for i, head in enumerate(self.heads)], groups, None)

    def decode(self, z: Tensor, groups: list[Tensor | None]) -> list[Tensor | None]:
        return [None if idx is None else head(z[idx]) for head, idx in zip(self.heads, groups, strict=True)]

    # ------------------------------------------------------------- parameters
    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.encoder.modules():
            if isinstance(module, MoLAAdapted):
                yield module.lora_A
                yield module.lora_B

    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        """Heads, and for MoLA-Grad the adapters (slice t of each only ever gets task t's gradient)."""
        yield from self.heads.parameters()
        if self.variant == "grad":
            yield from self.adapter_parameters()

    def param_counts(self) -> dict[str, int]:
        """Parameter counts of MoLA's additions: adapters, routers, and how many layers are adapted."""
        return {
            "adapter": sum(p.numel() for p in self.adapter_parameters()),
            "router": sum(p.numel() for p in self.routers.parameters()),
            "adapted_layers": sum(len(v) for v in self.adapted_layers.values()),
            "experts": self.num_experts,
        }


def _build(variant: Variant) -> Callable[..., MoLA]:
    def build(tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], Encoder], **hparams: object) -> MoLA:
        return MoLA(tasks, setting, backbone(), variant, **hparams)  # type: ignore[arg-type]

    # MoLA's own options as the builder's signature: Registry.build checks config keys against it
    own = inspect.signature(MoLA.__init__).parameters
    return declare_keywords(build, [p for name, p in own.items() if name not in ("self", "tasks", "setting", "encoder", "variant")])


ARCHITECTURES.register("mola_grad")(_build("grad"))
ARCHITECTURES.register("mola_router")(_build("router"))
