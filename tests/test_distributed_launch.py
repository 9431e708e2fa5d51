"""``torchrun -m molabench.train`` (issue 17): one record written by rank 0, and a launch killed midway
(SIGTERM to the launcher, kill -9 of every process) resumes as the uninterrupted launch.

A file of its own so that its launches and ``tests/test_distributed.py``'s 2-rank equivalence launch
run on different pytest-xdist workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.test_distributed import ROOT, TINY, TORCHRUN, _env, _records

# -- the command line: torchrun -m molabench.train ------------------------------------------------

COMMAND = ["-m", "molabench.train", *TINY, "method=dwa", "trainer.epochs=2", "trainer.batch_size=4", "trainer.max_steps_per_epoch=3",
           "trainer.checkpoint_every=1 steps", "seed=2"]


def _launch(results: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TORCHRUN, *COMMAND, f"results_dir={results}", *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env or _env())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    results = tmp_path_factory.mktemp("plain")
    return _launch(results), results


@pytest.mark.slow
def test_torchrun_trains_one_run_and_rank_0_writes_its_record(uninterrupted):
    proc, results = uninterrupted
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = _records(results)
    assert record["status"] == "complete" and not Path(record["checkpoint"]).exists()
    assert record["distributed"]["world_size"] == 2 and record["distributed"]["global_batch_size"] == 8
    assert record["distributed"]["backend"] == "gloo" and record["distributed"]["sync_bn"] is False
    assert record["distributed"]["batchnorm"].startswith("per rank")
    assert proc.stdout.count("record: ") == 1  # one summary: rank 0's
    assert "Traceback" not in proc.stderr


def _stop_at(results: Path, point: str, how: signal.Signals, pause_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Launch, wait until both ranks pause at ``point``, then send ``how`` to the launcher (SIGTERM:
    torchrun passes it on to the ranks) or to the whole launch (SIGKILL: the launcher and the ranks,
    which torchrun starts in sessions of their own; their pids are in the pause markers)."""
    markers = [results / f"paused-{point.replace(':', '-')}-{r}" for r in (0, 1)]
    env = _env(MOLABENCH_TEST_PAUSE=point, MOLABENCH_TEST_PAUSE_FILE=str(results / f"paused-{point.replace(':', '-')}-{{rank}}"),
               MOLABENCH_TEST_PAUSE_S=str(pause_s))
    with subprocess.Popen([*TORCHRUN, *COMMAND, f"results_dir={results}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, start_new_session=True) as proc:
        deadline = time.monotonic() + 300
        while not all(m.exists() for m in markers):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the launch never reached " + point
            time.sleep(0.05)
        if how == signal.SIGKILL:
            for pid in [int(m.read_text()) for m in markers] + [proc.pid]:
                os.kill(pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, how)
        out, err = proc.communicate(timeout=300)
    for m in markers:
        m.unlink()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_a_killed_launch_resumes_as_the_uninterrupted_one(uninterrupted, tmp_path):
    from tests.cli import assert_one_line_error, train

    reference_proc, reference_results = uninterrupted
    assert reference_proc.returncode == 0, reference_proc.stderr[-3000:]
    (reference,) = _records(reference_results)
    results = tmp_path / "killed"
    # SIGTERM to torchrun in the middle of epoch 1: the ranks agree to stop after the same step, rank 0 checkpoints
    termed = _stop_at(results, "step:2", signal.SIGTERM, pause_s=2)
    assert termed.returncode != 0
    (record,) = _records(results)
    assert record["status"] == "interrupted" and record["resumable"], termed.stderr[-3000:]
    from molabench.engine.checkpoint import load_checkpoint

    saved = load_checkpoint(Path(record["checkpoint"]))
    assert saved["world_size"] == 2 and saved["step_count"] == 2
    # kill -9 of the whole launch in epoch 2 (the last checkpoint: after step 4)
    killed = _stop_at(results, "step:5", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(Path(_records(results)[0]["checkpoint"]))["step_count"] == 4
    # one process cannot resume it: one line says why and what to do
    alone = train(*COMMAND[2:], f"results_dir={results}")
    assert_one_line_error(alone, "written by 2 processes (torchrun)", "torchrun --nproc_per_node=2", "trainer.resume=never")
    # the same launch again resumes and ends as the uninterrupted launch, bit for bit
    done = _launch(results)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("resuming run") == 1
    (record,) = _records(results)
    assert record["status"] == "complete" and record["attempts"] == 3
    assert record["metrics"] == reference["metrics"] and record["history"] == reference["history"]
