"""Entry point: ``python -m molabench.train method=<name> data=<name> [overrides]``.

Hydra composes ``data``, ``backbone``, ``method``, ``trainer`` and ``logger`` (see
``configs/``); ``-m`` sweeps any of them. Each run trains one algorithm and writes one
record (``molabench.report.records``). User errors end with one ``error:`` line and exit
code 2; the run's record then says ``failed``.

Runs are resumable (``docs/long_runs.md``): a run's id comes from its configuration, so the
same command finds the run again and, by ``trainer.resume``, skips it when complete or resumes
it from its checkpoint. SIGTERM/SIGINT checkpoint and exit with 128 + the signal. A multirun
ends with a summary of its jobs (complete, skipped, failed with their errors, interrupted) and
a non-zero exit when one failed, with either launcher; a failing job never stops the others.
"""

from __future__ import annotations

import random
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molabench.config_path import config_dir

if TYPE_CHECKING:
    from molabench.engine.checkpoint import CheckpointSchedule

CONFIG_DIR = config_dir()  # the package's configs (installed package data, or the checkout's configs/)
GROUPS = ("data", "backbone", "head", "method", "trainer", "logger", "sweep")
EXIT_USER_ERROR = 2


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)


def _resolve_device(name: str) -> Any:
    import torch

    from molabench.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={name!r} is not a device torch knows; use device=auto, cpu, cuda or cuda:N") from None


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_MAX_RECORDED_WARNINGS = 50


@contextmanager
def _warnings_into(record: dict[str, Any]) -> Iterator[None]:
    """Show each warning of a run (skipped images, an md5 mismatch, ...) as one ``warning:`` line
    and keep it in the record, so what a run silently worked around can be read back later."""
    kept: list[str] = record.setdefault("warnings", [])

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = str(message) if category is UserWarning else f"{category.__name__}: {message}"
        print(f"warning: {text}", file=sys.stderr)
        if len(kept) < _MAX_RECORDED_WARNINGS:
            kept.append(text)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _read_record(path: Path) -> dict[str, Any] | None:
    import json

    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"warning: ignoring the unreadable record {path}: {exc}", file=sys.stderr)
        return None
    return record if isinstance(record, dict) else None


def _resume_plan(policy: str, previous: dict[str, Any] | None, identity: str, checkpoint: Path, run_id: str) -> tuple[str, dict[str, Any] | None]:
    """What to do with run ``run_id`` given its folder's record and checkpoint and the policy
    ``trainer.resume``: ``("skip", record)`` (complete already), ``("resume", checkpoint state)``
    or ``("fresh", None)``; a ConfigError where the policy forbids all three."""
    from molabench.engine.checkpoint import load_checkpoint
    from molabench.errors import ConfigError

    where = checkpoint.parent
    status = (previous or {}).get("status")
    if previous is not None and previous.get("identity") != identity:
        if status == "complete" or policy != "never":
            other = "a different configuration" if previous.get("identity") else "an unknown configuration (an older record)"
            raise ConfigError(
                f"run_id={run_id} already holds a {status or 'unknown'} run of {other} ({where}); "
                "choose another run_id, delete that folder"
                + (" or set trainer.resume=never to replace the unfinished run" if status != "complete" else "")
            )
        return "fresh", None
    if status == "complete":
        if policy == "never":
            raise ConfigError(
                f"run {run_id} is already complete ({where / 'record.json'}) and trainer.resume=never would train it again; "
                "delete that folder or choose another run_id"
            )
        return "skip", previous
    state = None
    if checkpoint.is_file() and policy != "never":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns about a damaged file's "pickle protocol" before it fails
                state = load_checkpoint(checkpoint)
        except Exception as exc:  # a checkpoint from another version, or damaged outside molabench
            # torch's load errors run over several lines and sentences: the first sentence says what failed
            reason = _one_line(str(exc)).split(". ")[0][:200] or type(exc).__name__
            if policy == "must":
                raise ConfigError(
                    f"cannot resume run {run_id}: its checkpoint {checkpoint} does not load ({reason}); "
                    "restore the file, or use trainer.resume=auto to train the run afresh"
                ) from None
            print(f"warning: starting run {run_id} afresh: its checkpoint {checkpoint} does not load ({reason})", file=sys.stderr)
        else:
            if state.get("identity") != identity:
                if policy == "must":
                    raise ConfigError(f"cannot resume run {run_id}: its checkpoint {checkpoint} belongs to another configuration")
                print(f"warning: starting run {run_id} afresh: its checkpoint belongs to another configuration", file=sys.stderr)
                state = None
    if state is not None:
        return "resume", state
    if policy == "must":
        raise ConfigError(f"trainer.resume=must but run {run_id} has no checkpoint to resume ({checkpoint}); use trainer.resume=auto")
    return "fresh", None


