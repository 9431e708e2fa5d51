"""Entry point: ``python -m molabench.train method=<name> data=<name> [overrides]``.

Hydra composes ``data``, ``backbone``, ``method``, ``trainer`` and ``logger`` (see
``configs/``); ``-m`` sweeps any of them. Each run trains one algorithm and writes one
record (``molabench.report.records``). User errors end with one ``error:`` line and exit
code 2; the run's record then says ``failed``.

``torchrun --nproc_per_node=N -m molabench.train ...`` trains one run on N processes (data parallel,
``molabench.engine.distributed``, docs/cluster.md); only rank 0 prints and writes.

Runs are resumable (``docs/long_runs.md``): a run's id comes from its configuration, so the
same command finds the run again and, by ``trainer.resume``, skips it when complete or resumes
it from its checkpoint. SIGTERM/SIGINT checkpoint and exit with 128 + the signal. A multirun
ends with a summary of its jobs (complete, skipped, failed with their errors, interrupted) and
a non-zero exit when one failed, with either launcher; a failing job never stops the others.
"""

from __future__ import annotations

import sys
from typing import Any

from molabench.cli_checks import (
    CONFIG_DIR,
    GROUPS,
    NO_JOB_OPTIONS,
    add_override,
    check_group_choices,
    check_overrides,
)
from molabench.engine.distributed import env_world_size, is_main_process
from molabench.errors import EXIT_USER_ERROR, one_line
from molabench.report.console import print_summary
from molabench.run import check_protocol, run
from molabench.sweep import (
    STOP,
    SWEEP_ENV,
    ParentSignals,
    jobs_folder,
    report_job,
    sweep_log,
    sweep_summary,
)

__all__ = ["CONFIG_DIR", "EXIT_USER_ERROR", "GROUPS", "check_protocol", "main", "run"]


def _task(cfg: Any) -> None:
    """Hydra's task: one run. In a multirun every outcome is reported as the job's status (see
    :func:`sweep_summary`) and nothing is raised, so a failing job never stops the others; a
    SIGTERM/SIGINT stops the sweep after the running jobs have checkpointed."""
    import signal
    import traceback

    from hydra.core.hydra_config import HydraConfig

    from molabench.config_reads import resolved_with_sources
    from molabench.engine.checkpoint import Interrupted, received_signal, submitit_signal
    from molabench.errors import MolabenchError

    hydra_cfg = HydraConfig.get()
    parallel = "joblib" in str(hydra_cfg.launcher.get("_target_", ""))
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    num = int(hydra_cfg.job.get("num") or 0)
    job = " ".join(hydra_cfg.overrides.task)
    log = sweep_log() if multirun else None
    report = (lambda **fields: report_job(num, overrides=job, **fields)) if log is not None else (lambda **fields: None)
    if log is not None and ((log / STOP).exists() or received_signal() is not None):
        report(status="not started", error="the sweep was interrupted before this job")
        return
    report(status="running")
    try:
        resolved, sources = resolved_with_sources(cfg)
    except Exception as exc:  # omegaconf raises several unrelated types for bad interpolations
        message = one_line(f"invalid configuration: {exc}")
        is_main_process() and print(f"error: {message}", file=sys.stderr)
        report(status="failed", error=message)
        if not multirun:
            raise SystemExit(EXIT_USER_ERROR) from None
        return
    try:
        record = run(resolved, list(hydra_cfg.overrides.task), parallel, sources=sources)
    except Interrupted as exc:
        if exc.signum == submitit_signal():  # preempted or out of time: submitit requeues the job, which resumes
            is_main_process() and print(f"interrupted ({exc}): the checkpoint and the record are saved; submitit requeues the job", file=sys.stderr)
            report(status="interrupted", error=f"{exc}; requeued", signal=exc.signum)
            signal.raise_signal(exc.signum)  # submitit's handler (restored by the run's guard): requeue, exit
            raise SystemExit(exc.exit_code) from None  # submitit did not take it over
        if is_main_process():
            print(f"interrupted ({exc}): the checkpoint and the record are saved; run the same command again to resume", file=sys.stderr)
        report(status="interrupted", error=str(exc), signal=exc.signum)
        if log is not None:
            (log / STOP).touch()
            return
        raise SystemExit(exc.exit_code) from None
    except MolabenchError as exc:
        _say_error(exc)
        report(status="failed", error=one_line(str(exc)), user_error=True)
        if not multirun:
            raise SystemExit(EXIT_USER_ERROR) from None
        return
    except Exception as exc:  # a bug: its traceback, and in a sweep the other jobs still run
        if not multirun:
            raise
        traceback.print_exc()
        report(status="failed", error=one_line(f"{type(exc).__name__}: {exc}"))
        return
    main = is_main_process()  # torchrun: rank 0 prints
    if record.get("skipped"):
        main and print(f"run {record['run_id']} is already complete ({record['path']}); nothing to do", file=sys.stderr)
        report(status="skipped", run_id=record["run_id"], record=record["path"])
        if not parallel and not multirun and main:
            print_summary(record)
        return
    report(status="complete", run_id=record["run_id"], record=record["path"])
    if not parallel and main:
        print_summary(record)


