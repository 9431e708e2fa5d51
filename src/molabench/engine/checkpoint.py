"""Crash-safe, resumable runs: a run's identity, its training checkpoint, preemption signals.

- **Identity.** :func:`fingerprint` hashes the resolved configuration, less the keys that say
  *where* or *how visibly* a run happens rather than *what* it computes (:data:`NOT_IDENTITY`:
  results folder, device, threads, logger, progress bar, checkpoint policy, data location). The
  default run id is ``<method>-s<seed>-<fingerprint[:8]>``, so the same command (or the same job of
  a multirun) always names the same run folder, and re-running it finds that run's record and
  checkpoint.
- **Checkpoint.** ``checkpoint.pt`` beside the record holds the whole training state (model,
  optimiser, scheduler, weighting state, the selector's best weights, history, counters, every
  random stream and the loader's position inside the epoch); the trainer writes it atomically
  (``molabench.atomic``) every ``trainer.checkpoint_every`` (:class:`CheckpointSchedule`), at the
  end of training and on SIGTERM/SIGINT. It holds only what ``torch.load(weights_only=True)``
  reads back (tensors, numbers, strings, lists, dicts).
- **Signals.** :class:`SignalGuard` turns SIGTERM/SIGINT into :class:`Interrupted`. Inside
  :meth:`SignalGuard.deferred` blocks (a training step, a checkpoint write, a record write) the
  signal is only noted, and the trainer checkpoints at the next step boundary before raising; a
  second signal at least a second later forces the exit at once. Elsewhere (building the data,
  evaluating) it raises at once: nothing there changes the training state.
- **Lock.** :class:`RunLock` keeps two processes from training the same run folder at once
  (``flock``; the kernel releases it when a process dies, even by ``kill -9``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molabench.errors import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1

#: Configuration keys (dotted) that do not change what a run computes; left out of its identity.
NOT_IDENTITY = (
    "results_dir",
    "run_id",
    "experiment",  # already the run folder's parent
    "device",
    "logger",
    "trainer.threads",
    "trainer.progress",
    "trainer.checkpoint",
    "trainer.checkpoint_every",
    "trainer.resume",
    "data.root",
    "data.cache_dir",
)

#: Keys added after runs were recorded, left out of the identity at their default value so that those
#: runs keep their ids (and are found, resumed or skipped by the same command as before).
IDENTITY_DEFAULTS = {"trainer.sync_bn": False}

RESUME_POLICIES = ("auto", "never", "must")


def code_version() -> str:
    """The SHA-256 (16 hex) of molabench's own source: every ``.py`` file of the package, by
    relative path and content. Checkpoints and records carry it, so that resuming with changed code
    (an edit, a ``git pull``, another installed version) is flagged: the resumed run is then no
    longer bitwise the uninterrupted one. Also works for an installed wheel (no git needed)."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        root = Path(__file__).resolve().parents[1]
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE_VERSION = digest.hexdigest()[:16]
    return _CODE_VERSION


_CODE_VERSION: str | None = None


# -- identity -----------------------------------------------------------------------------------


def _without(config: Mapping[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in config:
        return
    if rest:
        if isinstance(config[head], dict):
            _without(config[head], rest)
    else:
        del config[head]  # type: ignore[attr-defined]


def fingerprint(config: Mapping[str, Any]) -> str:
    """The hex SHA-256 of the resolved configuration's identity keys (canonical JSON)."""
    identity = json.loads(json.dumps(config, default=str))
    for key in NOT_IDENTITY:
        _without(identity, key)
    for key, default in IDENTITY_DEFAULTS.items():
        head, _, leaf = key.rpartition(".")
        parent = identity.get(head) if head else identity
        if isinstance(parent, dict) and leaf in parent and parent[leaf] == default:
            del parent[leaf]
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=,@-]*")


def check_run_path(experiment: str, run_id: str) -> None:
    """``experiment`` (folder names joined by ``/``) and ``run_id`` (one folder name) must stay
    inside ``results_dir/runs``: no ``..``, no absolute path, no odd characters."""
    for key, value, parts in (("run_id", run_id, [run_id]), ("experiment", experiment, experiment.split("/"))):
        if not value or len(value) > 200 or any(not _NAME.fullmatch(part) or set(part) == {"."} for part in parts):
            raise ConfigError(
                f"{key}={value!r} is not a valid folder name: use letters, digits and . _ + = , @ -"
                f"{' (and / between folders)' if key == 'experiment' else ''}, no '..'; "
                "records go to <results_dir>/runs/<experiment>/<run_id>"
            )


# -- schedule -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointSchedule:
    """When the trainer writes a checkpoint besides the end of training and signals:
    every ``every`` epochs or steps (``unit``), or never (``every == 0``)."""

    every: int = 1
    unit: str = "epoch"

    @classmethod
    def parse(cls, value: Any) -> CheckpointSchedule:
        """``trainer.checkpoint_every``: ``N`` or ``"N epochs"`` (every N epochs), ``"N steps"``,
        ``0``/``false``/``never`` (only at the end of training and on a signal)."""
        if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("never", "false", "0")):
            return cls(0, "epoch")
        if isinstance(value, bool):
            return cls(1, "epoch")
        if isinstance(value, int):
            if value < 0:
                raise ConfigError(f"trainer.checkpoint_every must be at least 0, got {value!r}")
            return cls(value, "epoch")
        match = re.fullmatch(r"\s*(\d+)\s*(epochs?|steps?)?\s*", str(value).lower())
        if not match:
            raise ConfigError(
                f"trainer.checkpoint_every must be N (epochs), 'N epochs', 'N steps' or never, got {value!r}"
            )
        return cls(int(match.group(1)), "step" if (match.group(2) or "epoch").startswith("step") else "epoch")

    def after_step(self, steps_done: int) -> bool:
        return self.unit == "step" and self.every > 0 and steps_done % self.every == 0

    def after_epoch(self, epochs_done: int) -> bool:
        return self.unit == "epoch" and self.every > 0 and epochs_done % self.every == 0


