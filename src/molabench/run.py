"""One run: plan it against its folder (skip, resume or start), train it, keep its record.

:func:`run` is what a Hydra job of ``python -m molabench.train`` does with its resolved
configuration (``molabench.train``): the run's identity and folder, the resume policy
(``trainer.resume``), the lock, then :func:`_train`, which builds the data and the algorithm, fits,
and writes the record from the start (``running``, with a heartbeat) to its end (``complete``,
``failed`` or ``interrupted``). The configuration is read through a
:class:`~molabench.config_reads.ReadTracker`: keys set but never read are recorded and warned about.

Under ``torchrun`` (``engine.distributed``) every rank runs :func:`run`: rank 0 plans (lock, record,
checkpoint, world-size check) and hands the plan and the checkpoint to the other ranks; all ranks
train; only rank 0 writes the record, the checkpoint and the model, logs and prints.
"""

from __future__ import annotations

import random
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molabench.errors import one_line

if TYPE_CHECKING:
    from molabench.engine.checkpoint import CheckpointSchedule
    from molabench.engine.distributed import Distributed

def _count(params: Any) -> int:
    return sum(p.numel() for p in params)

def resolve_device(name: str) -> Any:
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

def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

_MAX_RECORDED_WARNINGS = 50

@contextmanager
def _warnings_into(record: dict[str, Any], quiet: bool = False) -> Iterator[None]:
    """Show each warning of a run (skipped images, an md5 mismatch, ...) as one ``warning:`` line
    and keep it in the record, so what a run silently worked around can be read back later.
    ``quiet``: keep them, print nothing (the ranks of a torchrun launch other than 0)."""
    kept: list[str] = record.setdefault("warnings", [])

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = str(message) if category is UserWarning else f"{category.__name__}: {message}"
        if not quiet:
            print(f"warning: {text}", file=sys.stderr)
        if len(kept) < _MAX_RECORDED_WARNINGS:
            kept.append(text)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield

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
            reason = one_line(str(exc)).split(". ")[0][:200] or type(exc).__name__
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

def _processes(n: int) -> str:
    return "one process" if n == 1 else f"{n} processes (torchrun)"


def _launch(n: int) -> str:
    return "one process (python -m molabench.train ...)" if n == 1 else f"torchrun --nproc_per_node={n} (or {n} processes in all)"


