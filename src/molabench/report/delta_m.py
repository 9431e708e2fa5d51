"""The multi-task performance drop Δm% (Maninis et al., 2019; the paper's Tables 5 and 7).

    Δm% = (1/T) Σ_t (1/N_t) Σ_j (-1)^{h_tj} (M_tj - B_tj) / B_tj × 100

with ``h_tj = 1`` when higher is better for metric j of task t, ``M`` the method's metrics and
``B`` the Single-Task baseline's. Metrics are averaged within each task first, then over
tasks; lower Δm% is better (a flat mean over all metrics weights tasks by their metric count
and is wrong: Table 5's HPS row gives 8.97 instead of 4.72).

:func:`delta_m_from_kinds` takes the directions from the tasks' kinds
(:class:`~molabench.tasks.base.TaskKind` ``metrics``); :func:`paper_metrics` reads a paper row,
whose columns are ``<task column>_<metric label>`` (``seg_mIoU``, ``normal_11.25``), as
``task -> metric -> value``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from molabench.tasks.base import TaskKind


def delta_m(
    method: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    higher_is_better: Mapping[str, Mapping[str, bool]],
) -> float:
    """``method``/``baseline``: task -> metric -> value; ``higher_is_better``: task -> metric -> bool."""
    per_task = []
    for task, metrics in higher_is_better.items():
        terms = []
        for metric, higher in metrics.items():
            base = baseline[task][metric]
            sign = -1.0 if higher else 1.0
            terms.append(sign * (method[task][metric] - base) / base * 100.0)
        per_task.append(sum(terms) / len(terms))
    return sum(per_task) / len(per_task)


def directions(kinds: Mapping[str, TaskKind]) -> dict[str, dict[str, bool]]:
    """``task -> metric name -> higher_is_better`` for every metric of every task's kind."""
    return {task: kind.higher_is_better() for task, kind in kinds.items()}


def delta_m_from_kinds(
    method: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    kinds: Mapping[str, TaskKind],
) -> float:
    """Δm% over every metric of every task's kind (``kinds``: task -> kind), directions from the kinds."""
    return delta_m(method, baseline, directions(kinds))


def paper_metrics(
    row: Mapping[str, float | None],
    kinds: Mapping[str, TaskKind],
    columns: Mapping[str, str] | None = None,
) -> dict[str, dict[str, float]]:
    """A paper table's row as ``task -> metric name -> value``: metric ``m`` of task ``t`` is the column
    ``f"{columns[t]}_{label of m}"`` (``columns`` defaults to the task names; e.g. ``{"segmentation": "seg"}``)."""
    out: dict[str, dict[str, float]] = {}
    for task, kind in kinds.items():
        prefix = (columns or {}).get(task, task)
        out[task] = {}
        for metric in kind.metrics:
            column = f"{prefix}_{metric.label}"
            value = row.get(column)
            if value is None:
                raise KeyError(f"the row has no value in column {column!r} (task {task!r}, metric {metric.name!r})")
            out[task][metric.name] = value
    return out
