"""``make tables`` draws one PNG per table and links it from ``results/tables/README.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from molabench.report.figures import draw, figure_size
from molabench.report.records import iter_records, write_json_atomic
from molabench.report.tables import build_frame, collect
from molabench.report.tables import main as tables_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSIFICATION = "table4_medmnist__medmnist__val"
DENSE = "table5_nyuv2__nyuv2__val"
DENSE_PANELS = [
    "seg_mIoU ↑", "seg_PixAcc ↑", "depth_AbsErr ↓", "depth_RelErr ↓", "normal_Mean ↓", "normal_Median ↓",
    "normal_11.25 ↑", "normal_22.5 ↑", "normal_30 ↑", "Δm% ↓",
]


def _classification(method: str, seed: int, accs: list[float]) -> dict[str, Any]:
    tasks = [{"name": "breastmnist", "column": "Breast"}, {"name": "pneumoniamnist", "column": "Chest"}]
    metrics: dict[str, Any] = {t["name"]: {"acc": a} for t, a in zip(tasks, accs, strict=True)}
    metrics["avg"] = {"acc": sum(accs) / len(accs)}
    return {
        "status": "complete",
        "experiment": "table4_medmnist",
        "data": "medmnist",
        "method": method,
        "seed": seed,
        "overrides": [],
        "tasks": tasks,
        "selection": {"protocol": "val"},
        "metrics": {"test": metrics},
        "timing": {"step_s_median": 0.1},
        "params": {"added": 0},
        "config": {"data": {"paper": {"table": "table4_medmnist"}}},
    }


def _dense(method: str, seed: int, scale: float) -> dict[str, Any]:
    """A NYUv2-like record; ``scale`` > 1 makes every metric better than at 1."""
    tasks = [
        {"name": "segmentation", "column": "seg", "num_classes": 13, "kind": "segmentation"},
        {"name": "depth", "column": "depth", "num_classes": 0, "kind": "depth"},
        {"name": "normal", "column": "normal", "num_classes": 0, "kind": "normal"},
    ]
    metrics = {
        "segmentation": {"miou": 40.0 * scale, "pix_acc": 70.0 * scale},
        "depth": {"abs_err": 0.6 / scale, "rel_err": 0.25 / scale},
        "normal": {
            "mean": 25.0 / scale, "median": 19.0 / scale,
            "within_11.25": 0.30 * scale, "within_22.5": 0.55 * scale, "within_30": 0.65 * scale,
        },
    }
    return {
        "status": "complete",
        "experiment": "table5_nyuv2",
        "data": "nyuv2",
        "method": method,
        "seed": seed,
        "overrides": [],
        "tasks": tasks,
        "selection": {"protocol": "val"},
        "metrics": {"test": metrics},
        "timing": {"step_s_median": 0.2},
        "params": {"added": 0},
        "config": {"data": {"paper": {"table": "table5_nyuv2"}}},
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with a 3-method classification table and a 3-method dense table."""
    records = [
        _classification("single_task", 0, [80.0, 85.0]),
        _classification("hps", 0, [82.0, 88.0]),
        _classification("hps", 1, [84.0, 86.0]),
        _classification("mola_grad", 0, [86.0, 90.0]),
        _dense("single_task", 0, 1.0),
        _dense("single_task", 1, 1.02),
        _dense("hps", 0, 0.95),
        _dense("mola_grad", 0, 1.05),
        _dense("mola_grad", 1, 1.08),
    ]
    for i, record in enumerate(records):
        write_json_atomic(tmp_path / "runs" / record["experiment"] / str(i) / "record.json", record)
    return tmp_path


def test_make_tables_writes_one_png_per_table_and_links_it(results: Path) -> None:
    assert tables_main(["--results", str(results)]) == 0
    out = results / "tables"
    readme = (out / "README.md").read_text()
    # classification: Breast, Chest, Avg; dense: nine metrics and Δm% (4 panels a row); 3 methods each
    for stem, size in [(CLASSIFICATION, (965, 260)), (DENSE, (1195, 600))]:
        png = out / f"{stem}.png"
        data = png.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC)
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == size
            assert "Software" not in image.info  # no matplotlib version stamped in
        assert f"![{stem}]({stem}.png)" in readme
        # the link stands under its own table
        assert readme.index(f"## {stem.split('__')[0]}") < readme.index(f"![{stem}]")
    assert figure_size(3, 3) == (965, 260) and figure_size(10, 3) == (1195, 600)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_regenerating_the_figures_gives_identical_bytes(results: Path) -> None:
    assert tables_main(["--results", str(results)]) == 0
    first = {p.name: p.read_bytes() for p in (results / "tables").glob("*.png")}
    assert sorted(first) == [f"{CLASSIFICATION}.png", f"{DENSE}.png"]
    assert tables_main(["--results", str(results)]) == 0
    assert {p.name: p.read_bytes() for p in (results / "tables").glob("*.png")} == first


def test_figures_have_a_panel_per_metric_and_mark_the_papers_values(results: Path) -> None:
    groups = {g.experiment: g for g in collect(r for _, r in iter_records(results / "runs"))}

    def paper_ticks(ax: Any) -> list[float]:
        return [float(x) for line in ax.get_lines() if line.get_gid() == "paper" for x in line.get_xdata()]

    group = groups["table4_medmnist"]
    frame = build_frame(group)
    fig = draw(group, frame)
    assert [ax.get_title() for ax in fig.axes] == ["Breast ↑", "Chest ↑", "Avg ↑"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["single_task", "hps", "mola_grad"]
    assert paper_ticks(fig.axes[0]) == [pytest.approx(v) for v in frame["Breast_paper"]]
    assert "table4_medmnist" in fig.get_suptitle() and "selection val" in fig.get_suptitle()

    group = groups["table5_nyuv2"]
    frame = build_frame(group)
    fig = draw(group, frame)
    assert [ax.get_title() for ax in fig.axes] == DENSE_PANELS
    assert paper_ticks(fig.axes[2]) == [pytest.approx(v) for v in frame["depth_AbsErr_paper"]]
    # Δm%: the paper has no Δm for Single-Task, so only the other rows carry a tick
    assert paper_ticks(fig.axes[-1]) == [pytest.approx(v) for v in frame["delta_m_paper"].dropna()]
    assert len(paper_ticks(fig.axes[-1])) == 2
