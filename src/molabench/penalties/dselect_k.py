"""DSelect-k's regulariser (Hazimeh et al., NeurIPS 2021; the official Keras gate), as a loss term.

Over r = the selector outputs of *every* task's gate evaluated in the forward pass
(``Forward.aux["selector_outputs"]``, (N, k, E): N gate evaluations, k selectors, E experts)::

    P = λ · ( - Σ_{n,i,e} r_{n,i,e} · log(r_{n,i,e} + 1e-6) )                      (entropy)
      + [E not a power of 2] · Σ_{n,i: Σ_e r_{n,i,e} > 0} 1 / Σ_e r_{n,i,e}        (reachability)

λ = ``entropy_weight`` (official default 1e-6). The entropy pushes each selector towards one
expert; the reachability term keeps a selector's mass off the codes E..2^m-1 that name no expert.

Dead selectors. A selector whose smooth steps have saturated on an unreachable code has
Σ_e r = 0 exactly: its official term is +∞ with a zero derivative (the official loss becomes
inf and its gradient NaN). Such terms are left out here (they carry no gradient either way), so
the penalty stays finite; that selector then gives zero weight to every expert. This is not rare
with the official initialisation on large raw-pixel inputs: z = Linear(N_in -> k·m) with weights
and bias from U(-γ/100, γ/100) has a standard deviation of about 0.0058·γ·‖x‖, ≈ 2.2γ for a
normalised 224×224 RGB image, so most selectors start saturated.

Scale (as the official code: sums, not means). Both terms grow with N = the number of gate
evaluations (B when each sample runs its own task's gate, B·T when every gate runs on every
sample: single-input data or ``authors_routing``). The entropy is at most N·k·log E, so with
λ = 1e-6 it is negligible beside the task losses. The reachability term is at least N·k (Σ_e r <= 1) over live
selectors, with equality, and a zero gradient, once every selector's mass is on reachable experts: when E is
not a power of 2 the logged penalty therefore sits at about N·k (e.g. 2·batch size for k = 2) while
contributing no gradient. The algorithm multiplies P by ``weight`` (default 1, the official).

Unlike LibMTL (the last task's selectors only, applied by a ``backward()`` inside ``forward``),
this term covers every task's gate and is handed to the weighting with the task losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from molabench.architectures.base import Architecture
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.penalties import PENALTIES
from molabench.penalties.base import Penalty, PenaltyContext


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def dselect_k_regulariser(r: Tensor, entropy_weight: float = 1e-6) -> Tensor:
    """P of the module docstring for selector outputs ``r`` (..., k, E)."""
    r = r.reshape(-1, *r.shape[-2:])
    value = entropy_weight * -(r * torch.log(r + 1e-6)).sum()
    if not is_power_of_two(int(r.shape[-1])):
        mass = r.sum(-1)
        alive = mass > 0
        # where() on a safe denominator: dead selectors (mass exactly 0) add nothing, not inf/NaN
        value = value + torch.where(alive, 1.0 / torch.where(alive, mass, torch.ones_like(mass)), torch.zeros_like(mass)).sum()
    return value


class DSelectKPenalty(Penalty):
    across_ranks = "sum"  # a sum over gate evaluations: the ranks' sums add up to the global batch's (torchrun)

    def __init__(self, weight: float = 1.0, entropy_weight: float = 1e-6) -> None:
        super().__init__(weight)
        if isinstance(entropy_weight, bool) or not isinstance(entropy_weight, int | float) or not math.isfinite(entropy_weight) or entropy_weight < 0:
            raise ConfigError(f"penalties.dselect_k.entropy_weight must be a number >= 0, got {entropy_weight!r}")
        self.entropy_weight = float(entropy_weight)

    def forward(self, ctx: PenaltyContext) -> Tensor:
        r = ctx.forward.aux.get("selector_outputs")
        if r is None:
            raise ConfigError("penalty dselect_k needs DSelect-k's selector outputs: use it with method=dselect_k")
        return dselect_k_regulariser(r, self.entropy_weight)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, entropy_weight={self.entropy_weight}"


@PENALTIES.register("dselect_k")
def dselect_k(arch: Architecture, tasks: Sequence[TaskSpec], weight: float = 1.0, entropy_weight: float = 1e-6) -> DSelectKPenalty:
    from molabench.architectures.dselect_k import DSelectK

    if not isinstance(arch, DSelectK):
        raise ConfigError(
            f"penalty dselect_k regularises DSelect-k's gates but the architecture is {type(arch).__name__}: "
            "use it with method=dselect_k (or drop method.penalties.dselect_k)"
        )
    return DSelectKPenalty(weight, entropy_weight)


__all__ = ["DSelectKPenalty", "dselect_k_regulariser", "is_power_of_two"]