def _prepare_run_folder(results_dir: Path, run_dir: Path) -> Any:
    """Create the run folder, prove it writable and lock it (see RunLock); one-line errors."""
    from molabench.engine.checkpoint import RunLock
    from molabench.errors import ConfigError

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        acquired = lock.acquire()
    except OSError as exc:
        raise ConfigError(f"results_dir {str(results_dir)!r} is not writable ({exc.strerror or exc}): choose another results_dir") from None
    if not acquired:
        raise ConfigError(
            f"run {run_dir.name} is being trained by another process (pid {lock.holder()}) in {run_dir}; "
            "wait for it, or stop it first"
        )
    return lock


def check_protocol(cfg: Mapping[str, Any]) -> None:
    """``trainer.follow_protocol`` (trainer=paper): the run must use the authors' image size and backbone of
    ``data.protocol``, which the data config states but cannot impose on the backbone group; a mismatch is a
    one-line error saying what to add (rather than an authors' recipe silently run on another network)."""
    from molabench.errors import ConfigError

    if not cfg["trainer"].get("follow_protocol"):
        return
    protocol = (cfg["data"].get("protocol") or {})
    wanted = {"data.image_size": protocol.get("image_size"), "backbone": protocol.get("backbone")}
    have = {"data.image_size": cfg["data"].get("image_size"), "backbone": cfg["backbone"].get("name")}
    wrong = [f"{key}={wanted[key]}" for key in wanted if wanted[key] is not None and str(wanted[key]) != str(have[key])]
    if wrong:
        from molabench.models.backbones import BACKBONES

        if str(wanted["backbone"]) not in BACKBONES:
            raise ConfigError(
                f"trainer=paper follows the authors' recipe for data={cfg['data']['name']}, whose backbone "
                f"{wanted['backbone']} molabench does not have; run with trainer=cpu (or trainer=default) instead"
            )
        raise ConfigError(
            f"trainer=paper follows the authors' recipe for data={cfg['data']['name']}: add {' '.join(wrong)} "
            "(or use trainer=cpu / trainer=default for another budget)"
        )


