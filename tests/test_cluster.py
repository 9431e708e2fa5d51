"""Sweeps through Hydra's submitit launcher (``submitit_local`` here; ``submitit_slurm`` on a
cluster is the same launcher with another executor): records, the sweep summary, and a job
signalled as Slurm signals a preempted or timed-out job, which checkpoints, is requeued by
submitit and resumes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli import ROOT, SMOKE, records, train

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the cluster extra: pip install molabench[cluster]")


def _sweep(*args: str, results: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "molabench.train", "-m", "hydra/launcher=submitit_local", *args, f"results_dir={results}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


@pytest.mark.slow
def test_a_submitit_local_sweep_completes_with_records_and_a_summary(tmp_path):
    proc = _sweep("method=hps,mola_grad", *SMOKE, "trainer.epochs=1", results=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "sweep summary: 2 job(s): 2 complete" in out, out
    runs = records(tmp_path)
    assert sorted(r["method"] for r in runs) == ["hps", "mola_grad"] and all(r["status"] == "complete" for r in runs)


@pytest.mark.slow
def test_a_preempted_submitit_job_checkpoints_is_requeued_and_resumes_bitwise(tmp_path):
    args = [*SMOKE, "method=dwa", "trainer.epochs=2", "trainer.max_steps_per_epoch=3", "trainer.batch_size=8", "seed=1"]
    plain = train(*args, results=tmp_path / "plain")  # the uninterrupted run, in this process
    assert plain.returncode == 0, plain.stderr
    (reference,) = records(tmp_path / "plain")

    marker = tmp_path / "paused"
    results = tmp_path / "cluster"
    env = {"MOLABENCH_TEST_PAUSE": "step:4", "MOLABENCH_TEST_PAUSE_FILE": str(marker), "MOLABENCH_TEST_PAUSE_S": "2"}
    proc = _sweep(*args, results=results, env=env)
    deadline = time.monotonic() + 300
    while not marker.exists():  # the job's process is inside step 4 (mid-epoch 2)
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job never reached step 4"
        time.sleep(0.05)
    job_pid = int(marker.read_text())
    from submitit import JobEnvironment

    os.kill(job_pid, JobEnvironment._usr_sig())  # what Slurm sends before a preemption or the time limit (submitit: SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "sweep summary: 1 job(s): 1 complete" in out, out
    (record,) = records(results)
    assert record["status"] == "complete" and record["attempts"] == 2
    assert record["resumed_from"]["status"] == "interrupted" and record["resumed_from"]["step"] == 1  # after step 4 = epoch 2, step 1
    assert record["pid"] != job_pid  # the requeued job is a new process
    assert record["metrics"] == reference["metrics"] and record["history"] == reference["history"]
    logs = "\n".join(p.read_text() for p in (results / "hydra").rglob("*_log.err"))
    assert "checkpoint and the record are saved; submitit requeues the job" in logs


def test_the_slurm_preset_composes_on_submitits_slurm_launcher():
    shown = train("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert shown.returncode == 0, shown.stderr
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in shown.stdout
    for line in ("partition: gpu", "max_num_timeout: 20", "signal_delay_s: 120", "array_parallelism: 64"):
        assert line in shown.stdout
