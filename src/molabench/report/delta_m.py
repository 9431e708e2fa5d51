"""The multi-task performance drop Δm% (Maninis et al., 2019; the paper's Tables 5 and 7).

    Δm% = (1/T) Σ_t (1/N_t) Σ_j (-1)^{h_tj} (M_tj - B_tj) / B_tj × 100

with ``h_tj = 1`` when higher is better for metric j of task t, ``M`` the method's metrics and
``B`` the Single-Task baseline's. Metrics are averaged within each task first, then over
tasks; lower Δm% is better.
"""

from __future__ import annotations

from collections.abc import Mapping


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
