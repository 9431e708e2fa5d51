"""``make reproduce``: the plan of every table, running only what is missing (also after a kill),
the paper-layout tables rebuilt by ``make tables`` byte for byte, the real-data / stand-in switch,
and bad options."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from molabench.config_path import config_dir
from molabench.report.paper import load_table
from molabench.reproduce import layout
from molabench.reproduce.__main__ import main as reproduce_main
from molabench.reproduce.__main__ import settings
from molabench.reproduce.plan import TABLES, make_plan, sweep_grid

ROOT = Path(__file__).resolve().parents[1]


def reproduce(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = reproduce_main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def smoke_plan(tmp_path_factory):
    results = tmp_path_factory.mktemp("plan")
    return make_plan(settings(["budget=smoke", f"results_dir={results}"]), config_dir())


def test_every_table_is_planned_from_its_sweep_and_every_run_is_a_paper_row(smoke_plan):
    from molabench.reproduce.plan import row_labels

    for number, spec in TABLES.items():
        _, grid = sweep_grid(config_dir(), spec.name)
        runs = smoke_plan.of_table(number)
        # smoke: one seed; Table 9's sweep crosses more stage sets than the paper prints: only its rows are planned
        assert len(runs) == (8 if number == 9 else len(grid) + len(spec.extra) + len(spec.figures)), number
        paper = load_table(spec.name)
        for run in runs:
            assert run.status == "to do", (number, run.params, run.error)
            if run.figure:  # Fig. 6 without TwD: weights kept, no paper row
                assert run.labels == [] and "trainer.checkpoint=true" in run.overrides and "method.twd=false" in run.params
                continue
            labels = row_labels(number, run)
            baseline_only = number == 7 and run.method == "single_task"  # Table 7's Δm baseline, not a row
            assert baseline_only or any(label in paper.rows for label in labels), (number, run.params, labels)
    assert sum(r.figure for r in smoke_plan.runs) == sum(len(spec.figures) for spec in TABLES.values()) == 1
    # runs shared between tables are one run: Table 3 on the same stand-in as Table 2 adds none
    assert {r.key for r in smoke_plan.of_table(3)} <= {r.key for r in smoke_plan.of_table(2)}
    assert len(smoke_plan.unique()) < len(smoke_plan.runs)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    code, out, _ = reproduce("budget=smoke", "tables=[10,11]", "dry_run=true", f"results_dir={tmp_path}")
    assert code == 0
    assert "distinct runs: 6 (0 complete, 6 to do)" in out  # Table 11: E = 2, 3, 4 on two datasets, one stand-in
    assert "(3 shared with an earlier table)" in out or "to do" in out
    assert not any(tmp_path.iterdir())


def _reproduce_process(results: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "molabench.reproduce", "budget=smoke", f"results_dir={results}", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_killed_midway_it_continues_with_only_what_is_missing_and_make_tables_rebuilds_it(tmp_path):
    from molabench.report import tables

    results = tmp_path / "results"
    process = _reproduce_process(results, "tables=[10]")
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # kill -9 once the first run is complete
        lines.append(line)
        if "complete in" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert any(line.startswith("[1/3] table 10") for line in lines), "".join(lines)
    code, out, _ = reproduce("budget=smoke", "tables=[10]", f"results_dir={results}")
    assert code == 0, out
    assert "[1/2] table 10" in out and "[3/" not in out  # only the two missing runs
    assert "reproduce summary: 3 distinct run(s): 3 complete, 0 failed, 0 to do" in out
    # the runs read MoLA's keys through their interpolations (method.omega_dim behind the architecture's)
    records = [json.loads(p.read_text()) for p in results.glob("runs/reproduce/smoke/**/record.json")]
    assert len(records) == 3 and all(r["config_unread"] == [] for r in records), [r["config_unread"] for r in records]
    assert "never read" not in out
    table = json.loads((results / "tables" / "table10_omega_dim.json").read_text())
    assert [row["label"] for row in table["rows"]] == list(load_table("table10_omega_dim").rows)
    assert all(row["status"] == "ok" and "Avg" in row["ours"] for row in table["rows"])
    assert table["stand_in"] and "OfficeHome" in table["stand_in"]
    assert {k: v for k, v in table["runs"].items() if k != "wall_s"} == {"planned": 3, "complete": 3, "failed": 0, "to_do": 0}
    assert table["runs"]["wall_s"] > 0 and "wall time of the complete runs" in (results / "tables" / "table10_omega_dim.md").read_text()
    for suffix in ("md", "csv", "tex", "png"):
        assert (results / "tables" / f"table10_omega_dim.{suffix}").stat().st_size > 0
    assert "stand-in:" in (results / "tables" / "table10_omega_dim.csv").read_text().splitlines()[0]
    assert (results / "report" / "index.html").is_file()
    figures = json.loads((results / "figures" / "figures.json").read_text())
    assert any(f["file"] == "fig5_params.png" for f in figures)
    # again: no run starts
    code, out, _ = reproduce("budget=smoke", "tables=[10]", f"results_dir={results}")
    assert code == 0 and "starting" not in out
    # make tables rebuilds the table files and the report from the records, byte for byte
    before = {p.name: p.read_bytes() for p in (results / "tables").glob("table10_*")}
    page = (results / "report" / "index.html").read_bytes()
    for p in (results / "tables").glob("table10_*"):
        p.unlink()
    with contextlib.redirect_stdout(io.StringIO()):
        assert tables.main(["--results", str(results)]) == 0
    assert {p.name: p.read_bytes() for p in (results / "tables").glob("table10_*")} == before
    assert (results / "report" / "index.html").read_bytes() == page


def _tiny_vlcs(root: Path) -> None:
    from PIL import Image

    for domain in ("VOC2007", "LabelMe", "Caltech101", "SUN09"):
        for cls in ("bird", "car"):
            folder = root / "VLCS" / domain / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.jpg")


def test_real_data_at_its_root_replaces_the_stand_in(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("MOLABENCH_DATA", str(data))
    options = settings(["budget=cpu", "tables=[2,4]", f"results_dir={tmp_path / 'r'}"])
    # nothing there: Table 2's stand-in (PACS) is absent too, Table 4 has no MedMNIST file
    plan = make_plan(options, config_dir())
    assert {r.status for r in plan.runs} == {"no data"}
    assert "vlcs is not at" in plan.of_table(2)[0].error and "nor its stand-in pacs" in plan.of_table(2)[0].error
    # the real VLCS in its official folders, and two of MedMNIST's nine task files
    _tiny_vlcs(data)
    (data / "medmnist").mkdir()
    for task in ("breastmnist", "pneumoniamnist"):
        np.savez(data / "medmnist" / f"{task}.npz", train_images=np.zeros((1, 28, 28), np.uint8))
    plan = make_plan(options, config_dir())
    t2 = plan.of_table(2)
    assert {r.choice.data for r in t2} == {"vlcs"} and all(r.choice.stand_in is None and r.status == "to do" for r in t2)
    assert all("data=vlcs" in r.overrides and r.config["data"]["name"] == "vlcs" for r in t2)
    t4 = plan.of_table(4)
    assert all(r.config["data"]["tasks"] == ["breastmnist", "pneumoniamnist"] for r in t4)
    assert "2 of 9" in t4[0].choice.stand_in


def _record(method: str, seed: int, accs: dict[str, float], identity: str, status: str = "complete") -> dict:
    tasks = [{"name": t, "column": t, "num_classes": 2, "kind": "classification"} for t in accs]
    metrics = {"test": {**{t: {"acc": a} for t, a in accs.items()}, "avg": {"acc": sum(accs.values()) / len(accs)}}}
    return {"identity": identity, "status": status, "method": method, "seed": seed, "data": "vlcs", "overrides": [f"method={method}"],
            "tasks": tasks, "metrics": metrics, "error": "boom" if status == "failed" else None, "heartbeat": 1.0}


def test_the_layout_gives_every_paper_row_its_status_and_cells():
    cols = {"V": 80.0, "L": 70.0, "C": 100.0, "S": 75.0}
    runs, records = [], {}
    for method, label, seeds in (("hps", "HPS", (0, 1)), ("mola_grad", "MoLA-Grad", (0, 1)), ("mola_router", "MoLA-Router", (0,)), ("uniform", "Uniform", (0,))):
        for seed in seeds:
            identity = f"{method}{seed}"
            runs.append({"table": 2, "params": [f"method={method}"], "seed": seed, "method": method, "overrides": [f"method={method}", f"seed={seed}"],
                         "data": "vlcs", "paper_data": "vlcs", "stand_in": None, "labels": [label], "identity": identity, "record": None,
                         "status": "planned", "error": None})
    records[("identity", "hps0")] = [_record("hps", 0, cols, "hps0")]
    records[("identity", "hps1")] = [_record("hps", 1, {k: v + 2 for k, v in cols.items()}, "hps1")]
    records[("identity", "mola_grad0")] = [_record("mola_grad", 0, cols, "mola_grad0")]  # seed 1 not run: partial
    records[("identity", "mola_router0")] = [_record("mola_router", 0, cols, "mola_router0", status="failed")]
    plan = {"budget": "cpu", "seeds": [0, 1], "tables": {"2": {"name": "table2_vlcs"}}, "runs": runs}
    table = layout.build_table(2, plan, records)
    rows = {row["label"]: row for row in table["rows"]}
    assert list(rows) == list(load_table("table2_vlcs").rows)
    assert rows["HPS"]["status"] == "ok" and rows["HPS"]["seeds"] == 2
    assert rows["HPS"]["ours"]["V"] == pytest.approx({"mean": 81.0, "std": 2 ** 0.5})
    assert rows["HPS"]["ours"]["Avg"]["mean"] == pytest.approx(82.25)
    assert rows["MoLA-Grad"]["status"] == "partial" and rows["MoLA-Grad"]["ours"]["V"]["std"] is None
    assert rows["MoLA-Router"]["status"] == "failed" and "boom" in rows["MoLA-Router"]["reason"]
    assert rows["Uniform"]["status"] == "not run"
    assert rows["Single-Task"]["status"] == "missing" and "not in molabench" in rows["Single-Task"]["reason"]
    assert rows["HPS"]["paper"]["Avg"] == 84.98 and table["stand_in"] is None and table["our_columns"] == table["paper_columns"]
    assert "| HPS | 2 | 81.00 ± 1.41 (85.59) |" in layout.to_markdown(table)
    assert table["seeds"] == [0, 1] and "seeds 0, 1;" in layout.to_markdown(table)
    # a table the budget gives fewer seeds (an ablation: one) says so in its header
    plan["runs"] = [r for r in runs if r["seed"] == 0]
    assert layout.build_table(2, plan, records)["seeds"] == [0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tables=[12]"], "tables must list paper tables among 1..11"),
        (["budget=nope"], "budget"),
        (["tables=abc"], "tables must be a list of table numbers"),
        (["dryrun=true"], "dryrun"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, expected):
    code, _, err = reproduce(*args, "dry_run=true", f"results_dir={tmp_path}")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in err


def test_a_launcher_submits_each_tables_sweep_as_one_multirun(smoke_plan):
    from molabench.reproduce.execute import launcher_commands

    sub = type(smoke_plan)(smoke_plan.budget, smoke_plan.results_dir, [10, 7], smoke_plan.of_table(10) + smoke_plan.of_table(7), {})
    commands = launcher_commands(sub, "submitit_local", ["hydra.launcher.timeout_min=5"])
    t10 = [c for c in commands if "+sweep=table10_omega_dim" in c]
    assert len(t10) == 1 and "method.omega_dim=32,64,128" in t10[0] and "seed=0" in t10[0]
    assert t10[0][1:4] == ["-m", "molabench.train", "-m"] and "hydra/launcher=submitit_local" in t10[0]
    t7 = [c for c in commands if "+sweep=table7_placement_nyuv2" in c]
    # Table 7: the placements in one multirun, the HPS and Single-Task rows (no placement) in another
    assert len(t7) == 2 and any("method=hps,single_task" in c for c in t7)


def test_the_paper_budget_is_priced_by_training_flops(smoke_plan):
    """estimate: flops — 3 x forward FLOPs (counted on a meta model) x images x epochs x the method's cost, at an
    assumed GPU speed; ResNet-18's forward at 224 px is its well-known 1.82 GMAC (3.64 GFLOP)."""
    import dataclasses

    from molabench.reproduce import estimate, execute

    assert estimate.forward_gflops("resnet18", 224, 224) == pytest.approx(3.64, rel=0.02)
    assert estimate.forward_gflops("resnet50", 224, 224) == pytest.approx(8.18, rel=0.02)
    run = next(r for r in smoke_plan.of_table(2) if r.method == "hps")
    budget = {**smoke_plan.budget, "estimate": "flops", "gpu_tflops": 10, "train_images": {run.choice.data: 1000}}
    plan = dataclasses.replace(smoke_plan, budget=budget)
    gpu, _ = execute.flops_estimate_s(run, plan, None)
    side = run.config["data"]["image_size"]
    side = side if isinstance(side, int) else side[0]
    forward = estimate.forward_gflops(run.config["backbone"]["name"], side, side, dict(run.config["backbone"]))
    expected = 3 * forward * 1000 * run.config["trainer"]["epochs"] / 10_000
    assert gpu == pytest.approx(expected) and execute.estimate_s(run, plan, None) == gpu
    # without an image count: the data's own n_train (built-in data), else the budget's flat estimate
    plan = dataclasses.replace(smoke_plan, budget={**budget, "train_images": {}})
    n_train = run.config["data"].get("n_train")
    fallback = execute.flops_estimate_s(run, plan, None)
    assert (fallback[0] == pytest.approx(gpu * n_train / 1000)) if n_train else fallback is None


def test_a_smaller_budget_never_writes_over_a_larger_reproduction(tmp_path):
    from molabench.reproduce.outputs import output_dir

    assert output_dir(tmp_path, "smoke") == tmp_path  # nothing saved yet: results/
    for budget in ("smoke", "cpu"):
        (tmp_path / "runs" / "reproduce" / budget).mkdir(parents=True)
        (tmp_path / "runs" / "reproduce" / budget / "plan.json").write_text("{}")
    assert output_dir(tmp_path, "cpu") == tmp_path
    assert output_dir(tmp_path, "smoke") == tmp_path / "runs" / "reproduce" / "smoke"
