"""The paper's question in minutes: ``make demo`` / ``python -m molabench.demo [overrides]``.

Trains, on the built-in ``shapes`` data (four questions about images from one distribution, a
multi-input task heterogeneity), the methods that show the conflict and its remedy —

- ``uniform``: one network, one head, no task id: the tasks' gradients conflict and it fails;
- ``hps``: a shared encoder with one head per task;
- ``mola_grad``: + one low-rank adapter per task, picked by task id (explicit gradient separation);
- ``mola_router``: + a router mixing the adapters per sample (no task id needed at test time)

— at a small budget, then prints one comparison table (per task, average, step time) beside the
full-budget averages of the committed records (``results/runs/builtin``), so a reader sees that
the small run shows the same ordering. Each run writes its record under
``results/runs/demo/``. Extra command-line overrides apply to every run (e.g. ``seed=1``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("uniform", "hps", "mola_grad", "mola_router")
#: the demo's budget: small images and sets, a few epochs — see README "Quick start" for its cost
BUDGET = (
    "data=shapes",
    "data.image_size=16",
    "data.n_train=450",
    "data.n_val=150",
    "data.n_test=300",
    "trainer.epochs=5",
    "trainer.batch_size=64",
    "experiment=demo",
)
#: relative step cost of each method (measured: results/bench and the built-in table's step ms)
RELATIVE_COST = {"uniform": 1.0, "hps": 1.0, "mola_grad": 1.35, "mola_router": 2.15}


def _compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from molabench.cli_checks import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)  # type: ignore[return-value]


def _full_budget_averages(results_dir: Path) -> dict[str, tuple[float, int]]:
    """Mean test Avg and seed count per method of the full-budget built-in runs, from the committed
    table (``results/tables/builtin__shapes_tasks__val.csv``, written by ``make tables``)."""
    import pandas as pd

    from molabench.config_path import config_dir

    name = Path("tables") / "builtin__shapes_tasks__val.csv"
    # the run's results folder, else the checkout's committed results next to configs/
    table = next((p for p in (results_dir / name, config_dir().parent / "results" / name) if p.is_file()), None)
    if table is None:
        return {}
    frame = pd.read_csv(table)
    return {str(row["method"]): (float(row["Avg"]), int(row["seeds"])) for _, row in frame.iterrows()}


def _table(records: list[dict[str, Any]], reference: dict[str, tuple[float, int]]) -> str:
    tasks = [t["name"] for t in records[0]["tasks"]]
    head = f"{'method':<13}" + "".join(f"{t:>10}" for t in tasks) + f"{'Avg':>9}{'step ms':>9}   full budget Avg"
    lines = [head, "-" * len(head)]
    for r in records:
        test = r["metrics"]["test"]
        ref = reference.get(r["method"])
        ref_text = f"{ref[0]:.2f} ({ref[1]} seeds)" if ref else "–"
        lines.append(
            f"{r['method']:<13}" + "".join(f"{test[t]['acc']:>10.2f}" for t in tasks)
            + f"{test['avg']['acc']:>9.2f}{1000 * r['timing']['step_s_median']:>9.0f}   {ref_text}"
        )
    ours = [r["method"] for r in sorted(records, key=lambda r: -r["metrics"]["test"]["avg"]["acc"])]
    lines.append("")
    lines.append("ordering here:        " + " > ".join(ours))
    known = [m for m in sorted(reference, key=lambda m: -reference[m][0]) if m in METHODS]
    if known:
        lines.append("full-budget ordering: " + " > ".join(known))
        lines.append(
            "(at this budget two methods closer than ~2 points can swap places from seed to seed; the full-budget "
            "runs separate them: see results/tables/builtin__shapes_tasks__val.md)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from molabench.errors import EXIT_USER_ERROR, MolabenchError
    from molabench.machine import matmul_gflops
    from molabench.run import run

    extra = list(sys.argv[1:] if argv is None else argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")  # a fresh run per demo: runs are otherwise resumed/skipped by identity
    records: list[dict[str, Any]] = []
    gflops = matmul_gflops(threads=None, repeats=10)
    started = time.perf_counter()
    unit: float | None = None  # seconds per unit of RELATIVE_COST, once measured
    print(f"molabench demo: {', '.join(METHODS)} on the built-in shapes data (small budget)", flush=True)
    for i, method in enumerate(METHODS):
        left = sum(RELATIVE_COST[m] for m in METHODS[i:])
        eta = f", about {unit * left:.0f} s left" if unit else ""
        print(f"[{i + 1}/{len(METHODS)}] training {method}{eta}", flush=True)
        overrides = [*BUDGET, f"method={method}", f"run_id={method}-{stamp}", "logger.quiet=true", *extra]
        try:
            cfg = _compose(overrides)
            t0 = time.perf_counter()
            records.append(run(cfg, overrides, parallel_job=False))
        except MolabenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        elapsed = time.perf_counter() - t0
        unit = elapsed / RELATIVE_COST[method] if unit is None else (unit + elapsed / RELATIVE_COST[method]) / 2
        print(f"      {method}: test Avg {records[-1]['metrics']['test']['avg']['acc']:.2f}% in {elapsed:.0f} s", flush=True)
    results_dir = Path(records[-1]["config"]["results_dir"])
    print()
    print(_table(records, _full_budget_averages(results_dir)))
    total = time.perf_counter() - started
    print(
        f"\ntotal {total:.0f} s on a machine with {gflops:.0f} GFLOP/s fp32 matmul "
        f"(about {total * gflops / 70:.0f} s at 70 GFLOP/s); records under {results_dir / 'runs' / 'demo'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