def _say_error(exc: Exception) -> None:
    """The one ``error:`` line of a user error. Under torchrun rank 0 says it: configuration errors and
    diverged training are the same on every rank; another rank says only what may be its own (data)."""
    from molabench.errors import ConfigError, TrainingError

    if is_main_process():
        print(f"error: {exc}", file=sys.stderr)
    elif not isinstance(exc, ConfigError | TrainingError):
        from molabench.engine.distributed import env_rank

        print(f"error: (rank {env_rank()}) {exc}", file=sys.stderr)


def main() -> None:
    import os
    import shutil

    from molabench.engine.checkpoint import Interrupted, received_signal
    from molabench.errors import MolabenchError

    runs_jobs = not any(arg in NO_JOB_OPTIONS or arg.startswith(("--cfg", "-c=", "--info=", "--shell-completion")) for arg in sys.argv[1:])
    results_dir = None
    try:
        modes = [a for a in sys.argv[1:] if a in ("-m", "--multirun", "--run", "-r", "--info", "-i", "--shell-completion", "-sc", "-c") or a.startswith("--cfg")]
        if len({m.split("=")[0] for m in modes}) > 1:
            raise MolabenchError(f"{' and '.join(modes)} cannot be combined: Hydra takes one of --run, --multirun, --cfg, --info at a time")
        check_group_choices(sys.argv[1:])
        if runs_jobs:
            results_dir = check_overrides(sys.argv[1:])
        if env_world_size() > 1 and any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
            raise MolabenchError(
                "torchrun trains one run on several processes: drop -m/--multirun (sweep with one launch per run, "
                "or use a Hydra launcher for one-process jobs)"
            )
    except MolabenchError as exc:
        if is_main_process():
            print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None

    import hydra

    multirun = any(arg in ("-m", "--multirun") for arg in sys.argv[1:])
    folder = jobs_folder(results_dir if multirun else None)
    os.environ[SWEEP_ENV] = str(folder)
    if runs_jobs:
        # Each job reads the folder from its own environment, set by Hydra in the job's process: a
        # launcher's reused worker (joblib's loky pool) would otherwise keep an earlier command's folder.
        add_override(sys.argv, f"++hydra.job.env_set.{SWEEP_ENV}={folder}")
    code: int | str | None = 0
    try:
        with ParentSignals(folder):
            try:
                hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(_task)()
            except SystemExit as exc:
                code = exc.code
            except Interrupted as exc:
                is_main_process() and print(f"interrupted ({exc})", file=sys.stderr)
                code = exc.exit_code
        sweep_code = sweep_summary(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    signum = received_signal()
    if code in (0, None):
        code = sweep_code or (128 + signum if signum is not None else 0)
    if code not in (0, None):
        raise SystemExit(code)


if __name__ == "__main__":
    main()