# -- random streams -----------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global random stream: torch (CPU and each CUDA device in use), numpy, Python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss_next},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"], saved["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))


# -- checkpoint files ---------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :class:`Checkpointer` (``weights_only=True``: no code runs)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a molabench training checkpoint of format {FORMAT}")
    return state


@dataclass
class Checkpointer:
    """Where and when the trainer saves its state, and the state it resumes from (if any).

    ``on_progress`` is called after every checkpoint and every epoch with a small summary (epoch,
    step, history so far, the checkpoint's size and write time), so that the run's record can keep
    a heartbeat."""

    path: Path
    schedule: CheckpointSchedule = field(default_factory=CheckpointSchedule)
    identity: str = ""
    resume: dict[str, Any] | None = None
    on_progress: Callable[[dict[str, Any]], None] | None = None
    writes: int = 0
    last_write_s: float = 0.0
    last_size: int = 0

    def save(self, state: dict[str, Any]) -> None:
        from molabench.atomic import atomic_write

        payload = {"format": FORMAT, "identity": self.identity, "code": code_version(), "written": time.time(), **state}
        start = time.perf_counter()
        atomic_write(self.path, lambda tmp: torch.save(payload, tmp))
        self.last_write_s = time.perf_counter() - start
        self.last_size = self.path.stat().st_size
        self.writes += 1

    def report(self, progress: dict[str, Any]) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "writes": self.writes, "size_bytes": self.last_size, "write_s": self.last_write_s}


# -- signals ------------------------------------------------------------------------------------


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived. A :class:`BaseException` (like ``KeyboardInterrupt``), so that no
    ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: int | None = None  # the last SIGTERM/SIGINT this process received (any guard)


def received_signal() -> int | None:
    """The SIGTERM/SIGINT received by this process since it started, if any."""
    return _received


def note_signal(signum: int) -> None:
    global _received
    _received = signum


FORCE_AFTER_S = 1.0  # a second signal this much later than the first forces the exit


def submitit_signal() -> int | None:
    """The signal a submitit job (Hydra's submitit launcher: Slurm, local) receives before a
    preemption or a time limit, when this process is such a job: submitit's own handler requeues
    the job. A run checkpoints on it first (:class:`SignalGuard`), then hands it to submitit."""
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    if not executor:
        return None
    try:
        from submitit import JobEnvironment

        return int(JobEnvironment._usr_sig())  # SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
    except Exception:  # another submitit version: its documented default
        return int(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2))


class SignalGuard:
    """SIGTERM/SIGINT handling for one run (a context manager; a no-op off the main thread); in
    a submitit job also the preemption/timeout signal (:func:`submitit_signal`).

    The handler raises :class:`Interrupted` unless the code is inside :meth:`deferred`; there
    the signal is only recorded in :attr:`requested` for the trainer to act on at the next safe
    point (a step boundary: checkpoint, then raise). A second signal, at least
    :data:`FORCE_AFTER_S` after the first (so that one Ctrl-C reaching a process twice, from the
    terminal and from a parent forwarding it, counts once), raises even inside ``deferred``."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, active: bool = True) -> None:
        self.active = active and threading.current_thread() is threading.main_thread()
        self.signals = (*self.SIGNALS, *([usr] if (usr := submitit_signal()) is not None else []))
        self.requested: int | None = None
        self._first_at = 0.0
        self._deferring = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if self.active:
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        note_signal(signum)
        now = time.monotonic()
        if self.requested is None:
            self.requested, self._first_at = signum, now
            if self._deferring:
                if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 says it
                    print(f"{signal.Signals(signum).name}: checkpointing after the current step, then stopping", file=sys.stderr)
                return
            raise Interrupted(signum)
        if not self._deferring or now - self._first_at >= FORCE_AFTER_S:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a signal is recorded, not raised (see the class docstring)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal was recorded."""
        if self.requested is not None:
            raise Interrupted(self.requested)


# -- lock ---------------------------------------------------------------------------------------


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run folder>/.lock`` for the duration of a run.
    Where ``flock`` is unavailable (Windows, some network file systems) it locks nothing."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another process does."""
        try:
            import fcntl
        except ImportError:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:  # no locking on this file system
            os.close(fd)
            return True
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
