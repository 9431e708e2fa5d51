"""A finished run on the console: every task's metrics in its kind's order, then Δm%."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def print_summary(record: Mapping[str, Any]) -> None:
    """Every task's metrics (its kind's, in table order) on the val and test splits, then Δm%."""
    from molabench.data.base import TaskSpec
    from molabench.tasks import kind_of

    metrics = record["metrics"]
    splits = [s for s in ("val", "test") if s in metrics]
    print(f"\n{record['method']} on {record['data']} (seed {record['seed']}), selection={record['selection']['protocol']} epoch {record['selection']['epoch']}")
    rows: list[tuple[str, str, str]] = []  # (task label, metric label, metric key)
    labels: dict[str, str] = {}
    for task in record["tasks"]:
        kind = kind_of(TaskSpec.from_record(task))
        labels.update(kind.labels())
        rows += [(task["name"] if i == 0 else "", m.label, f"{task['name']}/{m.name}") for i, m in enumerate(kind.metrics)]
    averaged = [k for k in metrics[splits[-1]].get("avg", {}) if k != "loss"]
    rows += [("avg" if i == 0 else "", labels.get(name, name), f"avg/{name}") for i, name in enumerate(averaged)]
    print(f"{'task':<16}{'metric':<10}" + "".join(f"{s:>12}" for s in splits))
    for task, label, key in rows:
        name, metric = key.split("/", 1)
        print(f"{task:<16}{label:<10}" + "".join(f"{_num(metrics[s].get(name, {}).get(metric)):>12}" for s in splits))
    summary = record.get("summary") or {}
    if summary.get("delta_m") is not None:
        print(f"Δm% vs {summary['baseline']} ({summary['baseline_runs']} run(s)): {summary['delta_m']:+.2f}  (lower is better)")
    for note in record.get("notes") or []:
        print(f"note: {note}")
    timing = record["timing"]
    print(f"train {timing['train_s']:.1f}s  step {timing['step_s_median'] * 1000:.1f} ms  {timing['samples_per_s']:.0f} samples/s")
    print(f"record: {record['path']}")

def _num(value: Any) -> str:
    return "nan" if not isinstance(value, (int, float)) or value != value else f"{value:.4g}" if abs(value) < 10 else f"{value:.2f}"
