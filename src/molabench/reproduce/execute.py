"""Run what a plan is missing, and say how long it will take.

Here (``launcher: null``) the runs happen one after another in this process, each exactly as
``python -m molabench.train <its overrides>`` would run it (the same :func:`molabench.run.run`):
a complete run is skipped, an interrupted or killed one resumes from its checkpoint, a failed one
is tried again. One line per run started and finished, with the time left; a failing run does not
stop the others. SIGTERM/SIGINT stop after the running run has checkpointed: the same command
continues.

With a Hydra launcher (``launcher=slurm`` ...) each table's runs are one multirun of
``python -m molabench.train -m`` — the table's sweep at this budget — submitted through that
launcher; complete runs are skipped by the jobs themselves.

Time estimates (:func:`estimate_s`): the wall time of complete runs of the same data and method at
this budget, else of the same data (scaled by the method's relative step cost), else the budget's
``estimate_s`` for the data (seconds on a machine of ``estimate_gflops`` GFLOP/s, scaled by this
machine's measured matmul speed). A budget with ``estimate: flops`` (``paper``) prices every run by
its training FLOPs instead (:mod:`molabench.reproduce.estimate`: on one GPU of an assumed speed, and
on this machine as its bench measured it), also the runs whose data is absent ("with its data").
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from molabench.reproduce.plan import Plan, PlannedRun, refresh

#: step cost relative to HPS (results/bench/architectures.json, weighting_step.json; rounded)
RELATIVE_COST = {
    "mola_router": 2.0, "mola_grad": 1.35, "cross_stitch": 2.5, "mmoe": 2.5, "cgc": 2.0, "ple": 2.5, "dselect_k": 2.5,
    "ltb": 2.5, "mtan": 1.5, "single_task": 1.0, "uniform": 1.0, "hps": 1.0,
}
TODO = ("to do", "failed", "interrupted", "running")


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else (f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s")


def _wall(run: PlannedRun) -> float | None:
    record = run.record or {}
    wall = record.get("wall_s")
    return float(wall) if record.get("status") == "complete" and isinstance(wall, (int, float)) else None


def flops_estimate_s(run: PlannedRun, plan: Plan, gflops: float | None, paper_data: bool = False) -> tuple[float, float | None] | None:
    """(GPU seconds, seconds on this machine) of a run of a budget with ``estimate: flops``, from its
    training FLOPs (:mod:`molabench.reproduce.estimate`) over the images of the data it runs on (the
    table's own dataset with ``paper_data``); None without an image count, a size or a configuration."""
    from molabench.reproduce import estimate

    budget = dict(plan.budget)
    config = (run.paper_config if run.choice.stand_in else run.config) if paper_data else run.config
    if budget.get("estimate") != "flops" or not config:
        return None
    images = estimate.images_per_epoch(budget, run.choice.paper_data if paper_data else run.choice.data, dict(config.get("data") or {}))
    if images is None:
        return None
    gflop = estimate.training_gflops(config, images, RELATIVE_COST.get(run.method, 1.5), budget.get("image_shape"))
    if gflop is None:
        return None
    here = estimate.cpu_seconds(gflop, plan.results_dir / "bench" / "architectures.json", gflops)
    return estimate.gpu_seconds(gflop, float(plan.budget.get("gpu_tflops") or 25.0)), here


def _with_data_key(run: PlannedRun) -> str:
    """The identity the run would have with the table's own data (its configuration's fingerprint)."""
    from molabench.engine.checkpoint import fingerprint

    if run.choice.stand_in:
        return fingerprint(run.paper_config) if run.paper_config else run.key
    return run.identity or run.key


def estimate_s(run: PlannedRun, plan: Plan, gflops: float | None) -> float:
    """Expected seconds for ``run`` (see the module's docstring)."""
    flops = flops_estimate_s(run, plan, gflops)
    if flops is not None:
        return flops[0]
    cost = RELATIVE_COST.get(run.method, 1.5)
    same = [w for r in plan.unique() if r.choice.data == run.choice.data and (w := _wall(r)) is not None]
    exact = [_wall(r) for r in plan.unique() if r.choice.data == run.choice.data and r.method == run.method and _wall(r) is not None]
    if exact:
        return statistics.median(exact)  # type: ignore[type-var]
    if same:
        costs = [RELATIVE_COST.get(r.method, 1.5) for r in plan.unique() if r.choice.data == run.choice.data and _wall(r) is not None]
        return statistics.median(same) / statistics.median(costs) * cost
    table = plan.budget.get("estimate_s") or {}
    base = float(table.get(run.choice.data, table.get("default", 60)))
    reference = plan.budget.get("estimate_gflops")
    scale = float(reference) / gflops if reference and gflops else 1.0
    return base * cost * scale


def to_do(plan: Plan) -> list[PlannedRun]:
    return [r for r in plan.unique() if r.status in TODO]


def print_plan(plan: Plan, gflops: float | None, out: Callable[[str], None] = print) -> float:
    """The plan per table (rows x seeds, complete, failed, to do, estimate) and in total; returns the
    total estimated seconds of what is to do."""
    out(f"reproduce budget={plan.budget['name']}: tables {', '.join(map(str, plan.tables))}; seeds {list(plan.budget['seeds'])}; "
        f"results under {plan.results_dir}")
    out(f"{'table':<7}{'data':<40}{'runs':>6}{'complete':>10}{'failed':>8}{'to do':>7}{'estimate':>10}")
    counted: set[str] = set()
    with_data: set[str] = set()
    total = 0.0
    for number in plan.tables:
        runs = plan.of_table(number)
        data = ", ".join(sorted({r.choice.data + (" (stand-in)" if r.choice.stand_in else "") for r in runs}))
        nodata = [r for r in runs if r.status in ("no data", "invalid")]
        pending = [r for r in runs if r.status in TODO]
        new = []
        for r in pending:
            if r.key not in counted:
                counted.add(r.key)
                new.append(r)
        seconds = sum(estimate_s(r, plan, gflops) for r in new)
        total += seconds
        shared = f" ({len(pending) - len(new)} shared with an earlier table)" if len(pending) > len(new) else ""
        out(f"{number:<7}{data[:39]:<40}{len(runs):>6}{sum(r.status == 'complete' for r in runs):>10}"
            f"{sum(r.status == 'failed' for r in runs):>8}{len(pending):>7}{duration(seconds):>10}{shared}")
        for r in nodata[:1]:
            out(f"       {len(nodata)} run(s) cannot run: {r.error}")
        if plan.budget.get("estimate") == "flops":
            # one per distinct run with the table's own data (a stand-in may merge what the paper's data keeps apart)
            fresh = {k: r for r in runs if (k := _with_data_key(r)) not in with_data}
            priced = [p for r in fresh.values() if (p := flops_estimate_s(r, plan, gflops, paper_data=True)) is not None]
            with_data.update(fresh)
            if priced:
                here = [h for _, h in priced if h is not None]
                out(f"       with its data: {len(priced)} new run(s), about {duration(sum(g for g, _ in priced))} on one GPU"
                    + (f", {duration(sum(here))} on this machine" if len(here) == len(priced) else ""))
    unique = plan.unique()
    speed = f" at {gflops:.0f} GFLOP/s" if gflops else ""
    out(f"distinct runs: {len(unique)} ({sum(r.status == 'complete' for r in unique)} complete, {len(to_do(plan))} to do); "
        f"estimated {duration(total)}{speed}")
    if plan.budget.get("estimate") == "flops":
        out(f"budget {plan.budget['name']}: estimates, not measurements: training FLOPs (backbone forward counted on this "
            f"configuration, x3 for training, x the method's cost) at an assumed {plan.budget.get('gpu_tflops') or 25.0:g} "
            "effective TFLOP/s on one GPU, and at this machine's speed as results/bench/architectures.json measured it "
            "(molabench/reproduce/estimate.py)")
    return total


def run_here(plan: Plan, gflops: float | None, out: Callable[[str], None] = print) -> dict[str, int]:
    """Run every missing run of the plan in this process; returns counts by outcome. Raises
    :class:`~molabench.engine.checkpoint.Interrupted` on SIGTERM/SIGINT (after the run checkpointed)."""
    from molabench.errors import MolabenchError, one_line
    from molabench.run import run as train_one

    pending = to_do(plan)
    counts = {"complete": 0, "failed": 0}
    left = sum(estimate_s(r, plan, gflops) for r in pending)
    started = time.perf_counter()
    for i, planned in enumerate(pending, start=1):
        tag = f"[{i}/{len(pending)}] table {planned.table}: {planned.describe()}"
        out(f"{tag} — starting ({'resuming' if planned.status in ('interrupted', 'running') else 'new'}; about {duration(left)} left)")
        t0 = time.perf_counter()
        try:
            record = train_one(dict(planned.config), list(planned.overrides), parallel_job=False, sources=planned.sources)
        except MolabenchError as exc:
            counts["failed"] += 1
            out(f"{tag} — failed: {one_line(str(exc))}")
        except Exception as exc:  # a bug in one run must not stop the others; its record says failed
            counts["failed"] += 1
            out(f"{tag} — failed: {one_line(f'{type(exc).__name__}: {exc}')}")
        else:
            counts["complete"] += 1
            out(f"{tag} — complete in {duration(time.perf_counter() - t0)}{_headline(record)}")
        refresh(plan)
        later = {r.key for r in pending[i:]}
        left = sum(estimate_s(r, plan, gflops) for r in plan.unique() if r.key in later)
    counts["seconds"] = int(time.perf_counter() - started)
    return counts


def _headline(record: Mapping[str, Any]) -> str:
    metrics = (record.get("metrics") or {}).get("test") or (record.get("metrics") or {}).get("val") or {}
    acc = (metrics.get("avg") or {}).get("acc")
    return f": Avg accuracy {acc:.2f}" if isinstance(acc, (int, float)) else ""


def launcher_commands(plan: Plan, launcher: str, extra: Sequence[str]) -> list[list[str]]:
    """One ``python -m molabench.train -m ...`` per table with runs to do: the table's sweep at this
    budget (each key's values as a comma list, seeds included), through ``hydra/launcher=<launcher>``."""
    commands = []
    for number in plan.tables:
        runs = [r for r in plan.of_table(number) if r.status in TODO]
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[PlannedRun]] = {}
        for r in runs:  # runs that differ only in the values of the same sweep keys and seed share one multirun
            keys = tuple(p.split("=", 1)[0] for p in r.params)
            fixed = tuple(o for o in r.overrides if o.split("=", 1)[0] not in {*keys, "seed"})
            groups.setdefault((fixed, keys), []).append(r)
        for (fixed, _), members in groups.items():
            keys = list(dict.fromkeys(p.split("=", 1)[0] for r in members for p in r.params))
            swept = []
            for key in [*keys, "seed"]:
                values = list(dict.fromkeys(o.split("=", 1)[1] for r in members for o in r.overrides if o.split("=", 1)[0] == key))
                swept.append(f"{key}={','.join(values)}")
            commands.append([sys.executable, "-m", "molabench.train", "-m", *fixed, *swept, f"hydra/launcher={launcher}", *extra])
    return commands


def run_with_launcher(plan: Plan, launcher: str, extra: Sequence[str], out: Callable[[str], None] = print) -> dict[str, int]:
    counts = {"complete": 0, "failed": 0}
    for command in launcher_commands(plan, launcher, extra):
        out("submitting: " + " ".join(command[2:]))
        code = subprocess.call(command)
        if code != 0:
            out(f"the multirun ended with exit code {code} (its summary above names the failed jobs)")
    refresh(plan)
    for r in plan.unique():
        counts["complete"] += r.status == "complete"
        counts["failed"] += r.status == "failed"
    return counts
