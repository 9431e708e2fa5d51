"""A run's summary against its experiment's Single-Task baseline: Δm% (``record["summary"]``).

The baseline is the mean, over seeds, of the reported-split metrics of every complete
``single_task`` run of the same experiment, data and model-selection protocol found under the
results folder when the run ends (the table builder recomputes Δm% from all records later, so a
baseline trained after a method still reaches that method's table row).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from molabench.data.base import TaskSpec
from molabench.report.delta_m import delta_m
from molabench.report.delta_m import directions as kind_directions
from molabench.report.records import iter_records
from molabench.tasks import kind_of

BASELINE_METHOD = "single_task"


def directions(tasks: Sequence[TaskSpec] | Sequence[Mapping[str, Any]]) -> dict[str, dict[str, bool]]:
    """``task -> metric -> higher is better`` from the tasks' kinds (specs or record task entries)."""
    specs = [task if isinstance(task, TaskSpec) else TaskSpec.from_record(task) for task in tasks]
    return kind_directions({spec.name: kind_of(spec) for spec in specs})


def mean_metrics(runs: Sequence[Mapping[str, Any]], split: str, tasks: Sequence[str]) -> dict[str, dict[str, float]] | None:
    """Per-task, per-metric mean over runs of ``metrics[split]``; None when a run lacks a task."""
    if not runs or any(t not in (r.get("metrics") or {}).get(split, {}) for r in runs for t in tasks):
        return None
    out: dict[str, dict[str, float]] = {}
    for t in tasks:
        names = [k for k in runs[0]["metrics"][split][t] if k != "n"]
        values = {k: [r["metrics"][split][t].get(k) for r in runs] for k in names}
        out[t] = {k: statistics.fmean(v) for k, v in values.items() if all(isinstance(x, (int, float)) and x is not None for x in v)}
    return out


def safe_delta_m(
    method: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]], higher: Mapping[str, Mapping[str, bool]]
) -> tuple[float | None, str | None]:
    """Δm% or ``(None, why)`` when a metric is missing, undefined or zero in the baseline."""
    for task, metrics in higher.items():
        for metric in metrics:
            base = (baseline.get(task) or {}).get(metric)
            value = (method.get(task) or {}).get(metric)
            if base is None or value is None or base != base or value != value:
                return None, f"{task}/{metric} is missing or undefined"
            if base == 0:
                return None, f"the baseline's {task}/{metric} is 0 (Δm divides by it)"
    return delta_m(method, baseline, higher), None


def recipe(record: Mapping[str, Any]) -> list[str]:
    """The overrides that are not about the method (data, trainer ...): a baseline must share them."""
    return sorted(o for o in record.get("overrides") or [] if not o.startswith("method."))


def run_summary(record: Mapping[str, Any], runs_dir: Path) -> dict[str, Any]:
    """``{"delta_m": value | None, "baseline": ..., "baseline_runs": n, "why": ...}`` for a finished run."""
    split = "test" if "test" in record["metrics"] else "val"
    tasks = [t["name"] for t in record["tasks"]]
    key = (str(record["experiment"]), record["data"], record["selection"]["protocol"])
    baselines = [
        r
        for _, r in iter_records(runs_dir / str(record["experiment"]))
        if r.get("status") == "complete"
        and r.get("method") == BASELINE_METHOD
        and not [o for o in r.get("overrides") or [] if o.startswith("method.")]
        and recipe(r) == recipe(record)
        and (str(r.get("experiment")), r.get("data"), (r.get("selection") or {}).get("protocol")) == key
    ] if (runs_dir / str(record["experiment"])).is_dir() else []
    summary: dict[str, Any] = {"split": split, "baseline": BASELINE_METHOD, "baseline_runs": len(baselines)}
    base = mean_metrics(baselines, split, tasks)
    if base is None:
        summary.update(delta_m=None, why=f"no complete {BASELINE_METHOD} run of this experiment yet")
        return summary
    value, why = safe_delta_m(record["metrics"][split], base, directions(record["tasks"]))
    summary["delta_m"] = value
    if why:
        summary["why"] = why
    return summary
