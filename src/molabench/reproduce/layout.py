"""The paper's tables from the records of a reproduction: ``table<N>_<name>.{json,md,csv,tex,png}``.

Input: the plan a reproduction saved (``runs/reproduce/<budget>/plan.json``: every run of every
table with its paper row labels, data and stand-in) and the run records. A record belongs to a
planned run when its command-line overrides are the run's (the results folder aside); of several,
the latest complete one counts. So ``make tables`` rebuilds these files from the committed records
and plan alone, byte for byte, without composing a configuration or looking for data.

A table has one row per row of the paper, in the paper's order, with the paper's label:

- ``ok``: every seed complete; a cell is the mean ± std over seeds (std ``None`` with one seed);
- ``partial``: some seeds complete (the others failed or are still to do);
- ``failed`` / ``not run`` / ``missing``: nothing to show, and ``reason`` says why (the run's
  one-line error; not run yet; the method is not in molabench or its data is absent).

Columns are the paper's. On a stand-in dataset (another dataset in place of the paper's) our own
task columns stand beside them and only ``Avg`` / ``delta_m`` compare; on a subset of the paper's
tasks (MedMNIST files present) our columns are the paper's and the paper's ``Avg`` is recomputed over
the tasks we ran. Avg is the mean over tasks of the single metric (accuracy); Δm% (Tables 5 and 7)
is computed per seed against the mean of the table's Single-Task runs
(:func:`molabench.report.delta_m.delta_m`: within each task first, then over tasks).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from molabench.atomic import atomic_write, write_text_atomic
from molabench.data.base import TaskSpec
from molabench.errors import DataError
from molabench.report.paper import PaperTable, load_table
from molabench.report.records import iter_records
from molabench.report.summary import BASELINE_METHOD, directions, mean_metrics, safe_delta_m
from molabench.reproduce.execute import duration
from molabench.tasks import kind_of

PLAN_NAME = "plan.json"
#: overrides that say where a run writes, not what it computes: left out when matching records to runs
_WHERE = ("results_dir=",)


def plan_path(results_dir: Path, budget: str) -> Path:
    """Where a reproduction at ``budget`` saves its plan (beside its records)."""
    return results_dir / "runs" / "reproduce" / budget / PLAN_NAME


def run_key(overrides: Iterable[str]) -> tuple[str, ...]:
    return tuple(o for o in overrides if not o.startswith(_WHERE))


def load_plan(path: Path) -> dict[str, Any]:
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the reproduction plan {path} ({exc}); re-run make reproduce to write it") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("runs"), list) or not isinstance(plan.get("tables"), dict):
        raise DataError(f"{path} is not a reproduction plan (no runs/tables); re-run make reproduce to write it")
    return plan


def index_records(runs_dir: Path) -> dict[Any, list[dict[str, Any]]]:
    """Records under ``runs_dir`` by identity and by override key (a run planned from another table's
    sweep has other overrides but the same identity); latest (heartbeat) last."""
    found: dict[Any, list[dict[str, Any]]] = {}
    if not runs_dir.is_dir():
        return found
    for _, record in iter_records(runs_dir):
        if isinstance(record, dict) and isinstance(record.get("overrides"), list):
            found.setdefault(run_key(record["overrides"]), []).append(record)
            if record.get("identity"):
                found.setdefault(("identity", record["identity"]), []).append(record)
    for records in found.values():
        records.sort(key=lambda r: float(r.get("heartbeat") or r.get("started") or 0))
    return found


def _latest(records: Sequence[dict[str, Any]], status: str) -> dict[str, Any] | None:
    chosen = [r for r in records if r.get("status") == status]
    return chosen[-1] if chosen else None


def _split(record: Mapping[str, Any]) -> str:
    return "test" if "test" in record["metrics"] else "val"


def _columns(record: Mapping[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(task, metric, our column label, higher is better) for every metric of every task."""
    out = []
    for task in record["tasks"]:
        kind = kind_of(TaskSpec.from_record(task))
        column = task.get("column") or task["name"]
        for m in kind.metrics:
            out.append((task["name"], m.name, column if len(kind.metrics) == 1 else f"{column}_{m.label}", m.higher_is_better))
    return out


