"""One JSON record per run, written atomically.

``results/runs/<experiment>/<run-id>/record.json`` holds the resolved config, the final
metrics (split -> task -> metric -> value, plus ``avg``), the per-epoch history, parameter
counts, timing and the environment. It is never half-written (``molabench.atomic``).

A record exists from the moment a run starts and its ``status`` says where the run is:

- ``running``: training (``heartbeat`` is the time of the last update, every epoch and every
  checkpoint; ``progress`` and ``history`` so far; ``checkpoint`` the resumable state's path).
  A ``running`` record whose heartbeat has stopped is a run that was killed (``kill -9``, a
  node failure): re-running its command resumes it from its checkpoint.
- ``interrupted``: stopped by SIGTERM/SIGINT after writing its checkpoint (``resumable``).
- ``failed``: ``error`` says why (``resumable`` when a checkpoint remains).
- ``complete``: the final metrics are there; the checkpoint has been deleted.

``identity`` is the hash of the configuration (``molabench.engine.checkpoint.fingerprint``);
``attempts`` counts the processes that worked on the run, ``resumed_from`` where the last one
started. Tables use complete records only.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from molabench.atomic import write_json_atomic  # noqa: F401  (re-exported: records are written with it)

RECORD_NAME = "record.json"


def git_commit(start: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=start or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device | str) -> dict[str, Any]:
    from molabench.engine.checkpoint import code_version

    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "code": code_version(),  # molabench's source digest (a checkpoint carries it too)
        "platform": platform.platform(),
    }


# Overrides that choose *which* runs happen rather than *how* a method is configured: they never
# distinguish rows of a table.
_NON_VARIANT_PREFIXES = (
    "seed=", "method=", "data=", "experiment=", "results_dir=", "logger", "device=", "run_id=", "hydra", "+sweep=", "sweep=",
    "trainer.threads=", "trainer.progress=", "trainer.checkpoint=", "trainer.checkpoint_every=", "trainer.resume=", "data.root=",
    "data.cache_dir=",
)


def variant_overrides(overrides: list[str]) -> list[str]:
    """The overrides that make a run a variant of its method (e.g. ``method.rank=4``), sorted."""
    return sorted(o for o in overrides if not o.startswith(_NON_VARIANT_PREFIXES))


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; None when there is none, or it is unreadable (warned) or not a JSON object."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"warning: ignoring the unreadable record {path}: {exc}", file=sys.stderr)
        return None
    return record if isinstance(record, dict) else None


def iter_records(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every readable record under ``root``; unreadable files are reported, not hidden."""
    for path in sorted(root.rglob(RECORD_NAME)):
        try:
            yield path, json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"warning: skipping unreadable record {path}: {exc}")
