"""Every run the paper's tables need at a budget, and which of them are already done.

A table's runs are its sweep (``configs/sweep/<table name>.yaml``: the defaults it overrides and
its ``hydra.sweeper.params``, expanded with Hydra's own override parser), plus the rows the paper
prints from another table (Table 6's Single-Task and Uniform rows, Table 7's "Without MoLA" and its
Δm baseline), times the budget's seeds. Each run's command-line overrides are

    +sweep=<table> <the sweep's choices> seed=<s> [data=<stand-in> ...] <budget overrides>
    <budget overrides for the data it uses> experiment=reproduce/<budget>/<data>

so that a run is the same run in every table that needs it (Tables 2 and 3 on the PACS stand-in,
Table 7's HPS row and Table 5's): the experiment names the budget and the data, not the table, and
the run's id comes from its resolved configuration (``molabench.engine.checkpoint.fingerprint``) as
for any ``python -m molabench.train`` run. Whether a run is done is read from its record.

Data: a table names its dataset (the sweep's ``override /data`` or its ``data`` parameter). When
that dataset is not at its configured root the table runs on the stand-in of
``configs/reproduce/config.yaml`` (``stand_ins``; a budget may name its own: ``budget=smoke`` uses the built-in data) and says so.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molabench.errors import ConfigError, DataError

#: The analysis figures (Figs 3, 4, 6) are drawn from the first seed's runs of these methods on the
#: domain tables' data: those runs keep their weights (``trainer.checkpoint=true``, not part of a run's identity).
FIGURE_METHODS = ("hps", "mola_grad", "mola_router")
FIGURE_DATA = ("vlcs", "officehome")
#: The Δm% baseline (Tables 5 and 7): planned even where the paper prints no row for it.
BASELINE = "single_task"
#: Built-in datasets: always present.
BUILT_IN = ("shapes", "shapes_domains", "scenes")


@dataclass(frozen=True)
class TableSpec:
    """Paper table ``number``: its name (``molabench/paper_tables/<name>.csv``, ``configs/sweep/<name>.yaml``)
    and the runs it shows that its sweep does not hold (each an override list, crossed with the seeds)."""

    number: int
    name: str
    extra: tuple[tuple[str, ...], ...] = ()
    #: runs for the analysis figures only (first seed, weights kept, no paper row)
    figures: tuple[tuple[str, ...], ...] = ()


TABLES: dict[int, TableSpec] = {
    spec.number: spec
    for spec in (
        TableSpec(1, "table1_radimagenet"),
        # Fig. 6 sets the router of MoLA-Router without the TwD loss beside the one with it.
        TableSpec(2, "table2_vlcs", figures=(("method=mola_router", "method.twd=false"),)),
        TableSpec(3, "table3_officehome"),
        TableSpec(4, "table4_medmnist"),
        TableSpec(5, "table5_nyuv2"),
        # Table 6 repeats Table 2's Single-Task and Uniform rows above its rank variants.
        TableSpec(6, "table6_rank_vlcs", extra=(("method=single_task",), ("method=uniform",))),
        # Table 7's "Without MoLA" is Table 5's HPS row; Δm% needs the Single-Task baseline.
        TableSpec(7, "table7_placement_nyuv2", extra=(("method=hps",), ("method=single_task",))),
        TableSpec(8, "table8_backbone"),
        TableSpec(9, "table9_router_sharing"),
        TableSpec(10, "table10_omega_dim"),
        TableSpec(11, "table11_experts"),
    )
}


@dataclass(frozen=True)
class DataChoice:
    """What a table's dataset ``paper_data`` runs on: ``data`` with ``overrides``; ``stand_in`` says
    in words what stands in for what (None: the real dataset), ``missing`` why nothing can run."""

    paper_data: str
    data: str
    overrides: tuple[str, ...] = ()
    stand_in: str | None = None
    missing: str | None = None


@dataclass
class PlannedRun:
    """One run of one table (the same run may serve several tables: same ``key``)."""

    table: int
    params: tuple[str, ...]  # the sweep's choices for this run, seed excluded (e.g. method=hps)
    seed: int
    choice: DataChoice
    overrides: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    identity: str = ""
    run_id: str = ""
    record_path: Path | None = None
    status: str = "to do"  # complete | failed | interrupted | running | to do | no data | invalid
    error: str | None = None
    record: dict[str, Any] | None = None
    labels: list[str] = field(default_factory=list)  # the paper's row label(s) this run gives
    figure: bool = False  # a run for the analysis figures only (TableSpec.figures): no paper row
    #: a stand-in run's configuration with the table's own dataset instead (``estimate: flops`` budgets:
    #: what the run would cost with its data); None otherwise
    paper_config: dict[str, Any] | None = None
    #: interpolation target -> sources of ``config`` (what the run's read tracker needs; not saved)
    sources: dict[str, list[str]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.record_path) if self.record_path else f"{self.table}:{self.params}:{self.seed}"

    @property
    def method(self) -> str:
        return str((self.config.get("method") or {}).get("name") or _param(self.params, "method") or "?")

    def describe(self) -> str:
        variant = " ".join(p for p in self.params if not p.startswith("method="))
        return f"{self.method}{' ' + variant if variant else ''} seed {self.seed} on {self.choice.data}"


@dataclass
class Plan:
    budget: dict[str, Any]
    results_dir: Path
    tables: list[int]
    runs: list[PlannedRun]
    choices: dict[int, list[DataChoice]]

    def unique(self) -> list[PlannedRun]:
        """One planned run per distinct run (tables share runs), in plan order."""
        seen: dict[str, PlannedRun] = {}
        for run in self.runs:
            seen.setdefault(run.key, run)
        return list(seen.values())

    def of_table(self, number: int) -> list[PlannedRun]:
        return [r for r in self.runs if r.table == number]


# -- the tables' sweeps --------------------------------------------------------------------------


def _param(params: Sequence[str], key: str) -> str | None:
    for p in params:
        if p.split("=", 1)[0] == key:
            return p.split("=", 1)[1]
    return None


def sweep_grid(config_dir: Path, name: str) -> tuple[dict[str, str], list[tuple[str, ...]]]:
    """The sweep ``name``'s overridden defaults (``{"data": "vlcs", ...}``) and its parameter grid
    without seeds: every combination of ``hydra.sweeper.params`` as override lists, in sweep order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = config_dir / "sweep" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"the sweep of {name} ({path}) is missing; reinstall molabench")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(cfg, dict)
    defaults: dict[str, str] = {}
    for entry in cfg.get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                defaults[str(key).removeprefix("override ").lstrip("/")] = str(value)
    params = ((cfg.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    parser = OverridesParser.create()
    axes: list[list[str]] = []
    for key, value in params.items():
        if key == "seed":
            continue
        override = parser.parse_overrides([f"{key}={value}"])[0]
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        axes.append([f"{key}={v}" for v in values])
    return defaults, [tuple(combo) for combo in itertools.product(*axes)]


# -- data: real or stand-in ----------------------------------------------------------------------


class Composer:
    """``compose(overrides)``: the resolved run configuration (``configs/config.yaml``) as a dict;
    :meth:`with_sources` also gives its interpolation sources, which the run's read tracker needs
    (``method.rank`` counts as read through ``method.architecture.rank: ${..rank}``)."""

    def _compose(self, overrides: Sequence[str]) -> Any:
        from hydra import compose

        return compose(config_name="config", overrides=list(overrides))

    def __call__(self, overrides: Sequence[str]) -> dict[str, Any]:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(self._compose(overrides), resolve=True)  # type: ignore[return-value]

    def with_sources(self, overrides: Sequence[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
        from molabench.config_reads import resolved_with_sources

        return resolved_with_sources(self._compose(overrides))


@contextmanager
def composer(config_dir: Path) -> Iterator[Composer]:
    """A :class:`Composer` over ``config_dir`` (Hydra initialised for the duration)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        yield Composer()


def present_tasks(data_cfg: Mapping[str, Any]) -> list[str] | None:
    """The tasks of a task-per-file dataset (MedMNIST) whose file is at its root; None for other datasets."""
    if data_cfg.get("name") != "medmnist":
        return None
    root = Path(str(data_cfg["root"])).expanduser()
    size = int(data_cfg.get("image_size") or 28)
    return [t for t in data_cfg["tasks"] if (root / f"{t}.npz").is_file() or (root / f"{t}_{size}.npz").is_file()]


def is_present(data_cfg: Mapping[str, Any]) -> bool:
    """Whether a dataset is at its configured root: built-in data always; MedMNIST when all its task
    files are there; a folder dataset when its root is a folder with something in it."""
    name = str(data_cfg.get("name"))
    if name in BUILT_IN:
        return True
    tasks = present_tasks(data_cfg)
    if tasks is not None:
        return len(tasks) == len(data_cfg["tasks"])
    root = Path(str(data_cfg.get("root") or "")).expanduser()
    return root.is_dir() and any(root.iterdir())


def choose_data(paper_data: str, budget: Mapping[str, Any], stand_ins: Mapping[str, Any], compose: Any) -> DataChoice:
    """The data a table's dataset ``paper_data`` runs on at this budget (see the module's docstring)."""
    stand_ins = {**stand_ins, **(budget.get("stand_ins") or {})}
    real = compose([f"data={paper_data}"])["data"]
    if is_present(real):
        return DataChoice(paper_data, paper_data)
    spec = stand_ins.get(paper_data)
    where = f"{paper_data} is not at {real.get('root')} (set data.root or MOLABENCH_DATA=<folder of datasets>)"
    if not spec:
        return DataChoice(paper_data, paper_data, missing=where)
    data = str(spec["data"])
    cfg = compose([f"data={data}"])["data"]
    overrides: list[str] = []
    if spec.get("tasks") == "present":
        tasks = present_tasks(cfg) or []
        if not tasks:
            return DataChoice(paper_data, data, missing=f"{where}, and no {data} task file is at {cfg.get('root')}")
        overrides.append(f"data.tasks=[{','.join(tasks)}]")
        note = f"{spec.get('note') or data} ({len(tasks)} of {len(cfg['tasks'])}: {', '.join(tasks)})"
    else:
        if not is_present(cfg):
            return DataChoice(paper_data, data, missing=f"{where}, nor its stand-in {data} at {cfg.get('root')}")
        note = str(spec.get("note") or f"{data} stands in for {paper_data}")
    return DataChoice(paper_data, data, tuple(overrides), stand_in=f"{note}; {where}")


# -- the plan ------------------------------------------------------------------------------------


def _substitute(params: Sequence[str], substitute: Mapping[str, Mapping[str, str]]) -> list[str]:
    out = []
    for p in params:
        key, _, value = p.partition("=")
        out.append(f"{key}={(substitute.get(key) or {}).get(value, value)}")
    return out


def make_plan(settings: Mapping[str, Any], config_dir: Path) -> Plan:
    """Every run of ``settings["tables"]`` at ``settings["budget"]``, with its status."""
    from molabench.engine.checkpoint import check_run_path, fingerprint
    from molabench.report.paper import load_table
    from molabench.report.records import RECORD_NAME

    budget = settings["budget"]
    numbers = [int(n) for n in settings["tables"]]
    unknown = [n for n in numbers if n not in TABLES]
    if unknown or not numbers:
        raise ConfigError(f"tables must list paper tables among 1..11, got {list(settings['tables'])}")
    seeds = [int(s) for s in budget["seeds"]]
    results_dir = Path(str(settings["results_dir"])).expanduser()
    substitute = budget.get("substitute") or {}
    per_data = budget.get("data") or {}
    plan = Plan(dict(budget), results_dir, numbers, [], {})
    with composer(config_dir) as compose:
        choices: dict[str, DataChoice] = {}
        for number in numbers:
            spec = TABLES[number]
            defaults, grid = sweep_grid(config_dir, spec.name)
            paper = load_table(spec.name)
            paper_rows, has_delta = set(paper.rows), "delta_m" in paper.columns
            table_seeds = [int(s) for s in (budget.get("table_seeds") or {}).get(number, seeds)]
            table_runs = [(tuple(_substitute(params, substitute)), seed, False) for params in grid + list(spec.extra) for seed in table_seeds]
            table_runs += [(tuple(_substitute(params, substitute)), table_seeds[0], True) for params in spec.figures]
            used: list[DataChoice] = []
            for params, seed, figure in table_runs:
                paper_data = _param(params, "data") or defaults.get("data")
                if paper_data is None:
                    raise ConfigError(f"the sweep {spec.name} names no dataset")
                if paper_data not in choices:
                    choices[paper_data] = choose_data(paper_data, budget, settings.get("stand_ins") or {}, compose)
                choice = choices[paper_data]
                if choice not in used:
                    used.append(choice)
                run = PlannedRun(number, params, seed, choice, figure=figure)
                plan.runs.append(run)
                overrides = [f"+sweep={spec.name}", *(p for p in params if not p.startswith("data=")), f"data={choice.data}", *choice.overrides, f"seed={seed}"]
                swept = {p.split("=", 1)[0] for p in params}  # a table's own choice (Table 8's backbone) beats the budget's
                overrides += [o for o in [*(budget.get("overrides") or []), *(per_data.get(choice.data) or [])] if o.split("=", 1)[0] not in swept]
                if figure or (seed == seeds[0] and paper_data in FIGURE_DATA and _param(params, "method") in FIGURE_METHODS
                              and not any(p.startswith("method.") for p in params)):
                    overrides.append("trainer.checkpoint=true")  # model.pt for the analysis figures (Figs 3, 4, 6)
                overrides.append(f"experiment=reproduce/{budget['name']}/{choice.data}")
                overrides.append(f"results_dir={results_dir}")
                run.overrides = tuple(overrides)
                try:
                    run.config, run.sources = compose.with_sources(overrides)
                except Exception as exc:  # a sweep value this budget cannot compose: the row says why
                    from molabench.errors import one_line

                    run.status, run.error = ("no data", choice.missing) if choice.missing else ("invalid", one_line(f"{type(exc).__name__}: {exc}"))
                    continue
                if choice.missing:  # composed all the same: its labels, and the budget's estimate with the data
                    run.status, run.error = "no data", choice.missing
                if choice.stand_in and budget.get("estimate") == "flops":
                    own = [o for o in overrides if o != f"data={choice.data}" and o not in choice.overrides]
                    with contextlib.suppress(Exception):  # only an estimate: a recipe that cannot compose is not priced
                        run.paper_config = compose([*own, f"data={paper_data}"])
                run.labels = [] if figure else row_labels(number, run)
                if not figure and not any(label in paper_rows for label in run.labels) and not (run.method == BASELINE and has_delta):
                    plan.runs.remove(run)  # a sweep combination the paper does not print (Table 9 crosses more than it shows)
                    continue
                run.identity = fingerprint(run.config)
                if run.status == "no data":
                    continue
                run.run_id = str(run.config.get("run_id") or f"{run.method}-s{seed}-{run.identity[:8]}")
                experiment = str(run.config["experiment"])
                check_run_path(experiment, run.run_id)
                run.record_path = results_dir / "runs" / experiment / run.run_id / RECORD_NAME
            plan.choices[number] = used
    refresh(plan)
    return plan


def refresh(plan: Plan) -> None:
    """Read every planned run's record again (status, error)."""
    from molabench.report.records import read_record

    for run in plan.runs:
        if run.record_path is None:
            continue
        record = read_record(run.record_path)
        if record is None or record.get("identity") not in (None, run.identity):
            run.status, run.error, run.record = "to do", None, None
            continue
        run.record = record
        status = str(record.get("status") or "to do")
        run.status = status if status in ("complete", "failed", "interrupted", "running") else "to do"
        run.error = record.get("error") if status == "failed" else None


def check_data_roots(plan: Plan) -> None:
    """Raise a one-line DataError when no table of the plan can run for want of data."""
    if plan.runs and all(r.status == "no data" for r in plan.runs):
        reasons = sorted({r.error or "" for r in plan.runs})
        raise DataError("no table can run: " + "; ".join(reasons))


def row_labels(number: int, run: PlannedRun) -> list[str]:
    """The paper's row label(s) of a planned run (``molabench.report.paper.paper_labels`` on the run's
    resolved configuration, with the paper's dataset name: Tables 8, 9 and 11 label rows by it)."""
    from molabench.report.paper import paper_labels

    if not run.config:
        return []
    pseudo = {"method": run.method, "data": run.choice.paper_data, "config": run.config, "overrides": list(run.params), "tasks": []}
    return list(paper_labels(TABLES[number].name, pseudo))


def save_plan(plan: Plan) -> Path:
    """Write ``runs/reproduce/<budget>/plan.json`` (what :mod:`~molabench.reproduce.layout` reads):
    the planned runs of this plan's tables, and those of other tables from the previous plan."""
    from molabench.atomic import write_text_atomic
    from molabench.reproduce.layout import plan_path

    path = plan_path(plan.results_dir, str(plan.budget["name"]))
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    keep_runs = [r for r in previous.get("runs") or [] if isinstance(r, dict) and r.get("table") not in plan.tables]
    tables = {k: v for k, v in (previous.get("tables") or {}).items() if int(k) not in plan.tables}
    tables.update({str(n): {"name": TABLES[n].name} for n in plan.tables})
    runs = keep_runs + [
        {
            "table": r.table,
            "params": list(r.params),
            "seed": r.seed,
            "method": r.method,
            "overrides": list(r.overrides),
            "data": r.choice.data,
            "paper_data": r.choice.paper_data,
            "stand_in": r.choice.stand_in,
            "labels": r.labels,
            "figure": r.figure,
            "identity": r.identity or None,
            "record": str(r.record_path.relative_to(plan.results_dir)) if r.record_path else None,
            "status": r.status if r.status in ("no data", "invalid") else "planned",
            "error": r.error if r.status in ("no data", "invalid") else None,
        }
        for r in plan.runs
    ]
    runs.sort(key=lambda r: int(r["table"]))  # stable: plan order within a table
    body = {"budget": plan.budget["name"], "seeds": list(plan.budget["seeds"]), "tables": dict(sorted(tables.items(), key=lambda kv: int(kv[0]))), "runs": runs}
    write_text_atomic(path, json.dumps(body, indent=1) + "\n")
    return path
