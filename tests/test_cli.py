"""End-to-end: the entry point as a user runs it (in this process, see tests/cli.py; signals in a
subprocess), records and tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.cli import ROOT, SMOKE, assert_one_line_error, records, train

from molabench.report.tables import main as tables_main


@pytest.mark.slow
def test_smoke_run_writes_a_complete_record_and_is_deterministic(tmp_path):
    first = train(*SMOKE, "seed=3", "run_id=a", "trainer.checkpoint=true", results=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "avg" in first.stdout and "Acc" in first.stdout and "test" in first.stdout
    second = train(*SMOKE, "seed=3", "run_id=b", results=tmp_path)
    assert second.returncode == 0, second.stderr
    a, b = records(tmp_path)
    assert a["status"] == b["status"] == "complete"
    assert a["metrics"] == b["metrics"] and [h["train/loss"] for h in a["history"]] == [h["train/loss"] for h in b["history"]]
    for key in ("config", "method", "data", "seed", "metrics", "history", "params", "timing", "env"):
        assert key in a
    assert set(a["metrics"]) == {"train", "val", "test"}
    assert set(a["metrics"]["test"]) == {"shape", "colour", "size", "quadrant", "avg"}
    assert a["params"]["added"] == 0 and a["params"]["total"] == a["params"]["trainable"] > 0
    assert a["timing"]["step_s_median"] > 0 and a["timing"]["samples_per_s"] > 0
    assert a["env"]["torch"] and a["env"]["device"] == "cpu"
    assert a["config"]["trainer"]["epochs"] == 2 and len(a["history"]) == 2
    state = torch.load(tmp_path / "runs" / "shapes" / "a" / "model.pt", weights_only=True)
    assert "arch.encoder.conv1.weight" in state and not list((tmp_path / "runs").rglob("*.tmp"))


@pytest.mark.slow
def test_multirun_then_tables_hold_every_method(tmp_path):
    proc = train("-m", "method=single_task,uniform,hps", *SMOKE, results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = records(tmp_path)
    assert sorted(r["method"] for r in runs) == ["hps", "single_task", "uniform"]
    by_method = {r["method"]: r for r in runs}
    assert by_method["single_task"]["params"]["added"] > 0
    assert tables_main(["--results", str(tmp_path)]) == 0
    table = (tmp_path / "tables" / "shapes__shapes_tasks__val.md").read_text()
    for method in ("single_task", "uniform", "hps"):
        assert f"| {method} | 1 |" in table  # the overrides every run shares are in the heading
    assert "Every run: `data.image_size=16" in table
    csv = (tmp_path / "tables" / "shapes__shapes_tasks__val.csv").read_text()
    assert csv.startswith("method,seeds,shape,shape_std,shape_paper")


@pytest.mark.slow
def test_joblib_multirun_runs_jobs_in_parallel_processes(tmp_path):
    proc = train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *SMOKE, results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = records(tmp_path)
    assert sorted(r["seed"] for r in runs) == [0, 1]
    assert all(r["env"]["threads"] == 1 for r in runs)


def test_unknown_method_is_one_line(tmp_path):
    assert_one_line_error(train("method=nope", results=tmp_path), "unknown method 'nope'", "hps")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_impossible_config_is_one_line_with_a_failed_record(tmp_path):
    proc = train("trainer=smoke", "trainer.epochs=0", "data.n_train=4", "data.n_val=2", "data.n_test=2", "data.image_size=16", results=tmp_path)
    assert_one_line_error(proc, "trainer.epochs must be at least 1")
    (record,) = records(tmp_path)
    assert record["status"] == "failed" and "epochs" in record["error"]
    assert not list((tmp_path / "runs").rglob("*.tmp"))


SHARED_DATA = ROOT.parent / "shared" / "data"


def test_missing_data_root_is_one_line_naming_the_path(tmp_path):
    proc = train("data=medmnist", "data.root=/nonexistent/dir", "trainer=smoke", results=tmp_path)
    assert_one_line_error(proc, "/nonexistent/dir", "prepare_data.py")
    (record,) = records(tmp_path)
    assert record["status"] == "failed"


@pytest.mark.parametrize("option", ["trainer.epochs=abc", "trainer.nonexistent=1", "trainer.epochs=[1", "data.imagesize=3"])
def test_malformed_overrides_are_one_line(tmp_path, option):
    assert_one_line_error(train(option, "trainer=smoke", results=tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "options"),
    [
        ("medmnist", ["data.tasks=[breastmnist,pneumoniamnist,dermamnist]"]),
        ("pacs", ["data.image_size=32"]),
    ],
)
def test_smoke_runs_on_the_real_shared_data(tmp_path, dataset, options):
    if not (SHARED_DATA / dataset).is_dir():
        pytest.skip(f"real data folder {SHARED_DATA / dataset} is absent on this machine")
    proc = train(f"data={dataset}", f"data.root={SHARED_DATA / dataset}", "trainer=smoke", *options, results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (record,) = records(tmp_path)
    assert record["status"] == "complete" and len(record["metrics"]["test"]) == len(record["tasks"]) + 1
    assert record["config_unread"] == []


@pytest.mark.slow
def test_every_method_config_completes_a_smoke_run(tmp_path):
    methods = sorted(p.stem for p in (ROOT / "configs" / "method").glob("*.yaml"))
    domain_only = ["selfreg"]  # one label space: domain data only
    tasks = [m for m in methods if m not in domain_only]
    # both cores (one thread a job, as sweeps run): the longest end-to-end test of the suite
    small = ["data.tasks=[shape,colour]", "trainer.max_steps_per_epoch=2"]  # T = 2: the multi-column architectures cost T x
    proc = train("-m", f"method={','.join(tasks)}", *SMOKE, *small, "trainer.batching=per_task", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", results=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = train("-m", f"method={','.join(domain_only)}", *SMOKE, "data=shapes_domains", results=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = records(tmp_path)
    assert sorted(r["method"] for r in runs) == methods
    failed = {r["method"]: r.get("error") for r in runs if r["status"] != "complete"}
    assert not failed
    ignored = {r["method"]: r["config_unread"] for r in runs if r["config_unread"]}
    assert not ignored  # every key of every method config was read (tests/test_config_honesty.py)


@pytest.mark.slow
def test_a_skipped_image_is_one_warning_line_and_kept_in_the_record(tmp_path):
    from tests.test_data_folder import domainbed

    root = tmp_path / "pacs" / "PACS"
    files = domainbed(root, "pacs", per_class=6)
    files[0].write_bytes(b"not a jpeg")
    proc = train("data=pacs", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=16", "trainer=smoke", results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert any("skipped 1 unreadable image" in line and str(files[0]) in line for line in warned), proc.stderr
    assert "UserWarning" not in proc.stderr  # no Python warning boilerplate
    (record,) = records(tmp_path)
    assert record["status"] == "complete"
    assert any("skipped 1 unreadable image" in w for w in record["warnings"])


@pytest.mark.slow
def test_an_interrupted_run_leaves_an_interrupted_record_and_a_checkpoint(tmp_path):
    import signal

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "molabench.train", *SMOKE, "trainer.epochs=1000", f"results_dir={tmp_path}"]
    with subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:  # interrupt once training is under way
            if line.startswith("epoch="):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err
    (record,) = records(tmp_path)
    assert record["status"] == "interrupted" and record["error"] == "interrupted by SIGINT" and record["resumable"]
    assert Path(record["checkpoint"]).is_file()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["t", "-m", "a=1", "b=2"], ["t", "-m", "X", "a=1", "b=2"]),
        (["t", "--config-dir", "/p", "a=1", "--cfg", "job"], ["t", "--config-dir", "/p", "X", "a=1", "--cfg", "job"]),
        (["t", "-cd", "/p", "-m"], ["t", "-cd", "/p", "-m", "X"]),
        (["t"], ["t", "X"]),
    ],
)
def test_the_sweep_folder_override_joins_the_users_overrides(argv, expected):
    from molabench.cli_checks import add_override

    add_override(argv, "X")
    assert argv == expected
