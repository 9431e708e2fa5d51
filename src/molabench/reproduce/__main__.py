"""``python -m molabench.reproduce [budget=smoke|cpu|paper] [tables=[2,4,5]] [dry_run=true] [launcher=slurm]``.

Plans (and prints the plan), runs what is missing, writes the tables, figures and report; see
:mod:`molabench.reproduce`. Exit 0 when every planned run is complete, 1 when a run failed or is
still to do, 2 on a configuration error, 128 + the signal when interrupted (re-run to continue).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any


def settings(overrides: list[str]) -> dict[str, Any]:
    """``configs/reproduce/config.yaml`` composed with ``overrides`` (a one-line ConfigError when they are wrong)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from molabench.config_path import config_dir
    from molabench.errors import ConfigError, one_line

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir() / "reproduce"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
            out = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # Hydra's and omegaconf's several error types: one line
        raise ConfigError(one_line(f"make reproduce: {exc}") + " (options: budget=smoke|cpu|paper tables=[1,...,11] dry_run=true launcher=<hydra launcher>)") from None
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(out, dict)
    if not isinstance(out["tables"], list) or not all(isinstance(t, int) for t in out["tables"]):
        raise ConfigError(f"tables must be a list of table numbers, e.g. tables=[2,4,5]; got {out['tables']!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    from molabench.config_path import config_dir
    from molabench.engine.checkpoint import Interrupted
    from molabench.errors import EXIT_USER_ERROR, MolabenchError
    from molabench.machine import matmul_gflops
    from molabench.reproduce import execute, outputs
    from molabench.reproduce import plan as planning

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        options = settings(args)
        gflops = matmul_gflops(threads=None, repeats=5)
        plan = planning.make_plan(options, config_dir())
        planning.check_data_roots(plan)
        execute.print_plan(plan, gflops)
        if options["dry_run"]:
            return 0
        planning.save_plan(plan)
        budget = str(plan.budget["name"])
        interrupted: Interrupted | None = None
        try:
            if options["launcher"]:
                counts = execute.run_with_launcher(plan, str(options["launcher"]), list(options["launcher_overrides"] or []))
            else:
                counts = execute.run_here(plan, gflops)
        except Interrupted as exc:
            interrupted = exc
            planning.refresh(plan)
            counts = {}
        except KeyboardInterrupt:  # Ctrl-C between two runs (during a run the trainer checkpoints first)
            interrupted = Interrupted(signal.SIGINT)
            planning.refresh(plan)
            counts = {}
        outputs.write_outputs(Path(str(options["results_dir"])), budget, plan.tables, figures=bool(options["figures"]),
                              report=bool(options["report"]))
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    unique = plan.unique()
    done = sum(r.status == "complete" for r in unique)
    failed = [r for r in unique if r.status == "failed"]
    left = [r for r in unique if r.status in execute.TODO and r.status != "failed"]
    ran = f" in {execute.duration(counts['seconds'])}" if counts.get("seconds") else ""
    print(f"reproduce summary: {len(unique)} distinct run(s): {done} complete, {len(failed)} failed, {len(left)} to do{ran}")
    for r in failed[:20]:
        print(f"  failed: table {r.table}: {r.describe()}: {r.error}")
    if interrupted is not None:
        print(f"interrupted ({interrupted}): the running run checkpointed; run the same command again to continue", file=sys.stderr)
        return interrupted.exit_code
    return 1 if failed or left else 0


if __name__ == "__main__":
    raise SystemExit(main())
