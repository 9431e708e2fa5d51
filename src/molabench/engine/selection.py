"""Model selection: which epoch's weights are reported.

- ``val``   (clean, default): the epoch with the best mean validation accuracy; test is
            reported for that epoch's weights.
- ``paper`` (the authors' code): the epoch with the lowest mean loss on the *reported* split
            (test) — a test-set selection, offered only to reproduce the paper's numbers.
- ``last``: the final epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from molabench.engine.evaluate import Metrics
from molabench.errors import ConfigError

PROTOCOLS = ("val", "paper", "last")


@dataclass
class Selector:
    protocol: str
    split: str
    best_epoch: int = -1
    best_score: float = float("-inf")
    best_state: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, protocol: str, available_splits: list[str]) -> Selector:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown trainer.selection {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        split = {"val": "val", "paper": "test", "last": "test"}[protocol]
        if split not in available_splits:
            raise ConfigError(
                f"trainer.selection={protocol} needs a {split!r} split, but the data has only {available_splits}; "
                "choose another trainer.selection"
            )
        return cls(protocol, split)

    def score(self, metrics: Metrics) -> float:
        avg = metrics["avg"]
        if self.protocol == "val":
            return avg["acc"]
        if self.protocol == "paper":
            return -avg["loss"]
        return 0.0  # "last": every epoch ties and the later one wins

    def consider(self, epoch: int, metrics: Metrics, model: torch.nn.Module) -> bool:
        score = self.score(metrics)
        if score > self.best_score or (self.protocol == "last"):
            self.best_epoch, self.best_score = epoch, score
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        return False
