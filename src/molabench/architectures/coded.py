"""A code layer between an architecture's features and its heads (MMD-AAE's encoder Q; Li et al., CVPR 2018).

``coded`` wraps a base architecture (``base``: ``uniform`` — one shared classifier, DomainBed-style — or
``hps``, ``mola_grad``, ``mola_router`` — one head per domain) whose forward yields pooled features
f = ``representation``. A shared linear map Q: f → h (``code_dim``, MMD-AAE's hidden code; the
reimplementation: Linear(4096 → 2000)) feeds the heads, which read h instead of f:

    f = base features,   h = Q(f),   prediction_t = head_t(h)

``Forward.representation`` is h (what MMD-AAE's penalty aligns, reconstructs from and shows its prior
adversary) and ``aux["features"]`` is f (the reconstruction target). Classification data only (pooled
features); the base's own heads are replaced by heads on h of the same output widths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import Architecture, Forward
from molabench.data.base import Setting, TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder

BASES = ("uniform", "hps", "mola_grad", "mola_router")


class Coded(Architecture):
    def __init__(self, inner: Architecture, code_dim: int) -> None:
        super().__init__(inner.tasks, inner.setting, inner.head_cfg)
        dim = inner.representation_dim
        if dim is None:
            raise ConfigError(
                f"a code layer needs pooled features of one shared representation; {type(inner).__name__} on this data has none "
                "(classification data in the domain or multi-input setting)"
            )
        self.inner = inner
        self.feature_dim, self.code_dim = int(dim), int(code_dim)
        self.code = nn.Linear(self.feature_dim, self.code_dim)
        self.union_head = hasattr(inner, "head") and isinstance(inner.head, nn.Linear)  # Uniform: one head over the union
        if self.union_head:
            self.heads = nn.ModuleList([nn.Linear(self.code_dim, inner.head.out_features)])
            inner.head = nn.Identity()
        else:
            old = inner.heads
            if not all(isinstance(h, nn.Linear) for h in old):
                raise ConfigError("a code layer replaces linear classification heads; this architecture's heads are not linear")
            self.heads = nn.ModuleList(nn.Linear(self.code_dim, h.out_features) for h in old)
            inner.heads = nn.ModuleList(nn.Identity() for _ in old)
        self.has_shared_representation = True
        self.head_sharing = inner.head_sharing
        self.shared_behind_representation = False  # Q (shared) lies after the base's representation

    @property
    def representation_dim(self) -> int:
        return self.code_dim

    def forward(self, x: Tensor, task: Tensor) -> Forward:
        fwd = self.inner(x, task)
        f = fwd.representation
        assert f is not None
        h = self.code(f)
        if self.union_head:
            logits = self.heads[0](h)
            outputs = [None if idx is None else logits[idx] for idx in fwd.groups]
        else:
            outputs = [None if idx is None else head(h[idx]) for head, idx in zip(self.heads, fwd.groups, strict=True)]
        return Forward(outputs, fwd.groups, h, {**fwd.aux, "features": f})

    def target(self, t: int, y: Tensor) -> Tensor:
        return self.inner.target(t, y)

    def task_specific_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.heads.parameters() if not self.union_head else iter(())
        yield from self.inner.task_specific_parameters()

    def param_counts(self) -> dict[str, int]:
        return {**self.inner.param_counts(), "code": sum(p.numel() for p in self.code.parameters())}


@ARCHITECTURES.register("coded")
def coded(
    tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], Encoder], head: Mapping[str, Any] | None = None,
    base: str = "uniform", code_dim: int = 2000, base_options: Mapping[str, Any] | None = None,
) -> Coded:
    if base not in BASES:
        raise ConfigError(f"method.architecture.base must be one of {', '.join(BASES)}, got {base!r}")
    if int(code_dim) < 1:
        raise ConfigError(f"method.architecture.code_dim must be >= 1, got {code_dim!r}")
    inner = ARCHITECTURES.build(base, tasks=tasks, setting=setting, backbone=backbone, head=head, **dict(base_options or {}))
    return Coded(inner, int(code_dim))
