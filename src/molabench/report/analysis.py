"""The paper's analysis (Section 4, Figs. 3–6) as functions of a trained model.

- :func:`principal_component_ratio` (Fig. 3): for a weight with singular values s_1 >= ... >= s_R,
  K is the smallest k with sum_{i<=k} s_i >= alpha * sum_i s_i (alpha = 0.99); the ratio is K / R.
  Conv weights are reshaped to C_out x (C_in k k).
- :func:`layer_spectra` (Fig. 4): singular values of W0 and of W0 + delta_W_e for every adapter.
- :func:`parameter_counts` (Fig. 5): parameters of each method as the number of tasks grows.
- :func:`router_embeddings` (Fig. 6): the router embedding omega of every sample, with its task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from molabench.data.base import MultiTaskData, TaskSpec
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import MultiTaskAlgorithm


def singular_values(weight: Tensor) -> Tensor:
    """Singular values (descending) of a linear or conv weight seen as C_out x (C_in k k).

    Computed in float64 as the square roots of the eigenvalues of the smaller Gram matrix
    (``W W^T`` or ``W^T W``): about 10x faster than ``svdvals`` on ResNet's 512 x 4608 weights, and
    equal to it within ~1e-14 of the largest singular value (tested), far below what Figs. 3-4 show.
    """
    w = weight.detach().double().reshape(weight.shape[0], -1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)


def principal_component_ratio(weight: Tensor, alpha: float = 0.99) -> float:
    """K / R with K the fewest singular values holding ``alpha`` of their total (paper Sec. 4.1)."""
    s = singular_values(weight)
    cumulative = torch.cumsum(s, 0)
    k = int(torch.searchsorted(cumulative, alpha * cumulative[-1]).item()) + 1
    return min(k, s.numel()) / s.numel()


def adapted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every MoLA layer of a model by qualified name."""
    from molabench.models.mola import MoLAAdapted

    return {name: m for name, m in model.named_modules() if isinstance(m, MoLAAdapted)}


def layer_spectra(model: nn.Module) -> dict[str, dict[str, Tensor]]:
    """``layer -> {"W0": s, "W0+dW_e": s, ...}`` for every adapted layer (Fig. 4)."""
    spectra: dict[str, dict[str, Tensor]] = {}
    for name, layer in adapted_layers(model).items():
        delta = layer.delta_weights().detach()  # type: ignore[operator]
        entry = {"W0": singular_values(layer.weight)}
        for e in range(delta.shape[0]):
            entry[f"W0+dW_{e}"] = singular_values(layer.weight + delta[e])
        spectra[name] = entry
    return spectra


def pc_ratios(model: nn.Module, alpha: float = 0.99) -> dict[str, dict[str, float]]:
    """``layer -> {"W0": ratio, "W0+dW_e": ratio}`` for adapted layers; plain convs get ``W0`` only."""
    ratios: dict[str, dict[str, float]] = {}
    mola = adapted_layers(model)
    for name, module in model.named_modules():
        if name in mola:
            delta = module.delta_weights().detach()  # type: ignore[operator]
            entry = {"W0": principal_component_ratio(module.weight, alpha)}
            entry.update({f"W0+dW_{e}": principal_component_ratio(module.weight + delta[e], alpha) for e in range(delta.shape[0])})
            ratios[name] = entry
        elif isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
            ratios[name] = {"W0": principal_component_ratio(module.weight, alpha)}
    return ratios


def parameter_counts(
    build: Callable[[list[TaskSpec]], nn.Module], task_counts: Sequence[int], num_classes: int = 10
) -> list[int]:
    """Parameters of ``build(tasks)`` for each number of tasks (Fig. 5)."""
    counts = []
    for t in task_counts:
        tasks = [TaskSpec(f"task{i}", num_classes) for i in range(t)]
        counts.append(sum(p.numel() for p in build(tasks).parameters()))
    return counts


@torch.no_grad()
def router_embeddings(
    algorithm: MultiTaskAlgorithm, data: MultiTaskData, split: str = "test", device: str = "cpu", limit: int = 2000
) -> tuple[Tensor, Tensor]:
    """(omega (N, d), task ids (N,)) of up to ``limit`` samples; omega from the TwD map when present."""
    from molabench.penalties.twd import TwD

    twd = next((p for p in algorithm.penalties.values() if isinstance(p, TwD) and len(p.maps)), None)
    embeddings, tasks = [], []
    seen = 0
    for batch in BatchLoader(data, split, 256, train=False, device=device):
        fwd = algorithm.predict(batch.x, batch.task)
        logits = fwd.aux.get("router_logits")
        if logits is None:
            raise ValueError("router embeddings need a model with a router (method=mola_router)")
        omega = twd.embed(logits)[:, 0] if twd is not None else torch.softmax(logits if logits.dim() == 2 else logits[:, 0], -1)
        embeddings.append(omega.cpu())
        tasks.append(batch.task.cpu())
        seen += len(batch)
        if seen >= limit:
            break
    return torch.cat(embeddings)[:limit], torch.cat(tasks)[:limit]
