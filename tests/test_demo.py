"""``make demo``: its comparison table, and the whole demo at a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from molabench import demo


def _record(method: str, accs: dict[str, float]) -> dict:
    test = {t: {"acc": a} for t, a in accs.items()}
    test["avg"] = {"acc": sum(accs.values()) / len(accs)}
    return {
        "method": method,
        "tasks": [{"name": t} for t in accs],
        "metrics": {"test": test},
        "timing": {"step_s_median": 0.05},
    }


REFERENCE = {  # the shape of results/tables/builtin__shapes_tasks__val.csv
    "uniform": {"seeds": 3, "shape": 4.5, "colour": 41.4, "size": 22.5, "Avg": 24.45},
    "hps": {"seeds": 3, "shape": 68.7, "colour": 98.9, "size": 91.2, "Avg": 88.0},
    "mola_grad": {"seeds": 3, "shape": 72.5, "colour": 99.2, "size": 92.0, "Avg": 89.5},
    "mola_router": {"seeds": 3, "shape": 84.0, "colour": 99.5, "size": 93.8, "Avg": 92.8},
}


def test_table_has_the_columns_the_orderings_and_the_pairs() -> None:
    records = [
        _record("uniform", {"shape": 10.0, "colour": 70.0}),
        _record("hps", {"shape": 40.0, "colour": 90.0}),
        _record("mola_grad", {"shape": 38.0, "colour": 90.0}),
        _record("mola_router", {"shape": 45.0, "colour": 92.0}),
    ]
    measured = {"uniform": (40.0, 41.0), "hps": (64.0, 66.0), "mola_grad": (65.0, 65.5), "mola_router": (70.0, 69.0)}
    text = demo._table(records, REFERENCE, measured)
    head = text.splitlines()[0].split()
    assert head[:4] == ["method", "shape", "colour", "Avg"] and "step" in head and "budget" in head
    assert "full budget Avg (these tasks)" in text  # two of the reference's three tasks
    lines = {line.split(":")[0]: line.split(":", 1)[1].strip() for line in text.splitlines() if "ordering" in line}
    assert lines["ordering here"] == "mola_router > hps > mola_grad > uniform"
    assert lines["full-budget ordering"] == "mola_router > mola_grad > hps > uniform"
    # the full-budget average over the demo's tasks, not the table's Avg over all of them
    assert "91.75 (3 seeds)" in text.splitlines()[5]
    pairs = {line.split()[0]: line for line in text.splitlines() if " − " in line}
    assert set(pairs) == {"mola_router", "mola_grad", "hps"}
    assert pairs["mola_grad"].endswith("NOT separated at this budget")  # 65.0-64.0 > 0 but 65.5-66.0 < 0
    assert "(1/2 ahead)" in pairs["mola_grad"] and "-1.0" in pairs["mola_grad"]  # here: 64.0 - 65.0
    assert pairs["mola_router"].endswith("separated") and pairs["hps"].endswith("separated")


def test_measured_seeds_cover_every_method() -> None:
    counts = {len(demo.MEASURED[m]) for m in demo.METHODS}
    assert len(counts) == 1 and counts.pop() >= 5


@pytest.mark.slow
def test_demo_runs_end_to_end_at_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = [
        "data.image_size=16",
        "data.n_train=8",
        "data.n_val=4",
        "data.n_test=4",
        "trainer.epochs=1",
        "trainer.batch_size=16",
        f"results_dir={tmp_path}",
    ]
    assert demo.main(tiny) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err  # keys behind interpolations (method.rank, ...) count as read
    for method in demo.METHODS:
        assert f"training {method}" in out.out
        assert (tmp_path / "runs" / "demo").is_dir()
    assert "ordering here:" in out.out and "full-budget ordering:" in out.out
    assert "at 70 GFLOP/s" in out.out
