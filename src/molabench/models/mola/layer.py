"""MoLA layers: a trainable W0 plus E low-rank adapters mixed per sample (paper Eq. 1).

    y = (W0 + sum_e alpha_e * s * B_e A_e) * x,        s = lora_alpha / r

The layers subclass ``nn.Conv2d`` / ``nn.Linear`` and keep the replaced layer's own ``weight``
and ``bias`` parameters, so state-dict keys of W0 are unchanged (an HPS checkpoint loads into
MoLA with ``strict=False``). The adapters are ``lora_A`` / ``lora_B`` with the experts stacked
along the first dimension. ``alpha`` comes from the shared :class:`Routing` object.

Factorisations of a k x k conv adapter:

- ``paper`` (default): A_e in R^{r x (C_in k k)}, B_e in R^{C_out x r}. ``B_e A_e x`` is a k x k
  conv C_in -> r followed by a 1x1 conv r -> C_out, so per-sample merged weights are never built:
  * dense routing: one conv C_in -> E*r (all experts at once), scale the E*r channels by
    ``alpha`` (repeated r times), one 1x1 conv E*r -> C_out (which also sums over experts);
  * grouped routing (batch sorted by expert, equal counts): the batch is folded into channels,
    (G*b, C, H, W) -> (b, G*C, H, W), and A runs as one conv with ``groups=G`` (r channels each;
    on tiny maps a plain conv over all E*r channels whose own-expert block is kept); B is one
    batched matmul over groups.
- ``code`` (authors' loralib convention): A_e (r*k, C_in*k), B_e (C_out*k, r*k),
  ``delta_W_e = (B_e @ A_e).view(C_out, C_in, k, k)`` (rank up to r*k). This does not factor into
  two convs, so the E delta weights are built once per forward (not per sample):
  * dense routing: one (E+1)*C_out-wide conv, outputs mixed by ``alpha`` (the authors' design);
  * grouped routing: one grouped conv with the per-expert merged weights W0 + delta_W_e.
  For k = 1 both factorisations coincide and the paper path is used.

Linear layers (ViT ``qkv``/``proj``/``fc1``/``fc2``) use A_e (r, D_in), B_e (D_out, r); the grouped
path is two batched matmuls over experts.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.errors import ConfigError
from molabench.models.mola.routing import Routing

Factorization = Literal["paper", "code"]

#: Which kernel computes the adapters' A on a map of P output positions (measured on CPU, docs/mola.md):
#: P < FUSED_MIN_POSITIONS: one plain conv over all E*r channels (tiny maps: per-call overhead dominates);
#: FUSED_MIN_POSITIONS <= P <= FUSED_MAX_POSITIONS: W0 and all A_e in ONE conv (C_out + E*r channels), which
#: costs little more than W0 alone on such maps; P > FUSED_MAX_POSITIONS (FLOP-bound): grouped routing runs
#: only each sample's own r channels as one grouped conv.
FUSED_MIN_POSITIONS = 32
FUSED_MAX_POSITIONS = 256
#: Grouped routing builds the G per-task merged weights when their size is at most this fraction of the
#: conv's input work (N * P * C_in * k * k): e.g. ResNet-18's layer1 at 28x28 (measured 2x cheaper there).
MERGED_MAX_WEIGHT_RATIO = 0.25


def to_groups(x: Tensor, groups: int) -> Tensor:
    """(G*b, C, ...) sorted by group -> (b, G*C, ...): the groups become channel groups."""
    b = x.shape[0] // groups
    return x.reshape(groups, b, *x.shape[1:]).transpose(0, 1).reshape(b, groups * x.shape[1], *x.shape[2:])


def from_groups(y: Tensor, groups: int) -> Tensor:
    """Inverse of :func:`to_groups`: (b, G*C, ...) -> (G*b, C, ...)."""
    b, c = y.shape[0], y.shape[1] // groups
    return y.reshape(b, groups, c, *y.shape[2:]).transpose(0, 1).reshape(groups * b, c, *y.shape[2:])


def _expand_weights(weights: Tensor, rank: int, scaling: float) -> Tensor:
    """(N, E) mixing weights -> (N, E*r): expert e's weight repeated over its r channels, times s."""
    return (weights * scaling).repeat_interleave(rank, dim=1)


