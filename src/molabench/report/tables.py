"""Aggregate run records into tables: ``make tables`` / ``python -m molabench.report.tables``.

Records are grouped into one table per (experiment, dataset, model-selection protocol).
Rows are methods (plus any sweep overrides, e.g. ``mola_router [method.rank=4]``), columns
every task's metrics as its kind defines them (one accuracy per classification task plus ``Avg``;
mIoU/PixAcc, AbsErr/RelErr and the five normal metrics on dense data, plus ``delta_m``: Δm%
against the table's ``single_task`` rows); a cell is the mean ± std over seeds of the reported split.
When the dataset (or the experiment's name) matches a table of the paper, the paper's number
stands beside ours. Each table is written as Markdown, CSV and LaTeX under ``results/tables/``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from molabench.atomic import write_text_atomic
from molabench.data.base import TaskSpec
from molabench.errors import DataError, MolabenchError
from molabench.report.paper import PAPER_LABELS, STAND_INS, PaperTable, available_tables, load_table, paper_labels
from molabench.report.records import iter_records, variant_overrides
from molabench.report.summary import BASELINE_METHOD, directions, mean_metrics, recipe, safe_delta_m
from molabench.tasks import kind_of

METHOD_ORDER = list(PAPER_LABELS)


@dataclass
class Group:
    experiment: str
    data: str
    protocol: str
    split: str
    tasks: list[dict[str, Any]]
    paper: str | None
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    #: overrides every run of the table shares: said once in the heading, not in every row label
    common: list[str] = field(default_factory=list)
    #: records of this table left out because they are not complete: status -> count
    skipped: dict[str, int] = field(default_factory=dict)
    superseded: int = 0  # complete runs left out: an older record of the same row and seed


#: Methods whose rows say whether they ran with one shared head or one head per domain (docs/domain_generalization.md).
HEAD_LABELLED = ("mmd", "mmd_aae", "selfreg", "eqrm", "dann")


def row_label(record: dict[str, Any], common: Iterable[str] = ()) -> str:
    shared = set(common)
    overrides = [o for o in variant_overrides(record.get("overrides") or []) if o not in shared]
    method = record["method"]
    head = (record.get("gradients") or {}).get("head")
    if method in HEAD_LABELLED and head:
        method += " (shared head)" if head == "shared" else " (per-domain heads)"
    return method + (f" [{', '.join(overrides)}]" if overrides else "")


def _paper_table_for(record: dict[str, Any]) -> str | None:
    names = available_tables()
    if record["experiment"] in names:
        return record["experiment"]
    table = ((record.get("config") or {}).get("data") or {}).get("paper", {}) or {}
    name = table.get("table") if isinstance(table, dict) else None
    return name if name in names else None


def _table_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """(experiment, data, selection protocol): the table a record belongs to, also for records
    that are not complete (their protocol is the configured one)."""
    protocol = (record.get("selection") or {}).get("protocol") or ((record.get("config") or {}).get("trainer") or {}).get("selection", "val")
    return str(record.get("experiment")), str(record.get("data")), str(protocol)


#: What a complete record needs to be a table row (records that are not complete only need to be JSON objects).
ROW_KEYS = ("experiment", "method", "tasks", "metrics")


def checked_record(path: Path, record: Any) -> dict[str, Any]:
    """``record`` (read from ``path``) when the tables can use it, else a one-line DataError naming what is missing."""
    fix = "re-run that run or delete its folder"
    if not isinstance(record, dict):
        raise DataError(f"{path} holds a JSON {type(record).__name__}, not a run record; {fix}")
    if record.get("status") != "complete":
        return record
    missing = [key for key in ROW_KEYS if key not in record]
    metrics, tasks = record.get("metrics"), record.get("tasks")
    if not missing and not (isinstance(metrics, dict) and ("test" in metrics or "val" in metrics)):
        missing = ["metrics.test (or metrics.val)"]
    if not missing and not (isinstance(tasks, list) and all(isinstance(t, dict) and "name" in t for t in tasks)):
        missing = ["tasks[].name"]
    if missing:
        raise DataError(f"the complete run record {path} lacks {', '.join(missing)}, which the tables need; {fix}")
    return record


def collect(records: Iterable[dict[str, Any]]) -> list[Group]:
    """One group per table; only complete records are rows, the others (running, interrupted,
    failed) are counted in the table's :attr:`Group.skipped`."""
    members: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    skipped: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for record in records:
        if record.get("status") != "complete":
            status, counts = str(record.get("status") or "unknown"), skipped[_table_key(record)]
            counts[status] = counts.get(status, 0) + 1
            continue
        members[_table_key(record)].append(record)
    groups = []
    for key, runs in members.items():
        first = runs[0]
        split = "test" if "test" in first["metrics"] else "val"
        # data/trainer overrides every run shares move to the heading; method variants always label rows
        common = set.intersection(*(set(recipe(r)) for r in runs))
        group = Group(*key, split=split, tasks=first["tasks"], paper=_paper_table_for(first), common=sorted(common))
        group.skipped = dict(sorted(skipped.get(key, {}).items()))
        for record in runs:
            group.runs[row_label(record, common)].append(record)
        superseded = 0
        for label, rows in group.runs.items():  # one run per row and seed: the latest (an older record of a re-run)
            latest: dict[Any, dict[str, Any]] = {}
            for record in rows:
                seed = record.get("seed")
                if seed in latest:
                    superseded += 1
                    if float(record.get("heartbeat") or record.get("started") or 0) < float(latest[seed].get("heartbeat") or latest[seed].get("started") or 0):
                        continue
                latest[seed] = record
            group.runs[label] = list(latest.values())
        group.superseded = superseded
        groups.append(group)
    return groups


