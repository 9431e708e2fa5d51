"""Deterministic, seeded ways of cutting a list of samples into splits.

- :func:`holdout`: a random fraction held out *within every group* (a domain, a task), so every
  group keeps its share in both parts; used for the per-domain 90/10 train/test split and for
  the validation split held out of train (clean model selection).
- :func:`authors_split`: the authors' OfficeHome split, reproduced exactly: they concatenate the
  per-domain lists (P, A, C, R), call ``random.seed(seed); random.shuffle(list)`` and keep the
  first ``int(0.9 * N)`` for training. ``random.shuffle``'s swaps depend only on the list length
  and the seed, so shuffling ``range(N)`` gives the same permutation.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from molabench.errors import ConfigError


def check_fraction(name: str, value: float, allow_zero: bool = True) -> float:
    value = float(value)
    if not ((value >= 0.0 if allow_zero else value > 0.0) and value < 1.0):
        low = "0 <=" if allow_zero else "0 <"
        raise ConfigError(f"data.{name} must satisfy {low} {name} < 1, got {value}")
    return value


def holdout(groups: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (kept, held out) of samples whose group ids are ``groups`` (int64, (N,)).

    In every group, ``n - int(n * (1 - fraction))`` random samples are held out (the authors'
    ``int(len * ratio)`` rounding). Both outputs are sorted, so file order is preserved.
    """
    gen = torch.Generator().manual_seed(int(seed))
    kept, held = [], []
    for g in torch.unique(groups).tolist():
        members = torch.nonzero(groups == g).flatten()
        perm = members[torch.randperm(len(members), generator=gen)]
        n_keep = int(len(members) * (1.0 - fraction))
        kept.append(perm[:n_keep])
        held.append(perm[n_keep:])
    empty = torch.zeros(0, dtype=torch.long)
    return (
        torch.sort(torch.cat(kept) if kept else empty).values,
        torch.sort(torch.cat(held) if held else empty).values,
    )


def authors_split(n: int, ratio: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, test) of the authors' pooled ``random.shuffle`` split (see module doc)."""
    order = list(range(n))
    rng = random.Random(int(seed))  # same stream as random.seed(seed) on the global generator
    rng.shuffle(order)
    cut = int(n * ratio)
    return torch.tensor(order[:cut], dtype=torch.long), torch.tensor(order[cut:], dtype=torch.long)


__all__ = ["authors_split", "check_fraction", "holdout"]