class MoLAAdapted:
    """What conv and linear MoLA layers share: hyper-parameters, init, routing dispatch."""

    num_experts: int
    rank: int
    scaling: float
    routing: Routing
    lora_A: nn.Parameter
    lora_B: nn.Parameter

    def _init_adapters(
        self, experts: int, rank: int, lora_alpha: float, routing: Routing, shape_a: tuple[int, ...], shape_b: tuple[int, ...]
    ) -> None:
        if experts < 1 or rank < 1:
            raise ConfigError(f"MoLA needs experts >= 1 and rank >= 1, got experts={experts}, rank={rank}")
        self.num_experts, self.rank, self.scaling, self.routing = experts, rank, float(lora_alpha) / rank, routing
        ref = self.weight  # type: ignore[attr-defined]
        self.lora_A = nn.Parameter(torch.empty((experts, *shape_a), device=ref.device, dtype=ref.dtype))
        self.lora_B = nn.Parameter(torch.zeros((experts, *shape_b), device=ref.device, dtype=ref.dtype))
        self.reset_adapters()

    def reset_adapters(self) -> None:
        """A_e ~ kaiming_uniform(a=sqrt(5)) on its 2-D matrix (as loralib), B_e = 0: the layer starts as W0."""
        for e in range(self.num_experts):
            nn.init.kaiming_uniform_(self.lora_A[e].view(self.lora_A.shape[1], -1), a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def _route(self, x: Tensor) -> Tensor:
        routing = self.routing
        if routing.group_size is not None:
            if routing.num_groups != self.num_experts:
                raise RuntimeError(f"grouped routing over {routing.num_groups} groups, but the layer has {self.num_experts} experts")
            return self._grouped(x, self.num_experts)
        if routing.expert is not None:
            return self._single(x, routing.expert)
        if routing.weights is not None:
            return self._dense(x, routing.weights)
        raise RuntimeError("MoLA layer called without routing weights: run it through its MoLA architecture")

    def _dense(self, x: Tensor, weights: Tensor) -> Tensor:
        raise NotImplementedError

    def _grouped(self, x: Tensor, groups: int) -> Tensor:
        raise NotImplementedError

    def _single(self, x: Tensor, expert: int) -> Tensor:
        raise NotImplementedError


class MoLAConv2d(MoLAAdapted, nn.Conv2d):
    """A conv layer with E low-rank adapters (see module docstring for the two factorisations)."""

    def __init__(
        self,
        base: nn.Conv2d,
        experts: int,
        rank: int,
        lora_alpha: float,
        routing: Routing,
        factorization: Factorization = "paper",
    ) -> None:
        kh, kw = base.kernel_size
        if base.groups != 1 or base.padding_mode != "zeros" or kh != kw:
            raise ConfigError("MoLA adapts plain square convolutions only (groups=1, zero padding)")
        if factorization not in ("paper", "code"):
            raise ConfigError(f"method.factorization must be 'paper' or 'code', got {factorization!r}")
        # Built on the meta device (no allocation, no RNG draw), then W0 is the base layer's own parameter.
        nn.Conv2d.__init__(
            self, base.in_channels, base.out_channels, base.kernel_size, base.stride, base.padding,
            base.dilation, 1, base.bias is not None, device="meta",
        )
        self.weight, self.bias = base.weight, base.bias
        k, c_in, c_out = kh, base.in_channels, base.out_channels
        self.factorization: Factorization = "paper" if k == 1 else factorization
        if self.factorization == "paper":
            shape_a, shape_b = (rank, c_in, k, k), (c_out, rank)
        else:
            shape_a, shape_b = (rank * k, c_in * k), (c_out * k, rank * k)
        self._init_adapters(experts, rank, lora_alpha, routing, shape_a, shape_b)

    def forward(self, x: Tensor) -> Tensor:
        return self._route(x)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int = 1) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def delta_weights(self) -> Tensor:
        """All experts' s * delta_W_e as (E, C_out, C_in, k, k) (analysis; the code factorisation's forward)."""
        a = self.lora_A.reshape(self.num_experts, self.lora_B.shape[2], -1)
        return (torch.bmm(self.lora_B, a) * self.scaling).view(self.num_experts, *self.weight.shape)

    def delta_weight(self, expert: int) -> Tensor:
        """One expert's s * delta_W_e as (C_out, C_in, k, k)."""
        a = self.lora_A[expert].reshape(self.lora_B.shape[2], -1)
        return (self.lora_B[expert] @ a * self.scaling).view(self.weight.shape)

    def _positions(self, x: Tensor) -> int:
        """Number of output positions H' x W' of this conv on input ``x``."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        h = (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return h * w

    def _base_and_adapters(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """W0 * x (+ bias) and every expert's A_e * x as (N, E*r, H', W'), fused into one conv on mid-size maps."""
        a = self.lora_A.flatten(0, 1)
        if FUSED_MIN_POSITIONS <= self._positions(x) <= FUSED_MAX_POSITIONS:
            bias = None if self.bias is None else torch.cat([self.bias, self.bias.new_zeros(a.shape[0])])
            out = self._conv(x, torch.cat([self.weight, a]), bias)
            return out[:, : self.out_channels], out[:, self.out_channels :]
        return self._conv(x, self.weight, self.bias), self._conv(x, a)

    def _dense(self, x: Tensor, weights: Tensor) -> Tensor:
        e, r, c_out = self.num_experts, self.rank, self.out_channels
        if self.factorization == "code":
            wide = torch.cat([self.weight.unsqueeze(0), self.delta_weights()]).flatten(0, 1)
            y = self._conv(x, wide).unflatten(1, (e + 1, c_out))
            out = y[:, 0] + torch.einsum("ne,nechw->nchw", weights, y[:, 1:])
            return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)
        y, h = self._base_and_adapters(x)  # h: (N, E*r, H', W'), every expert's A at once
        h = h * _expand_weights(weights, r, self.scaling)[:, :, None, None]
        # The 1x1 conv E*r -> C_out (which also sums over experts) as a matmul: oneDNN is slow on odd channel counts.
        b = self.lora_B.permute(1, 0, 2).reshape(c_out, e * r)
        return y + torch.matmul(b, h.flatten(2)).view_as(y)

    def _grouped(self, x: Tensor, groups: int) -> Tensor:
        if self.factorization == "code":
            merged = (self.weight.unsqueeze(0) + self.delta_weights()).flatten(0, 1)
            bias = None if self.bias is None else self.bias.repeat(groups)
            return from_groups(self._conv(to_groups(x, groups), merged, bias, groups), groups)
        b = x.shape[0] // groups
        if groups * self.weight.numel() <= MERGED_MAX_WEIGHT_RATIO * b * groups * self._positions(x) * self.weight[0].numel():
            # Weights small against the work on the map (early stages): per-task merged weights W0 + s B_g A_g
            # (G of them, never per sample) in one grouped conv — as cheap as W0 alone on CPU.
            delta = torch.bmm(self.lora_B, self.lora_A.reshape(groups, self.rank, -1)) * self.scaling
            merged = (self.weight.unsqueeze(0) + delta.view(groups, *self.weight.shape)).flatten(0, 1)
            bias = None if self.bias is None else self.bias.repeat(groups)
            return from_groups(self._conv(to_groups(x, groups), merged, bias, groups), groups)
        if self._positions(x) > FUSED_MAX_POSITIONS:
            # Large maps (FLOP-bound): only each group's own r channels, as one grouped conv.
            y = self._conv(x, self.weight, self.bias)
            h = self._conv(to_groups(x, groups), self.lora_A.flatten(0, 1), groups=groups)
            h = h.view(b, groups, self.rank, -1).transpose(0, 1)
        else:
            # Small maps (overhead-bound): all experts' channels for every sample, then keep group g's block of
            # expert g (the other blocks get exactly zero gradient).
            y, h_all = self._base_and_adapters(x)
            h_all = h_all.reshape(groups, b, groups, self.rank, -1)
            h = torch.diagonal(h_all, dim1=0, dim2=2).permute(3, 0, 1, 2)
        # B_g for every group at once: (G, 1, C_out, r) @ (G, b, r, P) -> (G, b, C_out, P), already in batch order.
        return y + torch.matmul(self.lora_B.unsqueeze(1) * self.scaling, h).view_as(y)

    def _single(self, x: Tensor, expert: int) -> Tensor:
        if self.factorization == "code":
            return self._conv(x, self.weight + self.delta_weight(expert), self.bias)
        y = self._conv(x, self.weight, self.bias)
        h = self._conv(x, self.lora_A[expert]) * self.scaling
        return y + torch.matmul(self.lora_B[expert], h.flatten(2)).view_as(y)


