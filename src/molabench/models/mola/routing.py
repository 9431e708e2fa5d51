"""Per-forward mixing weights shared by every adapted layer (the "routing context").

A MoLA layer computes ``y = (W0 + sum_e alpha_e * s * B_e A_e) x`` (paper Eq. 1). The mixing
weights ``alpha`` are a property of the *sample*, not of the layer, so the architecture sets
them once per forward pass on a :class:`Routing` object that all adapted layers of a stage (or
of the whole network) hold a reference to. Two forms exist:

- ``dense``:   ``weights`` (N, E); sample ``n`` mixes expert ``e`` with ``weights[n, e]``.
               MoLA-Router (softmax of the router) and MoLA-Grad on mixed batches (one-hot).
- ``grouped``: the batch is sorted by expert with ``group_size`` samples each, i.e. sample
               ``n`` uses expert ``n // group_size`` alone (MoLA-Grad's fast path: one grouped
               convolution over tasks, paper Sec. 3.4, poster Eq. (a)).
- ``single``:  every sample uses expert ``expert`` alone (MoLA-Grad on a one-task batch, e.g.
               per-task evaluation loaders): only r adapter channels are computed.

A ``Routing`` is a plain object (not a module): it holds no parameters and is never saved.
"""

from __future__ import annotations

from torch import Tensor


class Routing:
    """Mixing weights of the current forward pass (see module docstring)."""

    def __init__(self) -> None:
        self.weights: Tensor | None = None
        self.num_groups: int | None = None
        self.group_size: int | None = None
        self.expert: int | None = None

    def set_dense(self, weights: Tensor) -> None:
        """Per-sample weights (N, E) (one-hot rows for MoLA-Grad, softmax rows for MoLA-Router)."""
        self.clear()
        self.weights = weights

    def set_grouped(self, num_groups: int, group_size: int) -> None:
        """The batch holds ``num_groups`` consecutive blocks of ``group_size`` samples; block g uses expert g."""
        self.clear()
        self.num_groups, self.group_size = num_groups, group_size

    def set_single(self, expert: int) -> None:
        """Every sample of the batch uses expert ``expert`` alone."""
        self.clear()
        self.expert = int(expert)

    def clear(self) -> None:
        """Forget the weights so that no autograd graph outlives its forward pass."""
        self.weights, self.num_groups, self.group_size, self.expert = None, None, None, None

    @property
    def is_set(self) -> bool:
        return self.weights is not None or self.group_size is not None or self.expert is not None
