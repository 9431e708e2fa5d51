"""A multirun's bookkeeping: every job reports its outcome to one folder, and the command ends
with a summary of them (complete, skipped, failed with their one-line errors, interrupted) and an
exit code, whatever the launcher (basic, joblib, submitit); SIGTERM/SIGINT in the parent stop the
sweep after the running jobs have checkpointed."""

from __future__ import annotations

import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from molabench.errors import EXIT_USER_ERROR


def jobs_folder(results_dir: str | None) -> Path:
    """Where the jobs of this command report (:func:`sweep_summary`): under ``results_dir`` (on a
    cluster the one folder that the submitting node and the jobs' nodes share), else a temporary one."""
    import tempfile

    if results_dir:
        try:
            base = Path(results_dir).expanduser() / "hydra"
            base.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="jobs-", dir=base))
        except OSError:  # unwritable: the run itself says so in one line
            pass
    return Path(tempfile.mkdtemp(prefix="molabench-jobs-"))

SWEEP_ENV = "MOLABENCH_SWEEP_LOG"  # the folder where the jobs of one command report (set by main)

STOP = "STOP"  # a file in that folder: the sweep was asked to stop; jobs not yet started skip

def sweep_log() -> Path | None:
    import os

    folder = os.environ.get(SWEEP_ENV)
    return Path(folder) if folder else None

def report_job(num: int, **fields: Any) -> None:
    """Write job ``num``'s status into the sweep's log folder (read by :func:`sweep_summary`,
    also from the joblib launcher's worker processes)."""
    import os

    from molabench.atomic import write_json_atomic

    folder = sweep_log()
    if folder is not None:
        write_json_atomic(folder / f"{num}.json", {"num": num, "pid": os.getpid(), "time": time.time(), **fields})


def sweep_summary(folder: Path) -> int:
    """Print the jobs' outcomes of a multirun (complete, skipped, failed with their one-line
    errors, interrupted, not started) and return the exit code they call for: 0 when every job
    is complete or skipped, 128 + the signal when a job was interrupted, 2 when jobs failed on
    user errors only, else 1. Nothing is printed when no job reported (a single run)."""
    import json

    jobs = []
    for path in folder.glob("*.json"):
        try:
            jobs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    if not jobs:
        return 0
    jobs.sort(key=lambda job: int(job["num"]))
    for job in jobs:
        if job["status"] == "running":  # reported a start, never an end: its process died
            job.update(status="failed", error="the job's process ended without a result (killed? out of memory?)")
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    order = ("complete", "skipped", "failed", "interrupted", "not started")
    parts = [f"{counts[s]} {s}" + (" (already complete)" if s == "skipped" else "") for s in order if counts.get(s)]
    print(f"\nsweep summary: {len(jobs)} job(s): {', '.join(parts)}")
    for job in jobs:
        if job["status"] in ("failed", "interrupted"):
            print(f"  {job['status']:<11} #{job['num']} {job.get('overrides') or '(no overrides)'}: {job.get('error')}")
    signals = [int(job["signal"]) for job in jobs if job["status"] == "interrupted" and job.get("signal")]
    failed = [job for job in jobs if job["status"] == "failed"]
    if signals:
        return 128 + signals[0]
    if failed:
        return EXIT_USER_ERROR if all(job.get("user_error") for job in failed) else 1
    return 0

class ParentSignals:
    """SIGTERM/SIGINT in the main process outside a run's own handling: in a multirun, ask the
    sweep to stop (jobs not yet started are skipped) and pass the signal on to the jobs running in
    other processes (the joblib launcher's workers), which checkpoint and stop; otherwise stop
    now (:class:`~molabench.engine.checkpoint.Interrupted`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> ParentSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: object) -> None:
        import json
        import os

        from molabench.engine.checkpoint import Interrupted, note_signal

        first = self.folder.exists() and not (self.folder / STOP).exists()
        note_signal(signum)
        jobs = list(self.folder.glob("*.json")) if self.folder.exists() else []
        if not jobs or not first:
            raise Interrupted(signum)
        (self.folder / STOP).touch()
        print(f"{signal_name(signum)}: stopping the sweep; running jobs checkpoint first", file=sys.stderr)
        for path in jobs:
            try:
                job = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if job.get("status") == "running" and int(job.get("pid", 0)) not in (0, os.getpid()):
                with suppress(OSError):  # the job ended meanwhile
                    os.kill(int(job["pid"]), signum)

def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name