class MoLALinear(MoLAAdapted, nn.Linear):
    """A linear layer with E low-rank adapters: A_e (r, D_in), B_e (D_out, r); input (N, ..., D_in)."""

    def __init__(self, base: nn.Linear, experts: int, rank: int, lora_alpha: float, routing: Routing) -> None:
        nn.Linear.__init__(self, base.in_features, base.out_features, base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias
        self.factorization: Factorization = "paper"
        self._init_adapters(experts, rank, lora_alpha, routing, (rank, base.in_features), (base.out_features, rank))

    def forward(self, x: Tensor) -> Tensor:
        return self._route(x)

    def delta_weights(self) -> Tensor:
        """All experts' s * B_e A_e as (E, D_out, D_in)."""
        return torch.bmm(self.lora_B, self.lora_A) * self.scaling

    def _dense(self, x: Tensor, weights: Tensor) -> Tensor:
        e, r = self.num_experts, self.rank
        h = F.linear(x, self.lora_A.reshape(e * r, -1))  # (N, ..., E*r)
        w = _expand_weights(weights, r, self.scaling)
        h = h * w.view(w.shape[0], *([1] * (x.dim() - 2)), e * r)
        return F.linear(x, self.weight, self.bias) + F.linear(h, self.lora_B.permute(1, 0, 2).reshape(-1, e * r))

    def _grouped(self, x: Tensor, groups: int) -> Tensor:
        xs = x.reshape(groups, -1, self.in_features)  # batch sorted by expert: a free view per group
        h = torch.bmm(xs, self.lora_A.transpose(1, 2)) * self.scaling
        d = torch.bmm(h, self.lora_B.transpose(1, 2)).reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias) + d

    def _single(self, x: Tensor, expert: int) -> Tensor:
        h = F.linear(x, self.lora_A[expert]) * self.scaling
        return F.linear(x, self.weight, self.bias) + F.linear(h, self.lora_B[expert])
