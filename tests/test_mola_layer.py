"""MoLA layers: fast paths equal a per-sample merged-weight reference (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import molabench.models.mola.layer as layer_module
from molabench.models.mola import MoLAConv2d, MoLALinear, Routing

E, R = 3, 2


def reference_delta(layer: nn.Module) -> torch.Tensor:
    """s * B_e A_e per expert, straight from the definitions (paper Eq. 1 / loralib)."""
    a, b = layer.lora_A, layer.lora_B
    if getattr(layer, "factorization", "paper") == "paper":
        a = a.reshape(a.shape[0], a.shape[1], -1)
    return torch.einsum("eor,eri->eoi", b, a).reshape(E, *layer.weight.shape) * layer.scaling


def reference(layer: nn.Module, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """y_n = (W0 + sum_e alpha_ne s B_e A_e) x_n, one merged weight per sample."""
    delta = reference_delta(layer)
    outs = []
    for n in range(x.shape[0]):
        w = layer.weight + torch.einsum("e,e...->...", alpha[n], delta)
        if isinstance(layer, nn.Conv2d):
            outs.append(F.conv2d(x[n : n + 1], w, layer.bias, layer.stride, layer.padding))
        else:
            outs.append(F.linear(x[n : n + 1], w, layer.bias))
    return torch.cat(outs)


def randomise(layer: nn.Module) -> None:
    with torch.no_grad():
        layer.lora_B.normal_()  # B = 0 at init would hide every adapter bug


def routings(n: int) -> list[tuple[str, torch.Tensor]]:
    """(mode, alpha) pairs: dense softmax, dense one-hot, grouped (sorted, equal counts), single expert."""
    g = torch.Generator().manual_seed(1)
    soft = torch.softmax(torch.randn(n, E, generator=g, dtype=torch.float64), dim=1)
    task = torch.randint(0, E, (n,), generator=g)
    onehot = F.one_hot(task, E).double()
    grouped = F.one_hot(torch.arange(E).repeat_interleave(n // E), E).double()
    single = F.one_hot(torch.full((n,), 1), E).double()
    return [("dense", soft), ("dense", onehot), ("grouped", grouped), ("single", single)]


def apply(layer: nn.Module, routing: Routing, mode: str, alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if mode == "dense":
        routing.set_dense(alpha)
    elif mode == "grouped":
        routing.set_grouped(E, x.shape[0] // E)
    else:
        routing.set_single(int(alpha[0].argmax()))
    try:
        return layer(x)
    finally:
        routing.clear()


@pytest.mark.parametrize("merged_ratio", [0.25, 0.0], ids=["merged-weights-allowed", "merged-weights-off"])
@pytest.mark.parametrize("factorization", ["paper", "code"])
@pytest.mark.parametrize("kernel,stride,size", [(1, 1, 6), (1, 2, 6), (3, 1, 4), (3, 2, 5), (3, 1, 12), (3, 2, 12), (3, 1, 18), (1, 2, 40)])
def test_conv_fast_paths_match_merged_reference(
    factorization: str, kernel: int, stride: int, size: int, merged_ratio: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sizes cover every kernel tier (plain / fused / grouped conv, see layer.py); merged_ratio=0 forces
    # grouped routing off the per-task merged-weight path that these tiny channel counts would always take.
    monkeypatch.setattr(layer_module, "MERGED_MAX_WEIGHT_RATIO", merged_ratio)
    torch.manual_seed(0)
    base = nn.Conv2d(4, 5, kernel, stride, padding=kernel // 2, bias=True).double()
    routing = Routing()
    layer = MoLAConv2d(base, E, R, lora_alpha=4, routing=routing, factorization=factorization).double()
    randomise(layer)
    x = torch.randn(2 * E, 4, size, size, dtype=torch.float64)
    for mode, alpha in routings(x.shape[0]):
        got = apply(layer, routing, mode, alpha, x)
        torch.testing.assert_close(got, reference(layer, x, alpha), rtol=1e-10, atol=1e-10, msg=f"{mode} path")


def test_linear_fast_paths_match_merged_reference() -> None:
    torch.manual_seed(0)
    routing = Routing()
    layer = MoLALinear(nn.Linear(6, 7).double(), E, R, lora_alpha=4, routing=routing).double()
    randomise(layer)
    x = torch.randn(2 * E, 5, 6, dtype=torch.float64)  # (N, tokens, D) as in a ViT
    for mode, alpha in routings(x.shape[0]):
        got = apply(layer, routing, mode, alpha, x)
        want = torch.stack([reference(layer, x[:, i], alpha) for i in range(x.shape[1])], dim=1)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=f"{mode} path")


def test_init_and_shapes() -> None:
    torch.manual_seed(0)
    base = nn.Conv2d(4, 5, 3, padding=1, bias=False)
    paper = MoLAConv2d(base, E, R, 16, Routing())
    assert paper.weight is base.weight and paper.scaling == 8.0
    assert paper.lora_A.shape == (E, R, 4, 3, 3) and paper.lora_B.shape == (E, 5, R)
    assert torch.count_nonzero(paper.lora_B) == 0 and torch.count_nonzero(paper.lora_A) > 0
    code = MoLAConv2d(nn.Conv2d(4, 5, 3, padding=1), E, R, 16, Routing(), factorization="code")
    assert code.lora_A.shape == (E, R * 3, 4 * 3) and code.lora_B.shape == (E, 5 * 3, R * 3)
    assert {k for k, _ in paper.named_parameters()} == {"weight", "lora_A", "lora_B"}


def test_layer_without_routing_raises() -> None:
    layer = MoLALinear(nn.Linear(3, 3), E, R, 16, Routing())
    with pytest.raises(RuntimeError, match="routing"):
        layer(torch.randn(2, 3))
