"""Model selection: which epoch's weights are reported.

- ``val``     (clean, default): the epoch with the best validation score; test is reported for
              that epoch's weights. The score is the tasks' common primary metric when they all
              have one (mean accuracy on classification data), otherwise the lowest summed
              validation loss (dense data: the authors' criterion, on a clean split).
- ``paper``   (the authors' code): the epoch with the lowest summed loss on the *reported* split
              (test) — a test-set selection, offered only to reproduce the paper's numbers.
- ``delta_m`` the epoch with the lowest Δm% on validation against a baseline run's validation
              metrics (``trainer.selection_baseline``: the path of that run's ``record.json``,
              typically Single-Task of the same data).
- ``last``:   the final epoch.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from molabench.data.base import TaskSpec
from molabench.engine.evaluate import Metrics
from molabench.errors import ConfigError
from molabench.tasks import kind_of

PROTOCOLS = ("val", "paper", "delta_m", "last")


@dataclass
class Selector:
    protocol: str
    split: str
    criterion: str = "loss"
    best_epoch: int = -1
    best_score: float = float("-inf")
    best_state: dict[str, Any] | None = field(default=None, repr=False)
    higher_is_better: dict[str, dict[str, bool]] = field(default_factory=dict, repr=False)
    baseline: dict[str, dict[str, float]] | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        protocol: str,
        available_splits: list[str],
        tasks: Sequence[TaskSpec] = (),
        baseline: str | None = None,
    ) -> Selector:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown trainer.selection {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        split = {"val": "val", "paper": "test", "delta_m": "val", "last": "test"}[protocol]
        if split not in available_splits:
            raise ConfigError(
                f"trainer.selection={protocol} needs a {split!r} split, but the data has only {available_splits}; "
                "choose another trainer.selection"
            )
        kinds = [kind_of(spec) for spec in tasks]
        primaries = {k.primary for k in kinds}
        criterion = "loss"
        if protocol == "val" and len(primaries) == 1 and kinds:
            criterion = primaries.pop()
        if protocol == "delta_m":
            criterion = "delta_m"
        selector = cls(protocol, split, criterion)
        selector.higher_is_better = {spec.name: k.higher_is_better() for spec, k in zip(tasks, kinds, strict=True)}
        if protocol == "delta_m":
            selector.baseline = _baseline_metrics(baseline, [spec.name for spec in tasks])
        elif baseline:
            raise ConfigError(f"trainer.selection_baseline is used only with trainer.selection=delta_m (got selection={protocol})")
        return selector

    def score(self, metrics: Metrics) -> float:
        """Higher is better."""
        if self.protocol == "last":
            return 0.0  # every epoch ties and the later one wins
        if self.criterion == "loss":
            return -metrics["avg"]["loss"]  # the mean over tasks: the same order as their sum
        if self.criterion == "delta_m":
            from molabench.report.delta_m import delta_m

            assert self.baseline is not None
            return -delta_m(metrics, self.baseline, self.higher_is_better)
        direction = next(iter(self.higher_is_better.values()))[self.criterion]
        value = metrics["avg"][self.criterion]
        return value if direction else -value

    def consider(self, epoch: int, metrics: Metrics, model: torch.nn.Module) -> bool:
        score = self.score(metrics)
        if not math.isfinite(score):
            score = float("-inf")  # an undefined score never wins over a defined one
        if score > self.best_score or self.protocol == "last" or self.best_epoch < 0:
            self.best_epoch, self.best_score = epoch, score
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`consider` has learnt so far (the best epoch, its score and weights), for
        training checkpoints."""
        return {"best_epoch": self.best_epoch, "best_score": self.best_score, "best_state": self.best_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_epoch, self.best_score = int(state["best_epoch"]), float(state["best_score"])
        self.best_state = state["best_state"]

    def describe(self) -> dict[str, str]:
        return {"protocol": self.protocol, "split": self.split, "criterion": self.criterion}


def _baseline_metrics(path: str | None, tasks: list[str]) -> dict[str, dict[str, float]]:
    if not path:
        raise ConfigError(
            "trainer.selection=delta_m needs trainer.selection_baseline=<path of the baseline run's record.json> "
            "(e.g. the single_task run of the same data)"
        )
    file = Path(path).expanduser()
    try:
        record = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"trainer.selection_baseline {str(file)!r} is not a readable record ({exc}); give a record.json path") from None
    metrics: Mapping[str, Any] = (record.get("metrics") or {}).get("val") or {}
    missing = [t for t in tasks if t not in metrics]
    if record.get("status") != "complete" or missing:
        raise ConfigError(
            f"trainer.selection_baseline {str(file)!r} has no complete validation metrics for tasks {missing or tasks}; "
            "use a complete run of the same data with a val split"
        )
    return {t: dict(metrics[t]) for t in tasks}