def _baseline_runs(group: Group, runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Single-Task runs Δm% compares ``runs`` with: same data/trainer overrides, no method variant."""
    wanted = recipe(runs[0])
    return [
        r for label, rs in group.runs.items() if label.split(" [")[0] == BASELINE_METHOD
        for r in rs if recipe(r) == wanted and not any(o.startswith("method.") for o in r.get("overrides") or [])
    ]


def _order(label: str) -> tuple[int, str]:
    method = label.split(" [")[0].split(" (")[0]
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), label)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Column:
    """One metric column: task ``task``'s metric ``metric`` labelled ``label`` (the paper's column name)."""

    task: str
    metric: str
    label: str
    higher_is_better: bool


def metric_columns(group: Group) -> tuple[list[Column], bool, bool]:
    """The metric columns of a table, whether it has an ``Avg`` column (every task reports one
    common single metric, e.g. accuracy) and whether it has a Δm% column (dense tasks, or the
    paper's table has one)."""
    columns: list[Column] = []
    kinds = []
    for task in group.tasks:
        kind = kind_of(TaskSpec.from_record(task))
        kinds.append(kind)
        column = task.get("column") or task["name"]
        for m in kind.metrics:
            label = column if len(kind.metrics) == 1 else f"{column}_{m.label}"
            columns.append(Column(task["name"], m.name, label, m.higher_is_better))
    single = {k.metrics for k in kinds}
    has_avg = len(single) == 1 and len(kinds[0].metrics) == 1
    paper = load_table(group.paper) if group.paper else None
    has_delta = any(k.dense for k in kinds) or bool(paper and "delta_m" in paper.columns)
    return columns, has_avg, has_delta


def build_frame(group: Group) -> pd.DataFrame:
    """One row per method: mean, std and paper value of every metric column, of the average and of Δm%."""
    paper: PaperTable | None = load_table(group.paper) if group.paper else None
    metric_cols, has_avg, has_delta = metric_columns(group)
    columns = [(c.task, c.metric, c.label) for c in metric_cols]
    if has_avg:
        columns.append(("avg", metric_cols[0].metric, "Avg"))
    higher = directions(group.tasks)
    task_names = [t["name"] for t in group.tasks]
    rows = []
    for label in sorted(group.runs, key=_order):
        runs = group.runs[label]
        paper_row = paper.lookup_labels(paper_labels(paper.name, runs[0])) if paper else None
        row: dict[str, Any] = {"method": label, "seeds": len(runs)}
        for task, metric, column in columns:
            values = [_value(r["metrics"][group.split].get(task, {}).get(metric)) for r in runs]
            values = [v for v in values if v is not None]
            mean, std = _mean_std(values) if values else (float("nan"), float("nan"))
            row[column] = mean
            row[f"{column}_std"] = std
            row[f"{column}_paper"] = paper_row.get(paper.column_for(column, group.data)) if paper and paper_row else None
        if has_avg and paper and paper_row:
            row["Avg_paper"] = _paper_average(paper, paper_row, [c.label for c in metric_cols], group.data)
        if has_delta:
            baseline = mean_metrics(_baseline_runs(group, runs), group.split, task_names)
            deltas = [safe_delta_m(r["metrics"][group.split], baseline, higher)[0] for r in runs] if baseline else []
            deltas = [d for d in deltas if d is not None]
            row["delta_m"], row["delta_m_std"] = _mean_std(deltas) if deltas else (float("nan"), float("nan"))
            row["delta_m_paper"] = paper_row.get("delta_m") if paper and paper_row else None
        steps = [r["timing"]["step_s_median"] for r in runs if r.get("timing")]
        row["step_ms"] = 1000 * statistics.median(steps) if steps else None
        row["params_added"] = runs[0].get("params", {}).get("added")
        rows.append(row)
    return pd.DataFrame(rows)


def _value(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value == value else None


def _paper_average(paper: PaperTable, paper_row: dict[str, float | None], task_columns: list[str], data: str) -> float | None:
    """The paper's Avg when we ran all of its tasks, else the mean of its numbers for the tasks we ran.

    (A 3-task MedMNIST run beside Table 4's 9-task average would compare different things.)
    """
    ours = [paper.column_for(c, data) for c in task_columns]
    if set(ours) == {c for c in paper.columns if c != "Avg"}:
        return paper_row.get("Avg")
    values = [paper_row.get(c) for c in ours]
    return statistics.fmean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _display_columns(group: Group) -> list[str]:
    metric_cols, has_avg, has_delta = metric_columns(group)
    return [c.label for c in metric_cols] + (["Avg"] if has_avg else []) + (["delta_m"] if has_delta else [])


def _heading(group: Group) -> str:
    metric_cols, _, has_delta = metric_columns(group)
    if all(c.metric == "acc" for c in metric_cols):
        what = f"{group.split} accuracy (%)"
    else:
        arrows = ", ".join(f"{c.label} {'↑' if c.higher_is_better else '↓'}" for c in metric_cols)
        what = f"{group.split} metrics ({arrows})"
    delta = ""
    if has_delta:
        n = sum(len(rs) for label, rs in group.runs.items() if label.split(" [")[0] == BASELINE_METHOD)
        delta = (
            f" delta_m = Δm% against the {BASELINE_METHOD} rows of this table ({n} run(s); lower is better)."
            if n else f" delta_m: – (no {BASELINE_METHOD} run in this experiment to compare with)."
        )
    common = f" Every run: `{' '.join(group.common)}`." if group.common else ""
    skipped = ""
    if group.skipped:
        counts = ", ".join(f"{n} {status}" for status, n in group.skipped.items())
        skipped = f" Not in the table (not complete): {counts}."
    if group.superseded:
        skipped += f" {group.superseded} older run(s) of a row and seed left out for the latest."
    return f"{what}, mean ± std over seeds; (paper) = the paper's number.{delta}{common}{skipped}"


def to_markdown(group: Group, frame: pd.DataFrame) -> str:
    columns = _display_columns(group)
    paper_note = f" Paper: {load_table(group.paper).caption}." if group.paper else ""
    stand_in = STAND_INS.get(group.data)
    if stand_in and group.paper:
        paper_note += f" Stand-in data: `{group.data}` replaces {stand_in}; compare orderings and Δm%, not raw values."
    lines = [
        f"## {group.experiment} — data `{group.data}` — selection `{group.protocol}`",
        "",
        _heading(group) + paper_note,
        "",
        "| method | seeds | " + " | ".join(columns) + " | params added | step ms |",
        "|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    for _, row in frame.iterrows():
        cells = [_cell(row, column) for column in columns]
        added = "" if pd.isna(row["params_added"]) else f"{int(row['params_added']):,}"
        step = "" if row["step_ms"] is None or pd.isna(row["step_ms"]) else f"{row['step_ms']:.0f}"
        lines.append(f"| {row['method']} | {row['seeds']} | " + " | ".join(cells) + f" | {added} | {step} |")
    return "\n".join(lines) + "\n"


def _cell(row: pd.Series, column: str) -> str:
    if pd.isna(row[column]):
        cell = "–"
    else:
        digits = 2 if abs(row[column]) >= 1 or row[column] == 0 else 3
        cell = f"{row[column]:.{digits}f} ± {row[f'{column}_std']:.{digits}f}"
    paper = row.get(f"{column}_paper")
    return cell if paper is None or pd.isna(paper) else f"{cell} ({paper:.2f})"


def to_latex(group: Group, frame: pd.DataFrame) -> str:
    columns = _display_columns(group)

    def escape(text: str) -> str:
        return text.replace("_", r"\_").replace("±", r"$\pm$").replace("&", r"\&").replace("–", "--")

    lines = [
        r"\begin{tabular}{l" + "c" * len(columns) + "}",
        r"\toprule",
        "Method & " + " & ".join(escape(c) for c in columns) + r" \\",
        r"\midrule",
    ]
    for _, row in frame.iterrows():
        lines.append(escape(str(row["method"])) + " & " + " & ".join(escape(_cell(row, c)) for c in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = f"% {group.experiment}, data {group.data}, selection {group.protocol}: " + _heading(group)
    return caption + "\n" + "\n".join(lines) + "\n"


def write_tables(runs_dir: Path, out_dir: Path) -> list[Path]:
    """One ``.md``/``.csv``/``.tex`` and a ``.png`` figure per (experiment, data, protocol) found
    under ``runs_dir``, then ``README.md``: every table in ``out_dir`` with a link to its figure where
    there is one, including tables written earlier from records that are not here now (a table
    disappears from the index only when its files are deleted)."""
    from molabench.report.figures import table_figure  # matplotlib only when tables are written

    # all checked before a file is written; a reproduction's runs have the paper's layout instead (molabench.reproduce)
    reproduction = runs_dir / "reproduce"
    groups = collect(checked_record(path, record) for path, record in iter_records(runs_dir) if not path.is_relative_to(reproduction))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for group in sorted(groups, key=lambda g: (g.experiment, g.data, g.protocol)):
        frame = build_frame(group)
        stem = f"{group.experiment}__{group.data}__{group.protocol}".replace("/", "_")
        _write_text(out_dir / f"{stem}.md", to_markdown(group, frame))
        _write_text(out_dir / f"{stem}.csv", frame.to_csv(index=False, float_format="%.4f"))
        _write_text(out_dir / f"{stem}.tex", to_latex(group, frame))
        table_figure(group, frame, out_dir / f"{stem}.png")
        if group.skipped:
            counts = ", ".join(f"{n} {status}" for status, n in group.skipped.items())
            print(f"{stem}: skipped {counts} run(s) (not complete)")
        if group.superseded:
            print(f"{stem}: left out {group.superseded} older run(s) of a row and seed (kept the latest)")
        written += [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.tex", out_dir / f"{stem}.png"]
    write_index(out_dir, runs_dir)
    return written


def write_index(out_dir: Path, runs_dir: Path) -> Path:
    """``out_dir/README.md``: every table in ``out_dir`` (its Markdown, and its figure where there is one)."""
    from urllib.parse import quote

    index = ["# Results", "", f"Generated from the run records under `{runs_dir}`.", ""]
    for path in sorted(out_dir.glob("*.md")):
        if path.name == "README.md":
            continue
        index.append(path.read_text())
        if path.with_suffix(".png").is_file():
            index.append(f"![{path.stem}]({quote(path.stem)}.png)\n")
    _write_text(out_dir / "README.md", "\n".join(index))
    return out_dir / "README.md"


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Aggregate run records into tables.")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (holds runs/)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <results>/tables)")
    args = parser.parse_args(argv)
    runs_dir = args.results / "runs"
    if not runs_dir.is_dir():
        print(f"error: no run records under {runs_dir}; train something first (python -m molabench.train)", file=sys.stderr)
        return 2
    try:
        written = write_tables(runs_dir, args.out or args.results / "tables")
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tables = [p for p in written if p.suffix == ".md"]
    print(f"wrote {len(tables)} table(s) to {args.out or args.results / 'tables'}")
    for path in tables:
        print(f"  {path}")
    return _paper_layout(args.results) if args.out is None else 0


def _paper_layout(results: Path) -> int:
    """The reproduction's paper-layout tables and report page, rebuilt from its saved plans and records
    (``make reproduce``; the figures are left as that command drew them). Each budget writes where
    :func:`~molabench.reproduce.outputs.output_dir` says: the largest into ``results/``."""
    from molabench.reproduce.outputs import saved_budgets, write_outputs

    budgets = saved_budgets(results)
    try:
        for budget in budgets:
            write_outputs(results, budget, figures=False)
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
