"""GradDrop: gradient sign dropout (Chen et al., "Just Pick a Sign: Optimizing Deep Multitask
Models with Gradient Sign Dropout", NeurIPS 2020), Algorithm 1.

For gradients ``g_i`` at a layer of activations::

    P = 1/2 (1 + sum_i g_i / sum_i |g_i|)          (positive-sign purity, per unit)
    U ~ Uniform(0, 1);  M_i = 1[P > U] 1[g_i > 0] + 1[P < U] 1[g_i < 0]
    d = sum_i (leak_i + (1 - leak_i) M_i) g_i

with ``f`` = identity and leak 0 (paper defaults). As in the paper, it acts on the shared
representation ``z`` (``level: representation``, the default; ``parameters`` applies it to
parameter gradients, as torchjd does). The purity ``P`` is computed on gradients summed over the
batch dimension, the paper's treatment of batched activations: per sample, most units carry
one task's gradient only (always, in the multi-input setting where each sample has one task),
so per-element purity would be +-1 and nothing would ever be dropped. The sign choice is then
shared by all samples of a unit and each task's per-sample gradient is kept where its sign
agrees. This batch sum is where we differ from torchjd's ``GradDrop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from molabench.errors import ConfigError
from molabench.weighting.gradient import GradientWeighting
from molabench.weighting.registration import register


@register("graddrop")
class GradDrop(GradientWeighting):
    def __init__(self, leak: float | Sequence[float] = 0.0, level: str = "representation", grad_mode: str = "auto") -> None:
        super().__init__(grad_mode)
        if level not in ("representation", "parameters"):
            raise ConfigError(f"graddrop level {level!r} must be 'representation' or 'parameters'")
        self.level = level
        self.leak = torch.as_tensor(leak, dtype=torch.float64)

    def aggregate(self, G: Tensor, tasks: Tensor | None = None, losses: Tensor | None = None) -> Tensor:
        return self.aggregate_representation(G[:, None], tasks, losses)[0]

    def aggregate_representation_shard(self, G: Tensor, tasks: Tensor, losses: Tensor, reducer: Any) -> Tensor:
        """Under torchrun: the purity from the batch sums of every rank (summed over the ranks), the same
        draws of U on every rank (one torch generator), each rank's rows masked by it."""
        return self.aggregate_representation(G, tasks, losses, summed=reducer.reduce_small(G.sum(1)))

    def aggregate_representation(self, G: Tensor, tasks: Tensor | None, losses: Tensor | None, summed: Tensor | None = None) -> Tensor:
        T = G.shape[0]
        tasks = torch.arange(T) if tasks is None else tasks
        summed = G.sum(1) if summed is None else summed  # (T, *units): batch-summed gradients for the sign purity
        purity = 0.5 * (1 + summed.sum(0) / summed.abs().sum(0).clamp_min(1e-12))
        u = torch.rand(purity.shape, dtype=purity.dtype, device=purity.device)
        positive, negative = (purity > u)[None, None], (purity < u)[None, None]
        mask = (positive & (G > 0)) | (negative & (G < 0))
        leak = self.leak.expand(int(tasks.max()) + 1) if self.leak.dim() == 0 else self.leak
        lk = leak[tasks.cpu()].to(G).view(T, *([1] * (G.dim() - 1)))
        return ((lk + (1 - lk) * mask.to(G)) * G).sum(0)
