"""Per-task gradients of the shared parameters: the T x P matrix ``G`` gradient methods combine.

Two ways to get ``G``:

``exact``
    ``G[t] = dL_t/dtheta`` by one vectorised backward over the one-hot task cotangents
    (``torch.autograd.grad(..., is_grads_batched=True)``, a loop of ``retain_graph`` backwards if
    vmap cannot batch an op). Correct for every architecture and setting, but the backward
    compute is T times that of EW: every task's cotangent reaches every sample once it passes a
    train-mode BatchNorm with whole-batch statistics, which couple all samples.

``sample_groups``
    One backward of ``sum_t L_t`` that asks autograd for the output gradients ``delta_s`` of the
    nodes consuming shared parameters (convolution, linear, batch/layer norm, per-task batch norm;
    requested as ``GradientEdge`` s, so autograd propagates activation gradients only); with the
    inputs ``a_s`` those nodes saved, every weight gradient, a sum over samples
    ``sum_s delta_s (x) a_s``, is split by the task owning sample ``s``:
    ``G[t] = sum_{s in group t} delta_s (x) a_s``. About one backward pass of compute whatever T is.
    It needs disjoint groups (multi-input and domain settings: each sample has one task).

    Exactness: ``sum_t G[t]`` is exactly the EW gradient, and ``G[t] = dL_t/dtheta`` exactly when
    samples of different tasks do not interact in the forward pass, i.e. when ``delta_s`` for a
    sample of task t is ``dL_t/d(out_s)``: no BatchNorm, BatchNorm in eval mode, GroupNorm/LayerNorm,
    and **per-task BatchNorm statistics** (``trainer.bn_stats=per_task``, ``models.task_norm``: each
    task's samples normalised with that task's own statistics, LibMTL's per-task forwards in one
    pass). With train-mode BatchNorm over the whole mixed batch (``bn_stats=batch``), task t's loss
    also reaches other tasks' samples through the batch mean/variance; ``sample_groups`` attributes
    that part to the sample it flows through instead of the loss it comes from (cosine 0.81-0.87 to
    the exact per-task gradients of that model on ResNet-18; ``TaskGradients.exact`` is False and
    the path is recorded as ``sample_groups_approx``).

``auto`` (default) uses ``sample_groups`` when the groups are disjoint, every shared parameter is
consumed by a supported op with the batch as leading dimension **and the split is exact**, ``exact``
otherwise (whole-batch BatchNorm statistics, the single-input setting, parameters entering by
broadcasting such as ViT's class token and position embedding, MoLA's ``code`` factorisation whose
weights are products of parameters, custom ops): the default never approximates. A consumed weight
may be built from shared parameters by shape ops only (views, permutes, clones, concatenation:
MoLA-Router's fused base + adapter convolution and its reshaped up-projection); its per-group
gradient is taken back through those ops' own backward functions. A matrix product may see m rows
per sample (``nn.Linear``/``matmul`` on positions or tokens, sample-major: a view of a tensor whose
first dimension is the batch). The approximate split under whole-batch statistics is opt-in, by name:
``grad_mode=sample_groups`` (recorded as ``sample_groups_approx``).

Gramian path (``task_gradients(..., gramian=True)``, used by Gramian-based methods): when the
split is exact, ``M = G G^T`` and ``c -> c^T G`` come straight from the saved activations and
output gradients, layer by layer, without writing the T x P matrix (:func:`_sample_groups_gramian`).

The node introspection reads autograd node class names and saved tensors (``_saved_input`` ...),
a private interface (per-task BatchNorm is our own autograd function and is read through its
public ``saved_tensors``). :func:`self_check` verifies it once per process on the running torch,
against ``exact``, on a small network with every supported op; on a mismatch or error it warns
and ``auto`` falls back to ``exact`` (``sample_groups`` refuses). Module hooks (the public route
torchjd's autogram takes) would need the model to register them before the forward; the
introspection needs nothing from the model and costs nothing when unused.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge
from torch.nn import functional as F

from molabench.errors import ConfigError

#: Output positions (H x W) up to which convolution weight gradients go through im2col + GEMM.
_UNFOLD_MAX_POSITIONS = 16

GradMode = Literal["auto", "exact", "sample_groups"]
GRAD_MODES: tuple[str, ...] = ("auto", "exact", "sample_groups")


_BATCHED = True  # vectorised (vmap) per-task backward passes allowed


@contextlib.contextmanager
def sequential_backward() -> Iterator[None]:
    """Within this block the exact per-task gradients come from one backward per task, never from a
    vectorised one: a backward that communicates (BatchNorm synchronised over torchrun ranks) cannot
    be vmapped, and a vmapped backward that fails half-way has already freed the graph."""
    global _BATCHED
    previous, _BATCHED = _BATCHED, False
    try:
        yield
    finally:
        _BATCHED = previous


def check_grad_mode(mode: str) -> GradMode:
    if mode not in GRAD_MODES:
        raise ConfigError(f"grad_mode {mode!r} is not one of {', '.join(GRAD_MODES)}")
    return mode  # type: ignore[return-value]


@dataclass
class TaskGradients:
    """``G`` (T', P) over the shared parameters (rows: present tasks, in order) and the gradient
    of ``sum_t L_t`` for every other requested parameter (``None`` when unused).

    With ``gramian=True`` (and when the one-backward split is exact) ``G`` is not materialised:
    ``M = G G^T`` (float64) and ``combine(c) = c^T G`` (one tensor per shared parameter) stand in
    for it. ``exact``: whether ``G`` holds the true per-task gradients (False only for
    ``sample_groups`` under train-mode BatchNorm with whole-batch statistics).
    """

    G: Tensor | None
    others: list[Tensor | None]
    mode: str
    exact: bool = True
    M: Tensor | None = None
    combine: Callable[[Tensor], list[Tensor]] | None = None

    @property
    def path(self) -> str:
        """``exact``, ``sample_groups`` or ``sample_groups_approx`` (for run records)."""
        return self.mode if self.exact or self.mode == "exact" else f"{self.mode}_approx"


def flat_views(params: Sequence[nn.Parameter]) -> tuple[list[int], int]:
    """Start offset of every parameter in the flattened P-vector, and P."""
    offsets, total = [], 0
    for p in params:
        offsets.append(total)
        total += p.numel()
    return offsets, total


def task_gradients(
    losses: Tensor,
    shared: Sequence[nn.Parameter],
    others: Sequence[nn.Parameter],
    groups: Sequence[Tensor] | None,
    mode: GradMode = "auto",
    retain_graph: bool = False,
    buffer: dict[str, Tensor] | None = None,
    through: Tensor | None = None,
    gramian: bool = False,
    agree: Callable[[bool], bool] | None = None,
) -> TaskGradients:
    """Per-task gradients of ``losses`` (T',) w.r.t. ``shared``; summed gradients for ``others``.

    ``groups[t]`` are the batch indices of ``losses[t]``'s samples (``None``: unknown, forces exact).
    ``buffer`` (a dict the caller keeps between steps) lets ``sample_groups`` reuse the memory of
    ``G`` instead of allocating and faulting in T x P floats every step.
    ``through``: a representation ``z`` such that every ``shared`` parameter reaches ``losses`` only
    through ``z`` and every ``others`` parameter lies between ``z`` and the losses (an encoder, then
    heads). The exact gradients are then computed in two stages (see :func:`_exact_through`).
    ``gramian``: the caller only needs ``M = G G^T`` and ``c^T G``; when the one-backward split is
    exact and every shared parameter has one consumer, ``G`` is then never formed (:func:`_sample_groups_gramian`).
    ``agree`` (torchrun): whether every rank can take the one-backward path, given this rank's answer,
    so that all ranks take the same path (their backward passes may synchronise BatchNorm statistics).
    """
    if mode != "exact":
        plan, why = _plan_sample_groups(losses, shared, groups)
        usable = plan is not None and (plan.exact or mode == "sample_groups")  # approximate only when asked for by name
        if agree is not None and not agree(usable):
            usable, why = False, why or "not every rank can split its batch by task"
        if usable:
            assert plan is not None
            if gramian and plan.exact and plan.single_consumer:
                return _sample_groups_gramian(losses, shared, others, plan, retain_graph)
            return _sample_groups(losses, shared, others, plan, retain_graph, buffer)
        if mode == "sample_groups":
            raise ConfigError(f"grad_mode=sample_groups is impossible here: {why}; use grad_mode=auto or exact")
    if through is not None and through.requires_grad:
        return _exact_through(losses, through, shared, others, retain_graph)
    return _exact(losses, shared, others, retain_graph)


# ----------------------------------------------------------------------------------- exact


def _exact(losses: Tensor, shared: Sequence[nn.Parameter], others: Sequence[nn.Parameter], retain: bool) -> TaskGradients:
    T = losses.shape[0]
    inputs = [*shared, *others]
    eye = torch.eye(T, dtype=losses.dtype, device=losses.device)
    try:
        if not _BATCHED:
            raise RuntimeError("sequential backward passes")
        grads = torch.autograd.grad(losses, inputs, eye, retain_graph=retain, allow_unused=True, is_grads_batched=True)
    except RuntimeError:
        # vmap has no batching rule for some op: one retain_graph backward per task instead.
        per_task = [
            torch.autograd.grad(losses[t], inputs, retain_graph=retain or t < T - 1, allow_unused=True) for t in range(T)
        ]
        grads = tuple(
            None if all(g[i] is None for g in per_task) else torch.stack([_dense(g[i], p) for g in per_task])
            for i, p in enumerate(inputs)
        )
    G = torch.cat([_dense_batched(g, p, T).reshape(T, -1) for g, p in zip(grads[: len(shared)], shared, strict=True)], 1) \
        if shared else losses.new_zeros(T, 0)
    rest = [None if g is None else g.sum(0) for g in grads[len(shared):]]
    return TaskGradients(G, rest, "exact")


def _exact_through(
    losses: Tensor, z: Tensor, shared: Sequence[nn.Parameter], others: Sequence[nn.Parameter], retain: bool
) -> TaskGradients:
    """Exact per-task gradients by the chain rule through the representation ``z``:

        dL_t/dθ = (∂z/∂θ)^T · dL_t/dz        for every shared θ (all of which lie before z).

    Stage 1 back-propagates each task's loss to ``z`` and to the parameters after ``z`` (its head):
    T small backwards, each traversing one head once. Stage 2 back-propagates the T cotangents
    ``dL_t/dz`` through the encoder in one vectorised pass (``is_grads_batched``; a loop if vmap
    cannot batch an op). The same numbers as :func:`_exact`, without pushing every task's cotangent
    through every head (dense heads can outweigh the encoder).
    """
    T = losses.shape[0]
    dz: list[Tensor] = []
    rest: list[Tensor | None] = [None] * len(others)
    for t in range(T):
        grads = torch.autograd.grad(losses[t], [z, *others], retain_graph=True, allow_unused=True)
        dz.append(torch.zeros_like(z) if grads[0] is None else grads[0])
        for i, g in enumerate(grads[1:]):
            if g is not None:
                rest[i] = g if rest[i] is None else rest[i] + g
    cotangents = torch.stack(dz)
    try:
        if not _BATCHED:
            raise RuntimeError("sequential backward passes")
        per_task = torch.autograd.grad(z, list(shared), cotangents, retain_graph=retain, allow_unused=True, is_grads_batched=True)
    except RuntimeError:
        loop = [torch.autograd.grad(z, list(shared), cotangents[t], retain_graph=retain or t < T - 1, allow_unused=True) for t in range(T)]
        per_task = tuple(
            None if all(g[i] is None for g in loop) else torch.stack([_dense(g[i], p) for g in loop]) for i, p in enumerate(shared)
        )
    G = torch.cat([_dense_batched(g, p, T).reshape(T, -1) for g, p in zip(per_task, shared, strict=True)], 1) \
        if shared else losses.new_zeros(T, 0)
    return TaskGradients(G, rest, "exact")


def _dense(g: Tensor | None, p: Tensor) -> Tensor:
    return torch.zeros_like(p) if g is None else g


def _dense_batched(g: Tensor | None, p: Tensor, T: int) -> Tensor:
    return p.new_zeros((T, *p.shape)) if g is None else g


# --------------------------------------------------------------------------- sample groups

@dataclass
class _Consumer:
    """An autograd node consuming shared parameters, the slots it feeds and its saved tensors."""

    node: object
    kind: str
    slots: dict[str, int]  # "weight"/"bias" -> position of the parameter in ``shared`` (-1: through a chain)
    saved: dict[str, object]
    #: role -> the graph node producing the consumed weight from shared parameters by shape ops only
    #: (views, permutes, clones, concatenation: MoLA-Router's fused weights); its per-group gradient
    #: goes back to those parameters through the nodes' own backward functions (:func:`_through_chain`).
    chains: dict[str, object] = field(default_factory=dict)


@dataclass
class _Plan:
    consumers: list[_Consumer]
    groups: list[Tensor]
    #: False when a train-mode BatchNorm with whole-batch statistics couples the samples: the split
    #: gradients are then approximate (module docstring); True when they are the exact per-task gradients.
    exact: bool = True
    #: True when every shared parameter is consumed by one node (the Gramian path needs it).
    single_consumer: bool = True
    #: ``groups`` as slices where a group is a contiguous run of rows (a task-sorted batch): views, not copies.
    slices: list[Tensor | slice] | None = None
    #: shared parameters (positions) reached through a consumer's shape-op chain (``_Consumer.chains``).
    chained: list[int] = field(default_factory=list)

    def onehot(self, like: Tensor) -> Tensor:
        """(T', B) group indicator in ``like``'s dtype and device."""
        batch = int(sum(int(g.numel()) for g in self.groups))
        H = like.new_zeros((len(self.groups), batch))
        for t, g in enumerate(self.groups):
            H[t, g] = 1
        return H


def _plan_sample_groups(
    losses: Tensor, shared: Sequence[nn.Parameter], groups: Sequence[Tensor] | None
) -> tuple[_Plan | None, str]:
    if groups is None or any(g is None for g in groups):
        return None, "the step context has no task groups"
    batch = int(sum(int(g.numel()) for g in groups))
    owner = torch.full((batch,), -1, dtype=torch.long)
    slices: list[Tensor | slice] = []
    for t, g in enumerate(groups):
        idx = g.cpu()
        if idx.numel() and (int(idx.max()) >= batch or bool((owner[idx] >= 0).any())):
            return None, "task groups overlap (single-input setting: every sample serves every task)"
        owner[idx] = t
        first = int(idx[0]) if idx.numel() else 0
        run = idx.numel() > 0 and bool((idx == torch.arange(first, first + idx.numel())).all())
        slices.append(slice(first, first + idx.numel()) if run else g)
    if not _CHECKING and self_check() != "passed":
        return None, "the one-backward per-task gradients failed their start-up self-check on this torch (see warnings)"
    index = {id(p): i for i, p in enumerate(shared)}
    consumers: dict[int, _Consumer] = {}
    uses = [0] * len(shared)
    chained: set[int] = set()
    coupled = False
    roots = [losses.grad_fn] if losses.grad_fn is not None else []
    seen: set[int] = set()
    while roots:
        node = roots.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        coupled = coupled or _couples_samples(node, batch, index, {int(g.numel()) for g in groups})
        for slot, (child, _) in enumerate(node.next_functions):
            if child is None:
                continue
            target = _shared_leaf(child, index)
            if target is not None:
                role = _role(node, slot, child)
                if role is None:
                    return None, f"shared parameter consumed by unsupported op {type(node).__name__}"
                entry = consumers.get(id(node))
                if entry is None:
                    entry = consumers[id(node)] = _Consumer(node, _kind(node), {}, {})
                entry.slots[role] = target
                uses[target] += 1
                continue
            role = _role(node, slot, child)
            source = child.next_functions[0][0] if type(child).__name__ == "TBackward0" and child.next_functions else child
            leaves = _chain_leaves(source, index) if role is not None and source is not None else None
            if leaves:  # a weight made of shared parameters by shape ops only
                entry = consumers.get(id(node))
                if entry is None:
                    entry = consumers[id(node)] = _Consumer(node, _kind(node), {}, {})
                entry.slots[role] = -1
                entry.chains[role] = source
                for j in leaves:
                    uses[j] += 1
                chained.update(leaves)
                continue
            roots.append(child)
    for c in consumers.values():
        why = _unpack(c, batch)
        if why:
            return None, why
    device_groups = [g.to(losses.device) for g in groups]
    # The Gramian path reads one consumer per parameter, each seeing one row per sample.
    single = max(uses, default=0) <= 1 and not chained and all(c.saved.get("rows_per_sample", 1) == 1 for c in consumers.values())
    plan = _Plan(
        list(consumers.values()), device_groups, not coupled, single,
        [g if isinstance(g, slice) else d for g, d in zip(slices, device_groups, strict=True)], sorted(chained),
    )
    return plan, ""


#: Autograd nodes that only move, copy or concatenate values: a weight built from shared parameters by
#: these is a linear, sample-independent function of them, so its per-group gradients map back exactly.
_SHAPE_OPS = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "PermuteBackward0", "TransposeBackward0",
    "TBackward0", "CloneBackward0", "CatBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
    "UnsqueezeBackward0", "AliasBackward0",
})


def _chain_leaves(node: object, index: dict[int, int]) -> list[int] | None:
    """Positions in ``shared`` of the parameters ``node`` is made of by shape ops only (None otherwise)."""
    name = type(node).__name__
    if name == "AccumulateGrad":
        j = index.get(id(node.variable))  # type: ignore[attr-defined]
        return None if j is None else [j]
    if name not in _SHAPE_OPS:
        return None
    leaves: list[int] = []
    for child, _ in node.next_functions:  # type: ignore[attr-defined]
        if child is None:
            continue
        sub = _chain_leaves(child, index)
        if sub is None:
            return None
        leaves += sub
    return leaves or None


def _through_chain(node: object, grad: Tensor, index: dict[int, int]) -> list[tuple[int, Tensor]]:
    """``grad`` of the tensor ``node`` produced, taken back to the shared parameters it is made of
    (each shape op's own backward, called as a function: the public ``Node.__call__``)."""
    if type(node).__name__ == "AccumulateGrad":
        return [(index[id(node.variable)], grad)]  # type: ignore[attr-defined]
    grads = node(grad)  # type: ignore[operator]
    grads = (grads,) if isinstance(grads, Tensor) else grads
    out: list[tuple[int, Tensor]] = []
    for (child, _), g in zip(node.next_functions, grads, strict=True):  # type: ignore[attr-defined]
        if child is not None and g is not None:
            out += _through_chain(child, g, index)
    return out


def _kind(node: object) -> str:
    return "TaskBatchNorm" if getattr(node, "task_norm", False) else type(node).__name__


def _couples_samples(node: object, batch: int, shared: dict[int, int], group_sizes: set[int]) -> bool:
    """Whether ``node`` is a BatchNorm normalising with whole-batch statistics (train mode).

    Per-task BatchNorm (``models.task_norm``) does not couple tasks; eval-mode BatchNorm on CPU
    saves ``training=False``; nor does a task's own BatchNorm (a task expert's, a head's: its affine
    weight is not a shared parameter) run on fewer rows than the batch, as many as one task has:
    the architecture routed that task's rows alone through it (CGC, PLE). Any other BatchNorm node
    (cuDNN, MIOpen, new kernels) counts as coupling.
    """
    name = type(node).__name__
    if "BatchNorm" not in name or getattr(node, "task_norm", False):
        return False
    if name == "NativeBatchNormBackward0":
        if not node._saved_training:  # type: ignore[attr-defined]
            return False
        rows = int(node._saved_input.shape[0])  # type: ignore[attr-defined]
        weight = node.next_functions[1][0] if len(node.next_functions) > 1 else None  # type: ignore[attr-defined]
        private = weight is not None and type(weight).__name__ == "AccumulateGrad" and id(weight.variable) not in shared
        return not (private and rows < batch and rows in group_sizes)
    return True


def _shared_leaf(node: object, index: dict[int, int]) -> int | None:
    """Position in ``shared`` of the parameter this graph node accumulates into (also via a transpose)."""
    if node is None:
        return None
    name = type(node).__name__
    if name == "AccumulateGrad":
        return index.get(id(node.variable))
    if name == "TBackward0":
        return _shared_leaf(node.next_functions[0][0], index) if node.next_functions else None
    return None


_ROLES: dict[str, dict[tuple[int, bool], str]] = {
    # (slot in next_functions, reached through a transpose) -> role
    "ConvolutionBackward0": {(1, False): "weight", (2, False): "bias"},
    "NativeBatchNormBackward0": {(1, False): "weight", (2, False): "bias"},
    "NativeLayerNormBackward0": {(1, False): "weight", (2, False): "bias"},
    "TaskBatchNorm": {(1, False): "weight", (2, False): "bias"},  # models.task_norm (forward inputs x, weight, bias)
    "AddmmBackward0": {(0, False): "bias", (2, True): "weight"},  # nn.Linear on (B, in)
    "MmBackward0": {(1, True): "weight"},  # nn.Linear without bias on (B, in)
}


def _role(node: object, slot: int, child: object) -> str | None:
    return _ROLES.get(_kind(node), {}).get((slot, type(child).__name__ == "TBackward0"))


def _unpack(c: _Consumer, batch: int) -> str:
    """Read the saved tensors now (they are freed by the backward) and check the batch layout."""
    n = c.node
    if c.kind == "ConvolutionBackward0":
        if n._saved_transposed:  # type: ignore[attr-defined]
            return "transposed convolution in the shared parameters"
        c.saved = {
            "input": n._saved_input, "weight": n._saved_weight,  # type: ignore[attr-defined]
            "bias_sizes": n._saved_bias_sym_sizes_opt, "stride": n._saved_stride,  # type: ignore[attr-defined]
            "padding": n._saved_padding, "dilation": n._saved_dilation,  # type: ignore[attr-defined]
            "output_padding": n._saved_output_padding, "groups": n._saved_groups,  # type: ignore[attr-defined]
        }
    elif c.kind == "NativeBatchNormBackward0":
        x = n._saved_input  # type: ignore[attr-defined]
        if n._saved_training:  # type: ignore[attr-defined]
            mean, invstd = n._saved_result1, n._saved_result2  # type: ignore[attr-defined]
        else:
            mean = n._saved_running_mean  # type: ignore[attr-defined]
            invstd = torch.rsqrt(n._saved_running_var + n._saved_eps)  # type: ignore[attr-defined]
        c.saved = {"input": x, "mean": mean, "invstd": invstd}
    elif c.kind == "NativeLayerNormBackward0":
        c.saved = {"input": n._saved_input, "mean": n._saved_result1, "rstd": n._saved_result2}  # type: ignore[attr-defined]
    elif c.kind == "TaskBatchNorm":
        # Our own autograd function: public ``saved_tensors``; its backward keeps the per-sample affine
        # gradients on the node when asked (``record_per_sample``), so they cost nothing here.
        x, _, mean, invstd = n.saved_tensors  # type: ignore[attr-defined]
        c.saved = {"input": x, "mean": mean, "invstd": invstd, "spread": n.spread}  # type: ignore[attr-defined]
    elif c.kind == "AddmmBackward0":
        alpha, beta = float(n._saved_alpha), float(n._saved_beta)  # type: ignore[attr-defined]
        if ("weight" in c.slots and alpha != 1.0) or ("bias" in c.slots and beta != 1.0):
            return "scaled addmm in the shared parameters"
        c.saved = {"input": n._saved_mat1}  # type: ignore[attr-defined]
    elif c.kind == "MmBackward0":
        c.saved = {"input": n._saved_self}  # type: ignore[attr-defined]
    x = c.saved["input"]
    if c.kind in ("AddmmBackward0", "MmBackward0") and isinstance(x, Tensor) and x.dim() == 2 and x.shape[0] != batch:
        rows = _rows_per_sample(n, c.kind, int(x.shape[0]), batch)
        if rows:
            c.saved["rows_per_sample"] = rows
            return ""
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != batch:
        return f"{c.kind} does not see the batch as leading dimension (shape {getattr(x, 'shape', None)})"
    return ""


def _rows_per_sample(node: object, kind: str, rows: int, batch: int) -> int:
    """m when a matrix product's input rows are m positions of each sample, sample-major: the input is
    a view flattening a tensor whose first dimension is the batch (``nn.Linear`` or ``matmul`` on
    (B, L, D) tokens or (B, P, C) positions); 0 otherwise (nothing is assumed about other layouts)."""
    if rows % batch:
        return 0
    producer = node.next_functions[1 if kind == "AddmmBackward0" else 0][0]  # type: ignore[attr-defined]
    if type(producer).__name__ not in ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0"):
        return 0
    sizes = [int(v) for v in producer._saved_self_sym_sizes]  # type: ignore[attr-defined]
    m = rows // batch
    return m if len(sizes) >= 3 and sizes[0] == batch and math.prod(sizes[1:-1]) == m else 0


def _group_sum(per_sample: Tensor, groups: Sequence[Tensor | slice]) -> list[Tensor]:
    return [per_sample[g].sum(0) for g in groups]


def _consumer_grads(c: _Consumer, go: Tensor, groups: Sequence[Tensor | slice]) -> dict[str, list[Tensor]]:
    """Per-group gradients of the parameters ``c`` consumes, for the given groups (index tensors or slices)."""
    s, out = c.saved, {}
    if c.kind == "ConvolutionBackward0":
        need_bias = "bias" in c.slots
        ws, bs = [], []
        x, w = s["input"], s["weight"]
        if "weight" in c.slots and x.dim() == 4 and s["groups"] == 1 and go[0, 0].numel() <= _UNFOLD_MAX_POSITIONS:
            # Small feature maps: one im2col of the batch, then one GEMM per group beats T tiny
            # convolution backward calls (measured on ResNet-18 layer3/4 at 28x28 input).
            cols = F.unfold(x, w.shape[2:], dilation=s["dilation"], padding=s["padding"], stride=s["stride"])
            g2 = go.flatten(2)
            ws = [torch.tensordot(g2[g], cols[g], dims=([0, 2], [0, 2])) for g in groups]
            if need_bias:
                bs = _group_sum(go.flatten(2).sum(2), groups)
            out["weight"] = ws
            if need_bias:
                out["bias"] = bs
            return out
        for g in groups:
            _, gw, gb = torch.ops.aten.convolution_backward(
                go[g], s["input"][g], s["weight"], s["bias_sizes"] if need_bias else None, s["stride"], s["padding"],
                s["dilation"], False, s["output_padding"], s["groups"], [False, "weight" in c.slots, need_bias],
            )
            ws.append(gw)
            bs.append(gb)
        if "weight" in c.slots:
            out["weight"] = ws
        if need_bias:
            out["bias"] = bs
    elif c.kind == "NativeBatchNormBackward0":
        x = s["input"]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - s["mean"].view(shape)) * s["invstd"].view(shape)
        dims = tuple(range(2, x.dim()))
        if "weight" in c.slots:
            out["weight"] = _group_sum((go * xhat).sum(dims) if dims else go * xhat, groups)
        if "bias" in c.slots:
            out["bias"] = _group_sum(go.sum(dims) if dims else go, groups)
    elif c.kind == "TaskBatchNorm":
        per_task = getattr(c.node, "per_task", None)  # recorded by the sliced backward: one row per present task
        if per_task is not None and per_task[0].shape[0] == len(groups):
            c.node.record_per_sample, c.node.per_task = False, None  # type: ignore[attr-defined]
            if "weight" in c.slots:
                out["weight"] = list(per_task[0].unbind(0))
            if "bias" in c.slots:
                out["bias"] = list(per_task[1].unbind(0))
        else:
            dw, db = _task_norm_per_sample(c, go)
            if "weight" in c.slots:
                out["weight"] = _group_sum(dw, groups)
            if "bias" in c.slots:
                out["bias"] = _group_sum(db, groups)
    elif c.kind == "NativeLayerNormBackward0":
        x = s["input"]
        xhat = (x - s["mean"]) * s["rstd"]
        nd = c.node._saved_normalized_shape  # type: ignore[attr-defined]
        dims = tuple(range(1, x.dim() - len(nd)))
        if "weight" in c.slots:
            prod = go * xhat
            out["weight"] = _group_sum(prod.sum(dims) if dims else prod, groups)
        if "bias" in c.slots:
            out["bias"] = _group_sum(go.sum(dims) if dims else go, groups)
    else:  # AddmmBackward0 / MmBackward0: out = x @ W^T (+ b), m sample-major rows per sample
        x, m = s["input"], int(s.get("rows_per_sample", 1))  # type: ignore[call-overload]
        if m > 1:
            x, go = x.unflatten(0, (-1, m)), go.unflatten(0, (-1, m))
        if "weight" in c.slots:
            out["weight"] = [go[g].flatten(0, -2).t() @ x[g].flatten(0, -2) for g in groups]
        if "bias" in c.slots:
            out["bias"] = _group_sum(go.sum(1) if m > 1 else go, groups)
    return out


def _record_per_sample(plan: _Plan) -> None:
    """Ask the per-task BatchNorm nodes to keep their per-sample affine gradients in this backward."""
    for c in plan.consumers:
        if c.kind == "TaskBatchNorm":
            c.node.record_per_sample = True  # type: ignore[attr-defined]


def _task_norm_per_sample(c: _Consumer, go: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample affine gradients ``(sum_l g xhat, sum_l g)`` (B, C) of a per-task BatchNorm node:
    recorded by its backward, or (when the backward did not run) from its output gradient."""
    recorded = getattr(c.node, "per_sample", None)
    c.node.record_per_sample, c.node.per_sample = False, None  # type: ignore[attr-defined]
    if recorded is not None:
        return recorded
    s = c.saved
    x, spread = s["input"], s["spread"]
    B, C = x.shape[0], x.shape[1]
    xhat = (x.reshape(B, C, -1) - (spread @ s["mean"]).unsqueeze(2)) * (spread @ s["invstd"]).unsqueeze(2)
    g = go.reshape(B, C, -1)
    return (g * xhat).sum(2), g.sum(2)


def _sample_groups(
    losses: Tensor,
    shared: Sequence[nn.Parameter],
    others: Sequence[nn.Parameter],
    plan: _Plan,
    retain: bool,
    buffer: dict[str, Tensor] | None,
) -> TaskGradients:
    # Ask autograd for the gradients *flowing into* each consumer node (its output gradients),
    # as GradientEdges: the backward then propagates activation gradients only and never computes
    # the shared weight gradients itself, which we compute per group below (no double work).
    _record_per_sample(plan)
    edges = [GradientEdge(c.node, 0) for c in plan.consumers]
    grads = torch.autograd.grad(losses.sum(), [*edges, *others], retain_graph=retain, allow_unused=True)
    T = losses.shape[0]
    offsets, P = flat_views(shared)
    G = _reuse(buffer, (T, P), losses)
    written = [False] * len(shared)
    index = {id(p): i for i, p in enumerate(shared)}
    with torch.no_grad():  # saved activations carry graph history; G must not
        for j in plan.chained:  # accumulated into below, possibly from several consumers
            G[:, offsets[j]: offsets[j] + shared[j].numel()].zero_()
            written[j] = True
        for c, go in zip(plan.consumers, grads[: len(edges)], strict=True):
            if go is None:
                continue
            for role, per_group in _consumer_grads(c, go, plan.groups).items():
                if role in c.chains:
                    for t, g in enumerate(per_group):
                        for j, gj in _through_chain(c.chains[role], g, index):
                            G[t, offsets[j]: offsets[j] + shared[j].numel()].add_(gj.reshape(-1))
                    continue
                j = c.slots[role]
                block = G[:, offsets[j]: offsets[j] + shared[j].numel()]
                for t, g in enumerate(per_group):
                    (block[t].add_ if written[j] else block[t].copy_)(g.reshape(-1))
                written[j] = True
        for j, done in enumerate(written):
            if not done:  # parameter unused by these losses
                G[:, offsets[j]: offsets[j] + shared[j].numel()].zero_()
    return TaskGradients(G, list(grads[len(edges):]), "sample_groups", plan.exact)


# ----------------------------------------------------------------------- Gramian path


def _sample_groups_gramian(
    losses: Tensor,
    shared: Sequence[nn.Parameter],
    others: Sequence[nn.Parameter],
    plan: _Plan,
    retain: bool,
    force: str | None = None,
) -> TaskGradients:
    """``M = G G^T`` and ``c -> c^T G`` from one backward, without forming the T x P matrix ``G``.

    ``M`` is a sum over parameters, ``M = sum_p G_p G_p^T``, and each layer's share comes from
    what its consumer node sees: its input ``a`` and output gradient ``delta``. Per layer, the
    cheaper of two exact forms (``force``: "gram" or "blocks" for tests):

    blocks   the T per-task gradient blocks ``G_p[t] = sum_{s in t} delta_s (x) a_s`` (as in
             ``sample_groups``; for a task-sorted batch, the convolution's own weight gradient on
             each task's rows), ``M_p = G_p G_p^T`` (:func:`gramian`), kept for ``c^T G_p``;
    gram     with rows ``i = (sample s, output position q)``, ``A_i`` the receptive field (im2col)
             and ``D_i`` the output gradient, ``<G_p[t], G_p[u]> = sum_{i in t, j in u} (D_i . D_j)
             (A_i . A_j)``: ``M_p = H K H^T`` with ``K = (D D^T) o (A A^T)`` summed over positions
             and ``H`` the (T, B) group indicator; ``c^T G_p = (r o D)^T A`` with ``r_i = c_{t(i)}``,
             one weight-gradient GEMM of the whole batch (what EW's backward computes anyway).
             Kernel taps that only see padding are dropped from ``A``. Chosen when cheaper in
             flops (:func:`_gram_is_cheaper`): ResNet layer4 on 1 x 1 maps, where it also spares
             writing and reading T x P floats.

    Needs exact per-sample attribution (``plan.exact``) and one consumer per parameter.
    """
    _record_per_sample(plan)
    edges = [GradientEdge(c.node, 0) for c in plan.consumers]
    grads = torch.autograd.grad(losses.sum(), [*edges, *others], retain_graph=retain, allow_unused=True)
    T = losses.shape[0]
    M = torch.zeros((T, T), dtype=torch.float64, device=losses.device)
    parts: list[tuple[int, Callable[[Tensor], Tensor]]] = []
    with torch.no_grad():
        H = None
        for c, go in zip(plan.consumers, grads[: len(edges)], strict=True):
            if go is None:
                continue
            H = plan.onehot(go) if H is None or H.dtype != go.dtype or H.device != go.device else H
            for role, j in c.slots.items():
                gram, combine = _layer_gramian(c, role, go, H, plan.slices or plan.groups, force)
                M += gram
                parts.append((j, combine))

    def combine(coef: Tensor) -> list[Tensor]:
        out: list[Tensor | None] = [None] * len(shared)
        with torch.no_grad():
            for j, part in parts:
                g = part(coef).reshape(shared[j].shape)
                out[j] = g if out[j] is None else out[j] + g
        return [torch.zeros_like(p) if g is None else g for g, p in zip(out, shared, strict=True)]

    return TaskGradients(None, list(grads[len(edges):]), "sample_groups", True, (M + M.T) / 2, combine)


def _blocks_gramian(blocks: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """``M_p`` and ``c -> c^T G_p`` from the per-task blocks ``G_p`` (T, numel)."""
    return gramian(blocks), lambda coef: coef.to(blocks) @ blocks


def _rows_gramian(
    D: Tensor, A: Tensor, positions: int, H: Tensor
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Sample-Gramian form for a weight ``W`` with gradient ``sum_i D_i A_i^T`` over rows
    ``i = (s, q)`` (``D`` (B Q, C_out), ``A`` (B Q, K), rows sample-major): ``M_p = H K H^T``."""
    K = (D @ D.T) * (A @ A.T)
    B = D.shape[0] // positions
    if positions > 1:
        K = K.view(B, positions, B, positions).sum((1, 3))
    H64 = H.double()
    M = H64 @ K.double() @ H64.T

    def combine(coef: Tensor) -> Tensor:
        r = coef.to(H) @ H  # (B,) each sample's task coefficient
        if positions > 1:
            r = r.repeat_interleave(positions)
        return (D * r.unsqueeze(1)).T @ A

    return M, combine


def _gram_is_cheaper(rows: int, c_out: int, k_active: int, k: int) -> bool:
    """Sample-Gramian flops ``2 R^2 (C_out + K_active)`` (R = B x output positions) against the
    per-task blocks' ``2 R C_out K`` (the weight gradient, split by group). Measured on CPU
    (ResNet-18 at 28 x 28): the Gram form wins on 1 x 1 maps (layer4; also ~5x faster than
    per-group convolution backwards there), the blocks on 2 x 2 and larger maps."""
    return rows * (c_out + k_active) <= c_out * k


def _layer_gramian(
    c: _Consumer, role: str, go: Tensor, H: Tensor, groups: Sequence[Tensor | slice], force: str | None
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """One parameter's share of ``M`` and of ``c^T G`` (see :func:`_sample_groups_gramian`)."""
    T, B = H.shape
    s = c.saved
    if role == "weight" and c.kind == "ConvolutionBackward0" and s["input"].dim() == 4 and s["groups"] == 1:
        x, w = s["input"], s["weight"]
        positions = go[0, 0].numel()
        c_out, c_in = w.shape[0], w.shape[1]
        taps = _active_taps(tuple(x.shape[2:]), tuple(w.shape[2:]), s, x.device)
        k = c_in * (w[0, 0].numel() if taps is None else int(taps.numel()))
        if force == "gram" or (force is None and _gram_is_cheaper(B * positions, c_out, k, w[0].numel())):
            A = F.unfold(x, w.shape[2:], dilation=s["dilation"], padding=s["padding"], stride=s["stride"])  # (B, K, Q)
            if taps is not None:  # drop the kernel taps that only ever see padding: their gradient is 0
                A = A.view(B, c_in, -1, positions)[:, :, taps].reshape(B, k, positions)
            if positions == 1:
                M, combine = _rows_gramian(go.reshape(B, c_out), A.reshape(B, k), 1, H)
            else:
                D = go.flatten(2).transpose(1, 2).reshape(B * positions, c_out)
                M, combine = _rows_gramian(D, A.transpose(1, 2).reshape(B * positions, k), positions, H)
            return M, combine if taps is None else _scatter_taps(combine, w.shape, taps)
    if role == "weight" and c.kind == "ConvolutionBackward0" and all(isinstance(g, slice) for g in groups):
        # Contiguous groups (a task-sorted batch): the convolution's own weight gradient on each
        # group's rows, as views (2-3x faster than im2col + GEMM on ResNet layer2/3 maps).
        x, w = s["input"], s["weight"]
        blocks = go.new_empty((T, w.numel()))
        for t, g in enumerate(groups):
            _, gw, _ = torch.ops.aten.convolution_backward(
                go[g], x[g], w, None, s["stride"], s["padding"], s["dilation"], False, s["output_padding"], s["groups"],
                [False, True, False],
            )
            blocks[t] = gw.reshape(-1)
        return _blocks_gramian(blocks)
    if role == "weight" and c.kind in ("AddmmBackward0", "MmBackward0"):
        x = s["input"]
        if force == "gram" or (force is None and _gram_is_cheaper(B, go.shape[1], x.shape[1], x.shape[1])):
            return _rows_gramian(go, x, 1, H)
    if c.kind in ("TaskBatchNorm", "NativeBatchNormBackward0", "NativeLayerNormBackward0") or (
        role == "bias" and c.kind in ("ConvolutionBackward0", "AddmmBackward0")
    ):
        per_sample = _per_sample(c, role, go)
        return _blocks_gramian(H @ per_sample.flatten(1))
    only = _Consumer(c.node, c.kind, {role: c.slots[role]}, c.saved)
    return _blocks_gramian(torch.stack([g.reshape(-1) for g in _consumer_grads(only, go, groups)[role]]))


_TAPS: dict[tuple, Tensor | None] = {}


def _active_taps(size: tuple[int, ...], kernel: tuple[int, ...], s: dict[str, object], device: torch.device) -> Tensor | None:
    """Indices of the kernel taps that see the input at some output position (``None``: all do).

    On maps no larger than the kernel reach (ResNet layer4 at 1 x 1: a 3 x 3 kernel with padding 1
    sees the input through its centre tap only), the other taps multiply padding zeros."""
    key = (size, kernel, tuple(s["stride"]), tuple(s["padding"]), tuple(s["dilation"]), str(device))  # type: ignore[arg-type]
    if key not in _TAPS:
        ones = torch.ones((1, 1, *size), device=device)
        seen = F.unfold(ones, kernel, dilation=s["dilation"], padding=s["padding"], stride=s["stride"]).sum((0, 2)) > 0
        _TAPS[key] = None if bool(seen.all()) else torch.nonzero(seen).flatten()
    return _TAPS[key]


def _scatter_taps(combine: Callable[[Tensor], Tensor], shape: torch.Size, taps: Tensor) -> Callable[[Tensor], Tensor]:
    """``combine`` on the active taps only, scattered into a zero weight gradient of ``shape``."""

    def full(coef: Tensor) -> Tensor:
        part = combine(coef).view(shape[0], shape[1], -1)
        out = part.new_zeros((shape[0], shape[1], shape[2] * shape[3]))
        out[:, :, taps] = part
        return out.view(shape)

    return full


def _per_sample(c: _Consumer, role: str, go: Tensor) -> Tensor:
    """Per-sample contributions (B, ...) to the gradient of a normalisation's affine parameter or a bias."""
    if c.kind == "TaskBatchNorm":
        cached = c.saved.get("per_sample")
        if cached is None:
            cached = c.saved["per_sample"] = _task_norm_per_sample(c, go)
        return cached[0] if role == "weight" else cached[1]
    if c.kind == "ConvolutionBackward0":
        return go.flatten(2).sum(2)
    if c.kind == "AddmmBackward0":
        return go
    s = c.saved
    x = s["input"]
    if c.kind == "NativeBatchNormBackward0":
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - s["mean"].view(shape)) * s["invstd"].view(shape)
        dims = tuple(range(2, x.dim()))
    else:  # NativeLayerNormBackward0
        xhat = (x - s["mean"]) * s["rstd"]
        nd = c.node._saved_normalized_shape  # type: ignore[attr-defined]
        dims = tuple(range(1, x.dim() - len(nd)))
    if role == "weight":
        prod = go * xhat
        return prod.sum(dims) if dims else prod
    return go.sum(dims) if dims else go


def _reuse(buffer: dict[str, Tensor] | None, shape: tuple[int, int], like: Tensor) -> Tensor:
    if buffer is None:
        return like.new_empty(shape)
    old = buffer.get("G")
    if old is None or old.shape != shape or old.dtype != like.dtype or old.device != like.device:
        old = buffer["G"] = like.new_empty(shape)
    return old


def gramian(G: Tensor, chunk: int = 1 << 16) -> Tensor:
    """``M = G G^T`` as a float64 sum of float32 products over column chunks.

    One float32 GEMM over all P ~ 10^7 columns would accumulate rounding over P terms; chunks of
    ``c`` columns summed in float64 bound it to the rounding of a c-term dot product, typically
    ``sqrt(c) u sqrt(M_ii M_jj)`` (u = 2^-24), ~1e-6 of the diagonal for c = 2^16. G itself comes
    out of float32 backprop with rounding of that order, so a more exact product buys nothing,
    and it costs: float64 chunks take twice the time, 4k-column chunks add per-call overhead that
    shows at T = 3 (measured in ``scripts/bench_weighting.py``).
    """
    M = G.new_zeros((G.shape[0], G.shape[0]), dtype=torch.float64)
    for block in G.split(chunk, dim=1):
        M += (block @ block.T).double()
    return (M + M.T) / 2  # GEMM output is not bitwise symmetric; eigh and the QP solvers assume it is


# ------------------------------------------------------------------------- self-check

_CHECKING = False
_SELF_CHECK: str | None = None


def self_check() -> str:
    """``"passed"``, or why the one-backward per-task gradients cannot be trusted on this torch.

    ``sample_groups`` reads autograd's saved tensors (``_saved_input`` ...) and node class names,
    a private interface. Once per process, on first use, a tiny network with every supported
    consumer (convolution on the GEMM and on the ``convolution_backward`` path, with and without
    bias, on a 1 x 1 map; per-task BatchNorm; eval-mode BatchNorm; ``nn.Linear`` with and without
    bias; LayerNorm; then weights built by shape-op chains and matrix products on per-position rows)
    is differentiated both ways, ``G`` and the Gramian path (both layer forms) against ``exact``.
    On a mismatch or an error it warns and ``auto`` uses ``exact`` from then on (and
    ``sample_groups`` refuses). The global RNG is left untouched.
    """
    global _CHECKING, _SELF_CHECK
    if _SELF_CHECK is None:
        _CHECKING = True
        try:
            _SELF_CHECK = _run_self_check()
        except Exception as exc:  # any failure of the private interface
            _SELF_CHECK = f"failed: {type(exc).__name__}: {exc}"
        finally:
            _CHECKING = False
        if _SELF_CHECK != "passed":
            warnings.warn(
                f"one-backward per-task gradients (grad_mode sample_groups) {_SELF_CHECK} on torch {torch.__version__}; "
                "gradient methods fall back to exact per-task gradients (correct, about T backward passes)",
                RuntimeWarning,
                stacklevel=2,
            )
    return _SELF_CHECK


def _run_self_check() -> str:
    from molabench.models.task_norm import TaskNormContext, convert_batchnorm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        context = TaskNormContext()
        frozen = nn.BatchNorm2d(6)
        net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),  # 36 positions: convolution_backward
            nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), frozen, nn.ReLU(),  # 9 positions: im2col GEMM
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(6, 6, 3, padding=1),  # 1 x 1 map: only the centre tap sees the input
            nn.Flatten(), nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 5, bias=False),
        )
        convert_batchnorm(net, context)
        frozen.eval()
        with torch.no_grad():
            frozen.running_mean.uniform_(-0.5, 0.5)
            frozen.running_var.uniform_(0.5, 2.0)
        heads = nn.ModuleList(nn.Linear(5, 3) for _ in range(3))
        task = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
        x, y = torch.randn(9, 3, 6, 6), torch.randint(0, 3, (9,))
        groups = [torch.nonzero(task == t).flatten() for t in range(3)]
        shared, others = list(net.parameters()), list(heads.parameters())

        def losses() -> Tensor:
            with context.scope(task):
                z = net(x)
            return torch.stack([F.cross_entropy(h(z[g]), y[g]) for h, g in zip(heads, groups, strict=True)])

        ref = _exact(losses(), shared, others, False).G
        scale = float(ref.abs().max())
        fast = task_gradients(losses(), shared, others, groups, "sample_groups")
        if fast.mode != "sample_groups" or fast.G is None:
            return "failed: sample_groups unavailable on the check network"
        err = float((fast.G - ref).abs().max())
        if not err <= 1e-4 * scale:
            return f"failed: per-task gradients differ from exact by {err:.3g} (scale {scale:.3g})"
        coef = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
        for force in ("gram", "blocks"):
            step = losses()
            plan, why = _plan_sample_groups(step, shared, groups)
            if plan is None:
                return f"failed: {why}"
            tg = _sample_groups_gramian(step, shared, others, plan, False, force)
            assert tg.M is not None and tg.combine is not None
            Mref = gramian(ref)
            errM = float((tg.M - Mref).abs().max())
            d = torch.cat([g.reshape(-1) for g in tg.combine(coef)])
            errd = float((d - coef.to(ref) @ ref).abs().max())
            if not (errM <= 1e-4 * float(Mref.abs().max()) and errd <= 1e-4 * scale * 4):
                return f"failed: Gramian path ({force}) differs from exact (M by {errM:.3g}, c^T G by {errd:.3g})"
    return _run_chain_check()


class _ChainedLayers(nn.Module):
    """MoLA-Router's layout in miniature: a convolution whose weight concatenates a shared weight and
    a flattened parameter (its fused base + adapter convolution), and a matrix product of a permuted,
    reshaped parameter with every sample's positions (its 1x1 up-projection as ``matmul``)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.3)
        self.a = nn.Parameter(torch.randn(2, 1, 3, 3, 3) * 0.3)
        self.b = nn.Parameter(torch.randn(2, 5, 1) * 0.3)
        self.out = nn.Linear(5, 5, bias=False)  # with a bias, a 3-D input adds it by broadcasting (unsupported)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, torch.cat([self.w, self.a.flatten(0, 1)]), padding=1)
        base, h = y[:, :4], y[:, 4:]
        up = torch.matmul(self.b.permute(1, 0, 2).reshape(5, 2), torch.relu(h).flatten(2))  # (B, 5, H*W)
        tokens = self.out(up.transpose(1, 2))  # nn.Linear on (B, positions, 5): sample-major rows
        return tokens.mean(1) + base.mean((2, 3)).sum(1, keepdim=True)


def _run_chain_check() -> str:
    """Weights consumed through shape-op chains and matrix products on per-position rows."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = _ChainedLayers()
        heads = nn.ModuleList(nn.Linear(5, 3) for _ in range(3))
        task = torch.tensor([0, 1, 1, 2, 2, 2, 0])
        x, y = torch.randn(7, 3, 5, 5), torch.randint(0, 3, (7,))
        groups = [torch.nonzero(task == t).flatten() for t in range(3)]
        shared, others = list(net.parameters()), list(heads.parameters())

        def losses() -> Tensor:
            z = net(x)
            return torch.stack([F.cross_entropy(h(z[g]), y[g]) for h, g in zip(heads, groups, strict=True)])

        ref = _exact(losses(), shared, others, False).G
        fast = task_gradients(losses(), shared, others, groups, "sample_groups")
        if fast.mode != "sample_groups" or fast.G is None:
            return "failed: sample_groups unavailable on the chained-weights check network"
        err, scale = float((fast.G - ref).abs().max()), float(ref.abs().max())
        if not err <= 1e-4 * scale:
            return f"failed: per-task gradients through shape-op chains differ from exact by {err:.3g} (scale {scale:.3g})"
    return "passed"
