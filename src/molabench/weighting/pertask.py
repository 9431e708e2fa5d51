"""Per-task gradients of the shared parameters: the T x P matrix ``G`` gradient methods combine.

Two ways to get ``G``:

``exact``
    ``G[t] = dL_t/dtheta`` by one vectorised backward over the one-hot task cotangents
    (``torch.autograd.grad(..., is_grads_batched=True)``, a loop of ``retain_graph`` backwards if
    vmap cannot batch an op). Correct for every architecture and setting, but the backward
    compute is T times that of EW: every task's cotangent reaches every sample once it passes a
    train-mode BatchNorm, whose batch statistics couple all samples.

``sample_groups``
    One backward of ``sum_t L_t`` that asks autograd for the output gradients ``delta_s`` of the
    nodes consuming shared parameters (convolution, linear, batch/layer norm; requested as
    ``GradientEdge`` s, so autograd propagates activation gradients only); with the inputs ``a_s``
    those nodes saved, every weight gradient, a sum over samples ``sum_s delta_s (x) a_s``, is
    split by the task owning sample ``s``: ``G[t] = sum_{s in group t} delta_s (x) a_s``. About
    one backward pass of compute whatever T is.
    It needs disjoint groups (multi-input and domain settings: each sample has one task).

    Exactness: ``sum_t G[t]`` is exactly the EW gradient. Each ``G[t]`` equals ``dL_t/dtheta``
    exactly when samples do not interact in the forward pass (no BatchNorm, BatchNorm in eval
    mode, GroupNorm/LayerNorm). With train-mode BatchNorm, task ``t``'s loss also reaches other
    tasks' samples through the batch mean/variance; ``sample_groups`` attributes that part to the
    sample it flows through instead of the loss it comes from. We accept this by default in the
    multi-input setting because (i) it keeps the per-task gradients at about EW's backward cost at any T, where
    ``exact`` costs ~T/2 x at T tasks, and (ii) the reference implementation of these baselines
    on multi-input data (LibMTL) forwards each task's sub-batch separately, so there a task's
    gradient never contains other tasks' samples either: the BN cross terms that ``exact`` adds
    are an artefact of mixing tasks in one batch. ``grad_mode=exact`` recovers true per-task
    gradients of the mixed-batch loss when wanted.

``auto`` (default) uses ``sample_groups`` when the groups are disjoint and every shared
parameter is consumed by a supported op with the batch as leading dimension, ``exact`` otherwise
(single-input setting, ViT token layouts, custom ops).

The node introspection reads autograd's saved tensors (``_saved_input`` ...), an interface
that is stable but private; ``tests/test_weighting_pertask.py`` checks both modes agree where
they must, so a torch upgrade that changes it fails loudly (and ``auto`` then falls back to
``exact`` for unknown nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def check_grad_mode(mode: str) -> GradMode:
    if mode not in GRAD_MODES:
        raise ConfigError(f"grad_mode {mode!r} is not one of {', '.join(GRAD_MODES)}")
    return mode  # type: ignore[return-value]


@dataclass
class TaskGradients:
    """``G`` (T', P) over the shared parameters (rows: present tasks, in order) and the gradient
    of ``sum_t L_t`` for every other requested parameter (``None`` when unused)."""

    G: Tensor
    others: list[Tensor | None]
    mode: str


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
) -> TaskGradients:
    """Per-task gradients of ``losses`` (T',) w.r.t. ``shared``; summed gradients for ``others``.

    ``groups[t]`` are the batch indices of ``losses[t]``'s samples (``None``: unknown, forces exact).
    ``buffer`` (a dict the caller keeps between steps) lets ``sample_groups`` reuse the memory of
    ``G`` instead of allocating and faulting in T x P floats every step.
    ``through``: a representation ``z`` such that every ``shared`` parameter reaches ``losses`` only
    through ``z`` and every ``others`` parameter lies between ``z`` and the losses (an encoder, then
    heads). The exact gradients are then computed in two stages (see :func:`_exact_through`).
    """
    if mode != "exact":
        plan, why = _plan_sample_groups(losses, shared, groups)
        if plan is not None:
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
    slots: dict[str, int]  # "weight"/"bias" -> position of the parameter in ``shared``
    saved: dict[str, object]


@dataclass
class _Plan:
    consumers: list[_Consumer]
    groups: list[Tensor]


def _plan_sample_groups(
    losses: Tensor, shared: Sequence[nn.Parameter], groups: Sequence[Tensor] | None
) -> tuple[_Plan | None, str]:
    if groups is None or any(g is None for g in groups):
        return None, "the step context has no task groups"
    batch = int(sum(int(g.numel()) for g in groups))
    owner = torch.full((batch,), -1, dtype=torch.long)
    for t, g in enumerate(groups):
        idx = g.cpu()
        if idx.numel() and (int(idx.max()) >= batch or bool((owner[idx] >= 0).any())):
            return None, "task groups overlap (single-input setting: every sample serves every task)"
        owner[idx] = t
    index = {id(p): i for i, p in enumerate(shared)}
    consumers: dict[int, _Consumer] = {}
    roots = [losses.grad_fn] if losses.grad_fn is not None else []
    seen: set[int] = set()
    while roots:
        node = roots.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
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
                    entry = consumers[id(node)] = _Consumer(node, type(node).__name__, {}, {})
                entry.slots[role] = target
            elif type(child).__name__ != "TBackward0" or _shared_leaf(child.next_functions[0][0], index) is None:
                roots.append(child)
    for c in consumers.values():
        why = _unpack(c, batch)
        if why:
            return None, why
    return _Plan(list(consumers.values()), [g.to(losses.device) for g in groups]), ""


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
    "AddmmBackward0": {(0, False): "bias", (2, True): "weight"},  # nn.Linear on (B, in)
    "MmBackward0": {(1, True): "weight"},  # nn.Linear without bias on (B, in)
}


def _role(node: object, slot: int, child: object) -> str | None:
    return _ROLES.get(type(node).__name__, {}).get((slot, type(child).__name__ == "TBackward0"))


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
    elif c.kind == "AddmmBackward0":
        alpha, beta = float(n._saved_alpha), float(n._saved_beta)  # type: ignore[attr-defined]
        if ("weight" in c.slots and alpha != 1.0) or ("bias" in c.slots and beta != 1.0):
            return "scaled addmm in the shared parameters"
        c.saved = {"input": n._saved_mat1}  # type: ignore[attr-defined]
    elif c.kind == "MmBackward0":
        c.saved = {"input": n._saved_self}  # type: ignore[attr-defined]
    x = c.saved["input"]
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != batch:
        return f"{c.kind} does not see the batch as leading dimension (shape {getattr(x, 'shape', None)})"
    return ""


def _group_sum(per_sample: Tensor, groups: list[Tensor]) -> list[Tensor]:
    return [per_sample[g].sum(0) for g in groups]


def _consumer_grads(c: _Consumer, go: Tensor, groups: list[Tensor]) -> dict[str, list[Tensor]]:
    """Per-group gradients of the parameters ``c`` consumes, for the given groups."""
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
    else:  # AddmmBackward0 / MmBackward0: out = x @ W^T (+ b)
        x = s["input"]
        if "weight" in c.slots:
            out["weight"] = [go[g].t() @ x[g] for g in groups]
        if "bias" in c.slots:
            out["bias"] = _group_sum(go, groups)
    return out


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
    edges = [GradientEdge(c.node, 0) for c in plan.consumers]
    grads = torch.autograd.grad(losses.sum(), [*edges, *others], retain_graph=retain, allow_unused=True)
    T = losses.shape[0]
    offsets, P = flat_views(shared)
    G = _reuse(buffer, (T, P), losses)
    written = [False] * len(shared)
    with torch.no_grad():  # saved activations carry graph history; G must not
        for c, go in zip(plan.consumers, grads[: len(edges)], strict=True):
            if go is None:
                continue
            for role, per_group in _consumer_grads(c, go, plan.groups).items():
                j = c.slots[role]
                block = G[:, offsets[j]: offsets[j] + shared[j].numel()]
                for t, g in enumerate(per_group):
                    (block[t].add_ if written[j] else block[t].copy_)(g.reshape(-1))
                written[j] = True
        for j, done in enumerate(written):
            if not done:  # parameter unused by these losses
                G[:, offsets[j]: offsets[j] + shared[j].numel()].zero_()
    return TaskGradients(G, list(grads[len(edges):]), "sample_groups")


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