def run(cfg: Mapping[str, Any], task_overrides: list[str], parallel_job: bool, sources: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """Train one configuration (or resume it, or skip it when already complete; ``trainer.resume``)
    and write its record; returns the record (``skipped: True`` when it was complete already).

    The record exists from the start (``running``, with the checkpoint's path and a heartbeat),
    is updated every epoch and ends ``complete``, ``failed`` (with the error) or ``interrupted``
    (SIGTERM/SIGINT; resumable). Raises :class:`~molabench.engine.checkpoint.Interrupted` on a
    signal, after the checkpoint and the record are written."""
    from molabench.config_reads import ReadTracker
    from molabench.engine.checkpoint import (
        CHECKPOINT_NAME,
        RESUME_POLICIES,
        CheckpointSchedule,
        check_run_path,
        fingerprint,
    )
    from molabench.errors import ConfigError
    from molabench.report.records import RECORD_NAME

    plain, cfg = cfg, ReadTracker(cfg, sources=sources)  # the run reads through the tracker; the record keeps the plain config
    method, seed = cfg["method"]["name"], int(cfg["seed"])
    check_protocol(cfg)
    _resolve_device(str(cfg.get("device", "auto")))  # an impossible device fails before anything is written
    policy = str(cfg["trainer"].get("resume") or "auto")
    if policy not in RESUME_POLICIES:
        raise ConfigError(f"trainer.resume must be one of {', '.join(RESUME_POLICIES)}, got {policy!r}")
    schedule = CheckpointSchedule.parse(cfg["trainer"].get("checkpoint_every", 1))
    identity = fingerprint(plain)
    run_id = str(cfg.get("run_id") or f"{method}-s{seed}-{identity[:8]}")
    experiment = str(cfg["experiment"])
    check_run_path(experiment, run_id)
    results_dir = Path(str(cfg["results_dir"])).expanduser()
    run_dir = results_dir / "runs" / experiment / run_id
    record_path, checkpoint_path = run_dir / RECORD_NAME, run_dir / CHECKPOINT_NAME
    lock = _prepare_run_folder(results_dir, run_dir)
    try:
        for stale in run_dir.glob(".*.tmp"):  # half-written files of a process killed while writing (we hold the lock)
            stale.unlink(missing_ok=True)
        previous = _read_record(record_path)
        plan, state = _resume_plan(policy, previous, identity, checkpoint_path, run_id)
        if plan == "skip":
            assert state is not None
            return {**state, "path": str(record_path), "skipped": True}
        return _train(
            cfg, plain, task_overrides, parallel_job, run_id=run_id, identity=identity, run_dir=run_dir, schedule=schedule,
            resume=state, previous=previous if plan == "resume" else None,
        )
    finally:
        lock.release()


def _train(
    cfg: Any,
    plain: Mapping[str, Any],
    task_overrides: list[str],
    parallel_job: bool,
    *,
    run_id: str,
    identity: str,
    run_dir: Path,
    schedule: CheckpointSchedule,
    resume: dict[str, Any] | None,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train (or resume, from ``resume``) the run of ``run_dir``, keeping its record up to date.
    ``cfg`` is ``plain`` read through a :class:`~molabench.config_reads.ReadTracker`: the keys the
    run never read are recorded (``config_unread``) and warned about."""
    import os
    import platform

    import torch

    from molabench.data import build_data
    from molabench.engine.algorithm import build_algorithm, build_architecture
    from molabench.engine.checkpoint import CHECKPOINT_NAME, Checkpointer, Interrupted, SignalGuard
    from molabench.engine.trainer import fit
    from molabench.errors import ConfigError
    from molabench.loggers import build_logger
    from molabench.report.records import RECORD_NAME, environment, variant_overrides, write_json_atomic
    from molabench.report.summary import run_summary

    method, seed = cfg["method"]["name"], int(cfg["seed"])
    record_path, checkpoint_path = run_dir / RECORD_NAME, run_dir / CHECKPOINT_NAME
    earlier = previous or {}
    record: dict[str, Any] = {
        "run_id": run_id,
        "identity": identity,
        "experiment": cfg["experiment"],
        "method": method,
        "data": cfg["data"]["name"],
        "seed": seed,
        "overrides": variant_overrides(task_overrides),
        "status": "running",
        "checkpoint": str(checkpoint_path),
        "pid": os.getpid(),
        "host": platform.node(),
        "started": time.time(),
        "heartbeat": time.time(),
        "attempts": int(earlier.get("attempts") or 0) + 1,
        "config": dict(plain),
    }
    if resume is not None:
        at = resume["position"]
        record["resumed_from"] = {"epoch": int(at["epoch"]), "step": int(at["step"]), "phase": at["phase"], "status": earlier.get("status")}
        from molabench.engine.checkpoint import code_version

        if resume.get("code") != code_version():  # an edit, a pull, another version: no longer bitwise the uninterrupted run
            record["resumed_from"].update(code_changed=True, code_before=resume.get("code"), code_now=code_version())
            print(
                f"warning: resuming run {run_id} with changed molabench code (checkpoint written by {resume.get('code') or 'an older version'}, "
                f"now {code_version()}): the result may differ from an uninterrupted run; use trainer.resume=never to start afresh",
                file=sys.stderr,
            )
    started = time.time()
    wall_before = float(earlier.get("wall_s") or 0.0) if resume is not None else 0.0
    with SignalGuard() as guard, _warnings_into(record):

        def write_record() -> None:
            record["heartbeat"] = time.time()
            record["wall_s"] = wall_before + time.time() - started
            with guard.deferred():  # a signal waits for the write to finish
                write_json_atomic(record_path, record)

        def on_progress(progress: dict[str, Any]) -> None:
            record["progress"] = {k: v for k, v in progress.items() if k != "history"}
            record["history"] = progress["history"]
            record["checkpoint_writes"] = checkpoints.describe()
            write_record()

        try:
            write_record()
        except OSError as exc:
            raise ConfigError(f"cannot write the run record {record_path} ({exc.strerror or exc}): choose another results_dir") from None
        if resume is not None:
            at = record["resumed_from"]
            print(f"resuming run {run_id} at epoch {at['epoch'] + 1} ({at['phase']}, step {at['step']}) from {checkpoint_path}", file=sys.stderr)
        checkpoints = Checkpointer(checkpoint_path, schedule, identity, resume, on_progress)
        try:
            if cfg["trainer"].get("threads"):
                torch.set_num_threads(int(cfg["trainer"]["threads"]))
            elif parallel_job:
                torch.set_num_threads(1)  # parallel jobs share the cores: one thread each
            device = _resolve_device(str(cfg.get("device", "auto")))
            _seed_everything(seed)
            data = build_data(cfg["data"])
            record["data"] = data.name
            record["tasks"] = [{"name": t.name, "column": t.display, "num_classes": t.num_classes, "kind": t.kind} for t in data.tasks]
            record["setting"] = data.setting
            _seed_everything(seed)
            head = cfg.get("head")
            algorithm = build_algorithm(cfg["method"], cfg["backbone"], data, head, bn_stats=str(cfg["trainer"].get("bn_stats") or "batch"))
            hps_total = _count(build_architecture({"architecture": {"name": "hps"}}, cfg["backbone"], data, head).parameters())
            total = _count(algorithm.parameters())
            params = {"total": total, "trainable": _count(algorithm.trainable_parameters()), "added": total - hps_total, "hps_total": hps_total}
            params["penalties"] = _count(algorithm.penalties.parameters())
            params.update(algorithm.arch.param_counts())  # e.g. MoLA: adapter / router counts
            record["params"] = params
            logger = build_logger(cfg["logger"], plain, run_id, str(run_dir))
            progress = cfg["trainer"].get("progress", "auto")
            show = sys.stderr.isatty() if progress == "auto" else bool(progress)
            result = fit(algorithm, data, cfg["trainer"], device, seed, logger, progress=show and not parallel_job, checkpoints=checkpoints, guard=guard)
            record.pop("progress", None)
            record.update(
                status="complete",
                metrics=result.metrics,
                history=result.history,
                selection={**result.selection, "epoch": result.selected_epoch},
                timing=result.timing,
                gradients=algorithm.describe(),  # gradient mode / paths and BatchNorm statistics in effect
            )
            if result.notes:
                record["notes"] = result.notes
            record["summary"] = run_summary(record, Path(str(cfg["results_dir"])).expanduser() / "runs")
            final = result.metrics.get("test") or result.metrics.get("val") or {}
            logger.finish({**{f"final/{k}": v for k, v in _flat(final).items()}, "final/delta_m": record["summary"].get("delta_m")})
            if cfg["trainer"].get("checkpoint"):
                from molabench.atomic import atomic_write

                with guard.deferred():
                    atomic_write(run_dir / "model.pt", lambda tmp: torch.save(algorithm.state_dict(), tmp))
            record["config_unread"] = cfg.unread()
            if record["config_unread"]:
                print(f"warning: this run never read {', '.join(record['config_unread'])}: these keys had no effect", file=sys.stderr)
        except Interrupted as exc:
            record.update(status="interrupted", error=str(exc), resumable=checkpoint_path.is_file())
            raise
        except KeyboardInterrupt:  # no guard (not the main thread): nothing was checkpointed now
            record.update(status="interrupted", error="KeyboardInterrupt", resumable=checkpoint_path.is_file())
            raise
        except BaseException as exc:  # user error or bug: the record says so; the caller reports it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", resumable=checkpoint_path.is_file())
            raise
        finally:
            record["env"] = environment(locals().get("device", "unknown"))
            record["checkpoint_writes"] = checkpoints.describe()
            try:
                write_record()
            except OSError as exc:
                print(f"warning: could not write the record {record_path}: {exc}", file=sys.stderr)
            record["path"] = str(record_path)
    if record["status"] == "complete":
        checkpoint_path.unlink(missing_ok=True)  # the record is complete: the training state is no longer needed
    return record


def _flat(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{task}/{name}": value for task, values in metrics.items() for name, value in values.items() if name != "n"}


def print_summary(record: Mapping[str, Any]) -> None:
    """Every task's metrics (its kind's, in table order) on the val and test splits, then Δm%."""
    from molabench.data.base import TaskSpec
    from molabench.tasks import kind_of

    metrics = record["metrics"]
    splits = [s for s in ("val", "test") if s in metrics]
    print(f"\n{record['method']} on {record['data']} (seed {record['seed']}), selection={record['selection']['protocol']} epoch {record['selection']['epoch']}")
    rows: list[tuple[str, str, str]] = []  # (task label, metric label, metric key)
    labels: dict[str, str] = {}
    for task in record["tasks"]:
        kind = kind_of(TaskSpec.from_record(task))
        labels.update(kind.labels())
        rows += [(task["name"] if i == 0 else "", m.label, f"{task['name']}/{m.name}") for i, m in enumerate(kind.metrics)]
    averaged = [k for k in metrics[splits[-1]].get("avg", {}) if k != "loss"]
    rows += [("avg" if i == 0 else "", labels.get(name, name), f"avg/{name}") for i, name in enumerate(averaged)]
    print(f"{'task':<16}{'metric':<10}" + "".join(f"{s:>12}" for s in splits))
    for task, label, key in rows:
        name, metric = key.split("/", 1)
        print(f"{task:<16}{label:<10}" + "".join(f"{_num(metrics[s].get(name, {}).get(metric)):>12}" for s in splits))
    summary = record.get("summary") or {}
    if summary.get("delta_m") is not None:
        print(f"Δm% vs {summary['baseline']} ({summary['baseline_runs']} run(s)): {summary['delta_m']:+.2f}  (lower is better)")
    for note in record.get("notes") or []:
        print(f"note: {note}")
    timing = record["timing"]
    print(f"train {timing['train_s']:.1f}s  step {timing['step_s_median'] * 1000:.1f} ms  {timing['samples_per_s']:.0f} samples/s")
    print(f"record: {record['path']}")


def _num(value: Any) -> str:
    return "nan" if not isinstance(value, (int, float)) or value != value else f"{value:.4g}" if abs(value) < 10 else f"{value:.2f}"


def _user_config_dirs(argv: list[str]) -> list[Path] | None:
    """The folders ``hydra.searchpath=[...]`` / ``--config-dir`` add, or ``None`` when one of them
    is not a local folder (a ``pkg://`` of a missing package, an interpolation, another scheme)
    or the override does not parse: then Hydra alone judges the config-group choices."""
    from molabench.config_path import user_config_dirs
    from molabench.errors import ConfigError

    try:
        folders = user_config_dirs(argv)
    except Exception:  # a malformed hydra.searchpath: _check_overrides reports it
        return None
    local = [folder for folder in folders if folder is not None]
    if len(local) < len(folders):
        return None
    for folder in local:
        if not folder.is_dir():
            raise ConfigError(f"config folder {folder} (hydra.searchpath / --config-dir) does not exist")
    return local


def _check_group_choices(argv: list[str]) -> None:
    """Unknown config-group options get one line here instead of Hydra's multi-line report.
    The options are the package's configs plus those of the user's folders on the search path."""
    from molabench.errors import ConfigError

    extra = _user_config_dirs(argv)
    if extra is None:
        return
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+~") not in GROUPS:
            continue
        group = key.lstrip("+~")
        available = sorted({p.stem for folder in (CONFIG_DIR, *extra) for p in (folder / group).glob("*.yaml")})
        where = ", ".join([f"configs/{group}/", *(str(folder / group) + "/" for folder in extra)])
        for choice in value.split(","):
            if choice and choice not in available:
                raise ConfigError(f"unknown {group} {choice!r}; choose one of: {', '.join(available)} ({where})")


def _quote(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar (only quotes need escaping)."""
    return "'" + value.replace("'", "\\'") + "'"


def _check_overrides(argv: list[str]) -> str | None:
    """Compose the first configuration of the command line once, so that malformed overrides,
    unknown keys and broken interpolations fail with one line before Hydra starts. The user's
    config folders (``hydra.searchpath=[...]``, ``--config-dir``) are on the search path as in
    the run itself."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from molabench.config_path import search_path_entries, strip_config_dir_flags
    from molabench.errors import ConfigError

    overrides = [a for a in strip_config_dir_flags(argv) if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        search_path = search_path_entries(argv)
    except Exception as exc:  # Hydra's grammar errors have no common public base class
        raise ConfigError(f"cannot parse the overrides {' '.join(overrides)!r}: {str(exc).splitlines()[0]}") from None
    first = [f"hydra.searchpath=[{','.join(_quote(entry) for entry in search_path)}]"] if search_path else []
    for override in parsed:
        if override.key_or_group.startswith("hydra"):
            continue
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()), None)
            first.append(f"{override.get_key_element()}={value}")
        else:
            first.append(override.input_line)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            resolved = OmegaConf.to_container(compose(config_name="config", overrides=first), resolve=True)
    except Exception as exc:  # compose raises several unrelated exception types
        unknown = re.search(r"Could not override '([^']+)'", str(exc))
        if unknown:
            raise ConfigError(_unknown_key_message(unknown.group(1), [o for o in first if not o.startswith(unknown.group(1) + "=")])) from None
        message = " ".join(line.strip() for line in str(exc).splitlines()[:2] if line.strip())
        raise ConfigError(f"invalid configuration: {message}") from None
    results_dir = resolved.get("results_dir") if isinstance(resolved, dict) else None
    return str(results_dir) if results_dir else None


def _jobs_folder(results_dir: str | None) -> Path:
    """Where the jobs of this command report (:func:`_sweep_summary`): under ``results_dir`` (on a
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


def _unknown_key_message(key: str, other_overrides: list[str]) -> str:
    """``trainer.epoch`` is not a key: say so, with the closest existing key, rather than Hydra's
    advice to append it with ``+`` (which would only add the typo as a new, ignored key)."""
    import difflib

    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    parent, _, name = key.rpartition(".")
    choices: list[str] = []
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            node = compose(config_name="config", overrides=other_overrides)
        node = OmegaConf.select(node, parent) if parent else node
        if isinstance(node, DictConfig):
            choices = [str(k) for k in node]
    except Exception:  # the other overrides fail too: they get their own line on the next try
        pass
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    where = f"{parent} has: {', '.join(choices)}" if choices and not close else ""
    return f"invalid configuration: {key} is not a configuration key ({hint or where or 'check its spelling'}); fix the spelling (a leading + would add it as a new key that nothing reads)"


SWEEP_ENV = "MOLABENCH_SWEEP_LOG"  # the folder where the jobs of one command report (set by main)
_STOP = "STOP"  # a file in that folder: the sweep was asked to stop; jobs not yet started skip


def _sweep_log() -> Path | None:
    import os

    folder = os.environ.get(SWEEP_ENV)
    return Path(folder) if folder else None


def _report_job(num: int, **fields: Any) -> None:
    """Write job ``num``'s status into the sweep's log folder (read by :func:`_sweep_summary`,
    also from the joblib launcher's worker processes)."""
    import os

    from molabench.atomic import write_json_atomic

    folder = _sweep_log()
    if folder is not None:
        write_json_atomic(folder / f"{num}.json", {"num": num, "pid": os.getpid(), "time": time.time(), **fields})


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _task(cfg: Any) -> None:
    """Hydra's task: one run. In a multirun every outcome is reported as the job's status (see
    :func:`_sweep_summary`) and nothing is raised, so a failing job never stops the others; a
    SIGTERM/SIGINT stops the sweep after the running jobs have checkpointed."""
    import signal
    import traceback

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from molabench.config_reads import interpolation_sources
    from molabench.engine.checkpoint import Interrupted, received_signal, submitit_signal
    from molabench.errors import MolabenchError

    hydra_cfg = HydraConfig.get()
    parallel = "joblib" in str(hydra_cfg.launcher.get("_target_", ""))
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    num = int(hydra_cfg.job.get("num") or 0)
    job = " ".join(hydra_cfg.overrides.task)
    log = _sweep_log() if multirun else None
    report = (lambda **fields: _report_job(num, overrides=job, **fields)) if log is not None else (lambda **fields: None)
    if log is not None and ((log / _STOP).exists() or received_signal() is not None):
        report(status="not started", error="the sweep was interrupted before this job")
        return
    report(status="running")
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # omegaconf raises several unrelated types for bad interpolations
        message = _one_line(f"invalid configuration: {exc}")
        print(f"error: {message}", file=sys.stderr)
        report(status="failed", error=message)
        if not multirun:
            raise SystemExit(EXIT_USER_ERROR) from None
        return
    try:
        record = run(resolved, list(hydra_cfg.overrides.task), parallel, sources=interpolation_sources(cfg))
    except Interrupted as exc:
        if exc.signum == submitit_signal():  # preempted or out of time: submitit requeues the job, which resumes
            print(f"interrupted ({exc}): the checkpoint and the record are saved; submitit requeues the job", file=sys.stderr)
            report(status="interrupted", error=f"{exc}; requeued", signal=exc.signum)
            signal.raise_signal(exc.signum)  # submitit's handler (restored by the run's guard): requeue, exit
            raise SystemExit(exc.exit_code) from None  # submitit did not take it over
        print(f"interrupted ({exc}): the checkpoint and the record are saved; run the same command again to resume", file=sys.stderr)
        report(status="interrupted", error=str(exc), signal=exc.signum)
        if log is not None:
            (log / _STOP).touch()
            return
        raise SystemExit(exc.exit_code) from None
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        report(status="failed", error=_one_line(str(exc)), user_error=True)
        if not multirun:
            raise SystemExit(EXIT_USER_ERROR) from None
        return
    except Exception as exc:  # a bug: its traceback, and in a sweep the other jobs still run
        if not multirun:
            raise
        traceback.print_exc()
        report(status="failed", error=_one_line(f"{type(exc).__name__}: {exc}"))
        return
    if record.get("skipped"):
        print(f"run {record['run_id']} is already complete ({record['path']}); nothing to do", file=sys.stderr)
        report(status="skipped", run_id=record["run_id"], record=record["path"])
        if not parallel and not multirun:
            print_summary(record)
        return
    report(status="complete", run_id=record["run_id"], record=record["path"])
    if not parallel:
        print_summary(record)


def _sweep_summary(folder: Path) -> int:
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


class _ParentSignals:
    """SIGTERM/SIGINT in the main process outside a run's own handling: in a multirun, ask the
    sweep to stop (jobs not yet started are skipped) and pass the signal on to the jobs running in
    other processes (the joblib launcher's workers), which checkpoint and stop; otherwise stop
    now (:class:`~molabench.engine.checkpoint.Interrupted`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _ParentSignals:
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

        first = self.folder.exists() and not (self.folder / _STOP).exists()
        note_signal(signum)
        jobs = list(self.folder.glob("*.json")) if self.folder.exists() else []
        if not jobs or not first:
            raise Interrupted(signum)
        (self.folder / _STOP).touch()
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


_NO_JOB_OPTIONS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc", "--version")
_VALUE_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--package", "-p", "--experimental-rerun")


def _add_override(argv: list[str], override: str) -> None:
    """Add ``override`` to a Hydra command line beside the user's overrides: argparse takes the
    overrides only as one run of positional arguments (before the first one, else at the end)."""
    for i in range(1, len(argv)):
        if not argv[i].startswith("-") and argv[i - 1] not in _VALUE_OPTIONS:
            argv.insert(i, override)
            return
    argv.append(override)


def main() -> None:
    import os
    import shutil

    from molabench.engine.checkpoint import Interrupted, received_signal
    from molabench.errors import MolabenchError

    runs_jobs = not any(arg in _NO_JOB_OPTIONS or arg.startswith(("--cfg", "-c=", "--info=", "--shell-completion")) for arg in sys.argv[1:])
    results_dir = None
    try:
        modes = [a for a in sys.argv[1:] if a in ("-m", "--multirun", "--run", "-r", "--info", "-i", "--shell-completion", "-sc", "-c") or a.startswith("--cfg")]
        if len({m.split("=")[0] for m in modes}) > 1:
            raise MolabenchError(f"{' and '.join(modes)} cannot be combined: Hydra takes one of --run, --multirun, --cfg, --info at a time")
        _check_group_choices(sys.argv[1:])
        if runs_jobs:
            results_dir = _check_overrides(sys.argv[1:])
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None

    import hydra

    multirun = any(arg in ("-m", "--multirun") for arg in sys.argv[1:])
    folder = _jobs_folder(results_dir if multirun else None)
    os.environ[SWEEP_ENV] = str(folder)
    if runs_jobs:
        # Each job reads the folder from its own environment, set by Hydra in the job's process: a
        # launcher's reused worker (joblib's loky pool) would otherwise keep an earlier command's folder.
        _add_override(sys.argv, f"++hydra.job.env_set.{SWEEP_ENV}={folder}")
    code: int | str | None = 0
    try:
        with _ParentSignals(folder):
            try:
                hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(_task)()
            except SystemExit as exc:
                code = exc.code
            except Interrupted as exc:
                print(f"interrupted ({exc})", file=sys.stderr)
                code = exc.exit_code
        sweep_code = _sweep_summary(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    signum = received_signal()
    if code in (0, None):
        code = sweep_code or (128 + signum if signum is not None else 0)
    if code not in (0, None):
        raise SystemExit(code)


if __name__ == "__main__":
    main()