def _check_world_size(plan: str, state: Mapping[str, Any] | None, world: int, run_id: str, checkpoint: Path) -> None:
    """A run keeps its number of processes: ``trainer.batch_size`` is per process, so another number
    trains another global batch. Resuming or re-running a run with another one is a one-line error."""
    from molabench.errors import ConfigError

    if state is None:
        return
    if plan == "resume":
        saved = int(state.get("world_size") or 1)
        if saved != world:
            raise ConfigError(
                f"cannot resume run {run_id}: its checkpoint {checkpoint} was written by {_processes(saved)} and this launch "
                f"has {_processes(world)}, which would change the global batch (trainer.batch_size x processes) mid-run; "
                f"relaunch it with {_launch(saved)}, or set trainer.resume=never to train it afresh with {_processes(world)}"
            )
    elif plan == "skip":
        done = int((state.get("distributed") or {}).get("world_size") or 1)
        if done != world:
            raise ConfigError(
                f"run {run_id} is complete ({checkpoint.parent}), trained by {_processes(done)}; this launch has "
                f"{_processes(world)}, a different global batch (trainer.batch_size x processes): launch it with "
                f"{_launch(done)} to see it, or choose another run_id to train this one"
            )


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
    from molabench.engine import distributed
    from molabench.engine.checkpoint import (
        CHECKPOINT_NAME,
        RESUME_POLICIES,
        CheckpointSchedule,
        check_run_path,
        fingerprint,
    )
    from molabench.errors import ConfigError, MolabenchError
    from molabench.report.records import RECORD_NAME, read_record

    plain, cfg = cfg, ReadTracker(cfg, sources=sources)  # the run reads through the tracker; the record keeps the plain config
    method, seed = cfg["method"]["name"], int(cfg["seed"])
    check_protocol(cfg)
    group = distributed.setup(str(cfg.get("device", "auto")))  # torchrun: join the other ranks
    if group is None:
        resolve_device(str(cfg.get("device", "auto")))  # an impossible device fails before anything is written
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
    world = group.world_size if group is not None else 1
    lock = None
    try:
        plan, state, previous, error = "fresh", None, None, None
        if group is None or group.is_main:  # rank 0 plans and holds the run folder
            try:
                lock = _prepare_run_folder(results_dir, run_dir)
                for stale in run_dir.glob(".*.tmp"):  # half-written files of a process killed while writing (we hold the lock)
                    stale.unlink(missing_ok=True)
                previous = read_record(record_path)
                plan, state = _resume_plan(policy, previous, identity, checkpoint_path, run_id)
                _check_world_size(plan, state, world, run_id, checkpoint_path)
            except MolabenchError as exc:
                if group is None:
                    raise
                error = exc
        if group is not None:  # the other ranks: rank 0's plan, its checkpoint, or its error
            plan, state, previous, error = group.broadcast_object((plan, state, previous, error))
            if error is not None:
                raise error
        if plan == "skip":
            assert state is not None
            return {**state, "path": str(record_path), "skipped": True}
        return _train(
            cfg, plain, task_overrides, parallel_job, run_id=run_id, identity=identity, run_dir=run_dir, schedule=schedule,
            resume=state, previous=previous if plan == "resume" else None, group=group,
        )
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown()

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
    group: Distributed | None = None,
) -> dict[str, Any]:
    """Train (or resume, from ``resume``) the run of ``run_dir``, keeping its record up to date.
    ``cfg`` is ``plain`` read through a :class:`~molabench.config_reads.ReadTracker`: the keys the
    run never read are recorded (``config_unread``) and warned about. ``group``: train as one rank of
    a torchrun launch (only rank 0 writes and prints)."""
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
    main = group is None or group.is_main
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
    if group is not None:
        batch_size = int(cfg["trainer"]["batch_size"])
        record["distributed"] = {
            **group.describe(), "per_rank_batch_size": batch_size, "global_batch_size": batch_size * group.world_size,
            "gradient_reduction": "explicit all-reduce (sum) of every gradient; gradient methods: of the per-task gradient matrix",
        }
    if resume is not None:
        at = resume["position"]
        record["resumed_from"] = {"epoch": int(at["epoch"]), "step": int(at["step"]), "phase": at["phase"], "status": earlier.get("status")}
        from molabench.engine.checkpoint import code_version

        if resume.get("code") != code_version():  # an edit, a pull, another version: no longer bitwise the uninterrupted run
            record["resumed_from"].update(code_changed=True, code_before=resume.get("code"), code_now=code_version())
            main and print(
                f"warning: resuming run {run_id} with changed molabench code (checkpoint written by {resume.get('code') or 'an older version'}, "
                f"now {code_version()}): the result may differ from an uninterrupted run; use trainer.resume=never to start afresh",
                file=sys.stderr,
            )
    started = time.time()
    wall_before = float(earlier.get("wall_s") or 0.0) if resume is not None else 0.0
    with SignalGuard() as guard, _warnings_into(record, quiet=not main):

        def write_record() -> None:
            if not main:
                return  # rank 0 writes the record
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
        if resume is not None and main:
            at = record["resumed_from"]
            print(f"resuming run {run_id} at epoch {at['epoch'] + 1} ({at['phase']}, step {at['step']}) from {checkpoint_path}", file=sys.stderr)
        checkpoints = Checkpointer(checkpoint_path, schedule, identity, resume, on_progress)
        try:
            if cfg["trainer"].get("threads"):
                torch.set_num_threads(int(cfg["trainer"]["threads"]))
            elif parallel_job:
                torch.set_num_threads(1)  # parallel jobs share the cores: one thread each
            device = group.device if group is not None else resolve_device(str(cfg.get("device", "auto")))
            seed_everything(seed)
            if group is not None and group.local_rank != 0:
                group.barrier()  # the first rank of each machine prepares the data (downloads, caches) first
            data = build_data(cfg["data"])
            if group is not None and group.local_rank == 0:
                group.barrier()
            record["data"] = data.name
            record["tasks"] = [{"name": t.name, "column": t.display, "num_classes": t.num_classes, "kind": t.kind} for t in data.tasks]
            record["setting"] = data.setting
            seed_everything(seed)
            head = cfg.get("head")
            algorithm = build_algorithm(cfg["method"], cfg["backbone"], data, head, bn_stats=str(cfg["trainer"].get("bn_stats") or "batch"))
            hps_total = _count(build_architecture({"architecture": {"name": "hps"}}, cfg["backbone"], data, head).parameters())
            total = _count(algorithm.parameters())
            params = {"total": total, "trainable": _count(algorithm.trainable_parameters()), "added": total - hps_total, "hps_total": hps_total}
            params["penalties"] = _count(algorithm.penalties.parameters())
            params.update(algorithm.arch.param_counts())  # e.g. MoLA: adapter / router counts
            record["params"] = params
            if main:
                logger = build_logger(cfg["logger"], plain, run_id, str(run_dir))
            else:  # rank 0 logs
                from molabench.loggers import ConsoleLogger

                logger = ConsoleLogger(quiet=True)
            progress = cfg["trainer"].get("progress", "auto")
            show = sys.stderr.isatty() if progress == "auto" else bool(progress)
            result = fit(
                algorithm, data, cfg["trainer"], device, seed, logger, progress=show and not parallel_job and main,
                checkpoints=checkpoints, guard=guard, dist=group,
            )
            record.pop("progress", None)
            record.update(
                status="complete",
                metrics=result.metrics,
                history=result.history,
                selection={**result.selection, "epoch": result.selected_epoch},
                timing=result.timing,
                gradients=algorithm.describe(),  # gradient mode / paths and BatchNorm statistics in effect
            )
            if group is not None:
                record["distributed"].update(
                    sync_bn=algorithm.sync_bn, batchnorm=algorithm.batchnorm_statistics(), traffic=dict(group.traffic),
                )
            if result.notes:
                record["notes"] = result.notes
            record["summary"] = run_summary(record, Path(str(cfg["results_dir"])).expanduser() / "runs")
            final = result.metrics.get("test") or result.metrics.get("val") or {}
            logger.finish({**{f"final/{k}": v for k, v in _flat(final).items()}, "final/delta_m": record["summary"].get("delta_m")})
            if cfg["trainer"].get("checkpoint") and main:
                from molabench.atomic import atomic_write

                with guard.deferred():
                    atomic_write(run_dir / "model.pt", lambda tmp: torch.save(algorithm.state_dict(), tmp))
            record["config_unread"] = cfg.unread()
            if record["config_unread"] and main:
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
    if record["status"] == "complete" and main:
        checkpoint_path.unlink(missing_ok=True)  # the record is complete: the training state is no longer needed
    return record

def _flat(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{task}/{name}": value for task, values in metrics.items() for name, value in values.items() if name != "n"}
