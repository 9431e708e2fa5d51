"""Running ``python -m molabench.train`` from tests.

``train`` runs the entry point *in this process* with the given command line: the same
``main()`` a user's process runs (argument checks, Hydra, the run, the sweep summary, the exit
code), with its stdout and stderr captured. It saves the 3-4 s of importing torch, torchvision
and Hydra that every subprocess pays, which is most of an end-to-end smoke test. ``train_process``
runs a real subprocess, for what only a process shows: signals, kill -9, the environment, the
interpreter's own handling of an uncaught exception.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["trainer=smoke", "data.n_train=16", "data.n_val=8", "data.n_test=8", "data.image_size=16"]


def train(*args: str, results: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m molabench.train *args results_dir=results``, in this process."""
    from hydra.core.global_hydra import GlobalHydra

    from molabench import train as entry

    argv = [*args, *([f"results_dir={results}"] if results is not None else [])]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_threads, saved_cwd = sys.argv, torch.get_num_threads(), os.getcwd()
    sys.argv = ["molabench.train", *argv]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                entry.main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = saved_argv
        torch.set_num_threads(saved_threads)
        os.chdir(saved_cwd)
        GlobalHydra.instance().clear()
    returncode = 0 if code is None else code if isinstance(code, int) else 1
    if isinstance(code, str):  # SystemExit("message") prints the message, as the interpreter would
        err.write(code + "\n")
    return subprocess.CompletedProcess(["molabench.train", *argv], returncode, out.getvalue(), err.getvalue())


def train_process(*args: str, results: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m molabench.train *args results_dir=results`` as a real subprocess (one thread)."""
    argv = [*args, *([f"results_dir={results}"] if results is not None else [])]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "molabench.train", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment
    )


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").rglob("record.json"))]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, exactly one non-empty stderr line starting ``error: `` that holds every fragment,
    and no traceback anywhere."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