def _mean_std(values: Sequence[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def build_table(number: int, plan: Mapping[str, Any], records: Mapping[Any, list[dict[str, Any]]]) -> dict[str, Any]:
    """The JSON of paper table ``number`` (the contract documented in :mod:`molabench.report.html`)."""
    meta = plan["tables"][str(number)]
    paper = load_table(meta["name"])
    runs = [r for r in plan["runs"] if r["table"] == number]
    # the seeds this table ran (the budget may give a table fewer: the ablations have one at cpu)
    seeds = sorted({int(r["seed"]) for r in runs if not r.get("figure")}) or list(plan["seeds"])
    # every run's record (latest complete, else latest of any status)
    for run in runs:
        found = records.get(("identity", run.get("identity")), []) or (records.get(run_key(run["overrides"]), []) if run.get("overrides") else [])
        run["_complete"] = _latest(found, "complete")
        run["_any"] = found[-1] if found else None
    complete = [r["_complete"] for r in runs if r["_complete"]]
    stand_ins = sorted({r["stand_in"] for r in runs if r.get("stand_in")})
    datas = sorted({r["data"] for r in runs})
    foreign = any(r["data"] != r["paper_data"] for r in runs)  # another dataset: columns not comparable
    our_cols: list[str] = []
    directions_by_col: dict[str, str] = {}
    for record in complete[:1]:
        for _, _, label, higher in _columns(record):
            col = label if foreign else paper.column_for(label, record["data"])
            our_cols.append(col)
            directions_by_col[col] = "higher" if higher else "lower"
    single_metric = bool(complete) and len({(m) for _, m, _, _ in _columns(complete[0])}) == 1 and all(
        len(kind_of(TaskSpec.from_record(t)).metrics) == 1 for t in complete[0]["tasks"])
    has_avg = "Avg" in paper.columns or (single_metric and bool(complete))
    has_delta = "delta_m" in paper.columns
    if has_avg:
        our_cols.append("Avg")
        directions_by_col["Avg"] = "higher"
    if has_delta:
        our_cols.append("delta_m")
    directions_by_col["delta_m"] = "lower"
    for col in paper.columns:
        directions_by_col.setdefault(col, _paper_direction(paper, col))
    # Δm% baseline: the table's Single-Task runs, per data
    baselines: dict[str, dict[str, dict[str, float]] | None] = {}
    if has_delta:
        for data in datas:
            base = [r["_complete"] for r in runs if r["_complete"] and r["data"] == data and r["_complete"]["method"] == BASELINE_METHOD]
            baselines[data] = mean_metrics(base, _split(base[0]), [t["name"] for t in base[0]["tasks"]]) if base else None
    subset = not foreign and complete and len([c for c in our_cols if c not in ("Avg", "delta_m")]) < len([c for c in paper.columns if c not in ("Avg", "delta_m")])
    rows = []
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        label = next((lab for lab in run.get("labels") or [] if lab in paper.rows), None)
        if label is not None:
            by_label.setdefault(label, []).append(run)
    table_missing = sorted({r["error"] for r in runs if r.get("status") == "no data" and r.get("error")})
    for label, paper_row in paper.rows.items():
        paper_values = dict(paper_row)
        if subset and "Avg" in paper_values:
            ours_tasks = [c for c in our_cols if c not in ("Avg", "delta_m")]
            values = [paper_values.get(c) for c in ours_tasks]
            paper_values["Avg"] = statistics.fmean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]
        row: dict[str, Any] = {"label": label, "method": None, "status": "missing", "reason": None, "seeds": 0, "ours": {}, "paper": paper_values}
        members = by_label.get(label, [])
        if not members:
            row["reason"] = ("no data: " + "; ".join(table_missing)) if table_missing else "method not in molabench (no run of this table gives this row)"
            rows.append(row)
            continue
        row["method"] = members[0]["method"]
        done = [m for m in members if m["_complete"]]
        row["seeds"] = len(done)
        if done:
            row["ours"] = _cells(done, foreign, paper, our_cols, has_avg, has_delta, baselines)
        if len(done) == len(members):
            row["status"] = "ok"
        elif done:
            row["status"] = "partial"
            row["reason"] = f"{len(done)} of {len(members)} seed(s) complete"
        else:
            failed = [m["_any"] for m in members if m["_any"] and m["_any"].get("status") == "failed"]
            nodata = [m for m in members if m.get("status") in ("no data", "invalid")]
            if failed:
                row["status"], row["reason"] = "failed", "run failed: " + str(failed[-1].get("error") or "see its record")
            elif nodata:
                row["status"], row["reason"] = "missing", f"{nodata[0]['status']}: {nodata[0].get('error')}"
            else:
                row["status"], row["reason"] = "not run", "not run yet (re-run make reproduce to continue)"
        rows.append(row)
    counts = {"planned": len(runs), "complete": sum(1 for r in runs if r["_complete"]),
              "failed": sum(1 for r in runs if not r["_complete"] and r["_any"] and r["_any"].get("status") == "failed")}
    counts["to_do"] = counts["planned"] - counts["complete"] - counts["failed"]
    # Wall time of the complete runs (as their records state; a run shared with another table counts in both).
    walls = [float(r["_complete"]["wall_s"]) for r in runs if r["_complete"] and isinstance(r["_complete"].get("wall_s"), (int, float))]
    counts["wall_s"] = round(sum(walls), 1)
    for run in runs:
        run.pop("_complete", None)
        run.pop("_any", None)
    note = "; ".join(stand_ins) if stand_ins else None
    if note and subset:
        note += " (the paper's Avg recomputed over these tasks)"
    return {
        "number": number,
        "name": meta["name"],
        "title": paper.caption,
        "budget": plan["budget"],
        "seeds": seeds,
        "data": ", ".join(datas),
        "paper_data": ", ".join(sorted({r["paper_data"] for r in runs})),
        "stand_in": note,
        "paper_columns": list(paper.columns),
        "our_columns": our_cols if our_cols else list(paper.columns),
        "directions": directions_by_col,
        "rows": rows,
        "runs": counts,
    }


def _paper_direction(paper: PaperTable, column: str) -> str:
    lower = ("delta_m", "AbsErr", "RelErr", "Mean", "Median")
    return "lower" if any(column.endswith(s) for s in lower) else "higher"


def _cells(done: Sequence[Mapping[str, Any]], foreign: bool, paper: PaperTable, our_cols: Sequence[str], has_avg: bool,
           has_delta: bool, baselines: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    values: dict[str, list[float]] = {}
    for member in done:
        record = member["_complete"]
        metrics = record["metrics"][_split(record)]
        for task, metric, label, _ in _columns(record):
            col = label if foreign else paper.column_for(label, record["data"])
            value = (metrics.get(task) or {}).get(metric)
            if isinstance(value, (int, float)) and value == value:
                values.setdefault(col, []).append(float(value))
        if has_avg:
            avg = metrics.get("avg") or {}
            value = next(iter(avg.values()), None) if len(avg) == 1 else avg.get("acc")
            if isinstance(value, (int, float)) and value == value:
                values.setdefault("Avg", []).append(float(value))
        if has_delta and baselines.get(record["data"]):
            delta, _ = safe_delta_m(metrics, baselines[record["data"]], directions(record["tasks"]))
            if delta is not None:
                values.setdefault("delta_m", []).append(delta)
    return {col: _mean_std(values[col]) for col in our_cols if values.get(col)}


# -- renderings ------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"


def _cell(cell: Mapping[str, float | None] | None) -> str:
    if not cell:
        return "–"
    return _fmt(cell["mean"]) + ("" if cell.get("std") is None else f" ± {_fmt(cell['std'])}")


def header_lines(table: Mapping[str, Any]) -> list[str]:
    runs = table["runs"]
    lines = [
        f"budget {table['budget']}; seeds {', '.join(map(str, table['seeds']))}; data {table['data']}",
        f"runs: {runs['complete']} complete, {runs['failed']} failed, {runs['to_do']} to do (of {runs['planned']})"
        + (f"; wall time of the complete runs {duration(runs['wall_s'])}" if runs.get("wall_s") else ""),
    ]
    if table.get("stand_in"):
        lines.append(f"stand-in: {table['stand_in']}")
    return lines


def _aligned(table: Mapping[str, Any]) -> bool:
    return not table.get("stand_in") or table["our_columns"] == table["paper_columns"] or set(table["our_columns"]) <= set(table["paper_columns"])


def to_markdown(table: Mapping[str, Any]) -> str:
    lines = [f"## {table['title']}", ""] + [f"- {line}" for line in header_lines(table)] + [""]
    if _aligned(table):
        cols = table["paper_columns"]
        lines.append("ours (paper) per column, mean ± std over seeds.")
        lines.append("")
        lines.append("| row | seeds | " + " | ".join(cols) + " | status |")
        lines.append("|---|---|" + "---|" * len(cols) + "---|")
        for row in table["rows"]:
            cells = [f"{_cell(row['ours'].get(c))} ({_fmt(row['paper'].get(c))})" for c in cols]
            lines.append(f"| {row['label']} | {row['seeds']} | " + " | ".join(cells) + f" | {_status(row)} |")
    else:
        ours, theirs = table["our_columns"], table["paper_columns"]
        lines.append("ours on the stand-in (its own columns), then the paper's numbers; compare Avg / Δm% and orderings, not raw cells.")
        lines.append("")
        lines.append("| row | seeds | " + " | ".join(ours) + " | " + " | ".join(f"paper {c}" for c in theirs) + " | status |")
        lines.append("|---|---|" + "---|" * (len(ours) + len(theirs)) + "---|")
        for row in table["rows"]:
            cells = [_cell(row["ours"].get(c)) for c in ours] + [_fmt(row["paper"].get(c)) for c in theirs]
            lines.append(f"| {row['label']} | {row['seeds']} | " + " | ".join(cells) + f" | {_status(row)} |")
    return "\n".join(lines) + "\n"


def _status(row: Mapping[str, Any]) -> str:
    return row["status"] if not row.get("reason") else f"{row['status']}: {row['reason']}"


def to_csv(table: Mapping[str, Any]) -> str:
    out = io.StringIO()
    out.write(f"# {table['title']} | " + " | ".join(header_lines(table)) + "\n")
    ours = table["our_columns"]
    theirs = table["paper_columns"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["row", "method", "status", "reason", "seeds", *[f"{c}{s}" for c in ours for s in ("", "_std")], *[f"paper_{c}" for c in theirs]])
    for row in table["rows"]:
        cells = []
        for c in ours:
            cell = row["ours"].get(c) or {}
            cells += [_num(cell.get("mean")), _num(cell.get("std"))]
        writer.writerow([row["label"], row["method"] or "", row["status"], row["reason"] or "", row["seeds"], *cells,
                         *[_num(row["paper"].get(c)) for c in theirs]])
    return out.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def to_latex(table: Mapping[str, Any]) -> str:
    def esc(text: str) -> str:
        return text.replace("_", r"\_").replace("±", r"$\pm$").replace("&", r"\&").replace("–", "--").replace("%", r"\%")

    cols = table["our_columns"]
    lines = [f"% {esc(table['title'])}"] + [f"% {esc(line)}" for line in header_lines(table)]
    lines += [r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule", "Method & " + " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    for row in table["rows"]:
        cells = []
        for c in cols:
            paper = row["paper"].get(c) if c in table["paper_columns"] and _aligned(table) else None
            cells.append(esc(_cell(row["ours"].get(c)) + (f" ({_fmt(paper)})" if paper is not None else "")))
        lines.append(esc(row["label"]) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_png(table: Mapping[str, Any], path: Path) -> None:
    """One horizontal bar per row for the table's headline column (Avg, else Δm%): ours (mean, std as
    error bar) and the paper's value as a black tick; rows without a number say why in their label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    column = "Avg" if "Avg" in table["our_columns"] else ("delta_m" if "delta_m" in table["our_columns"] else table["our_columns"][-1])
    rows = table["rows"]
    fig = Figure(figsize=(8, 1.2 + 0.32 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, row in enumerate(rows):
        cell = row["ours"].get(column)
        if cell:
            ax.barh(i, cell["mean"], xerr=cell.get("std") or 0, color="#4c72b0", height=0.6)
        paper = row["paper"].get(column)
        if paper is not None:
            ax.plot([paper], [i], marker="|", color="black", markersize=12, markeredgewidth=2.2, linestyle="none")
    ax.set_yticks(range(len(rows)), [r["label"] + ("" if r["ours"].get(column) else f"  ({r['status']})") for r in rows], fontsize=7)
    ax.invert_yaxis()
    arrow = "↓ lower is better" if table["directions"].get(column) == "lower" else "↑ higher is better"
    ax.set_xlabel(f"{column} ({arrow}); bar: ours, mean ± std; tick: the paper")
    title = table["title"] if len(table["title"]) < 90 else table["title"][:87] + "..."
    ax.set_title(title + ("\nstand-in: " + table["stand_in"][:100] if table.get("stand_in") else ""), fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None}))


def write_tables(plan_path: Path, out_dir: Path, numbers: Sequence[int] | None = None) -> list[Path]:
    """Write ``table<N>_<name>.{json,md,csv,tex,png}`` for the plan's tables (or ``numbers``)."""
    plan = load_plan(plan_path)
    records = index_records(plan_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key in sorted(plan["tables"], key=int):
        number = int(key)
        if numbers is not None and number not in numbers:
            continue
        table = build_table(number, plan, records)
        stem = out_dir / f"table{number}_{table['name'].split('_', 1)[1]}"
        write_text_atomic(stem.with_suffix(".json"), json.dumps(table, indent=1, sort_keys=True) + "\n")
        write_text_atomic(stem.with_suffix(".md"), to_markdown(table))
        write_text_atomic(stem.with_suffix(".csv"), to_csv(table))
        write_text_atomic(stem.with_suffix(".tex"), to_latex(table))
        to_png(table, stem.with_suffix(".png"))
        written.append(stem.with_suffix(".json"))
    return written
