"""Aggregate run records into tables: ``make tables`` / ``python -m molabench.report.tables``.

Records are grouped into one table per (experiment, dataset, model-selection protocol).
Rows are methods (plus any sweep overrides, e.g. ``mola_router [method.rank=4]``), columns
the tasks and ``Avg``; a cell is the mean ± std over seeds of the reported split's accuracy.
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

from molabench.report.paper import PAPER_LABELS, PaperTable, available_tables, load_table, paper_labels
from molabench.report.records import iter_records, variant_overrides

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


def row_label(record: dict[str, Any]) -> str:
    overrides = variant_overrides(record.get("overrides") or [])
    return record["method"] + (f" [{', '.join(overrides)}]" if overrides else "")


def _paper_table_for(record: dict[str, Any]) -> str | None:
    names = available_tables()
    if record["experiment"] in names:
        return record["experiment"]
    table = ((record.get("config") or {}).get("data") or {}).get("paper", {}) or {}
    name = table.get("table") if isinstance(table, dict) else None
    return name if name in names else None


def collect(records: Iterable[dict[str, Any]]) -> list[Group]:
    groups: dict[tuple[str, str, str], Group] = {}
    for record in records:
        if record.get("status") != "complete":
            continue
        protocol = record["selection"]["protocol"]
        key = (str(record["experiment"]), record["data"], protocol)
        if key not in groups:
            split = "test" if "test" in record["metrics"] else "val"
            groups[key] = Group(*key, split=split, tasks=record["tasks"], paper=_paper_table_for(record))
        groups[key].runs[row_label(record)].append(record)
    return list(groups.values())


def _order(label: str) -> tuple[int, str]:
    method = label.split(" [")[0]
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), label)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def build_frame(group: Group) -> pd.DataFrame:
    """One row per method: mean, std and paper value of every task and of the average."""
    paper: PaperTable | None = load_table(group.paper) if group.paper else None
    columns = [(t["name"], t.get("column") or t["name"]) for t in group.tasks] + [("avg", "Avg")]
    rows = []
    for label in sorted(group.runs, key=_order):
        runs = group.runs[label]
        paper_row = paper.lookup_labels(paper_labels(paper.name, runs[0])) if paper else None
        row: dict[str, Any] = {"method": label, "seeds": len(runs)}
        for name, column in columns:
            values = [r["metrics"][group.split][name]["acc"] for r in runs if name in r["metrics"][group.split]]
            mean, std = _mean_std(values) if values else (float("nan"), float("nan"))
            row[column] = mean
            row[f"{column}_std"] = std
            row[f"{column}_paper"] = paper_row.get(paper.column_for(column, group.data)) if paper and paper_row else None
        if paper and paper_row:
            row["Avg_paper"] = _paper_average(paper, paper_row, [c for _, c in columns[:-1]], group.data)
        steps = [r["timing"]["step_s_median"] for r in runs if r.get("timing")]
        row["step_ms"] = 1000 * statistics.median(steps) if steps else None
        row["params_added"] = runs[0].get("params", {}).get("added")
        rows.append(row)
    return pd.DataFrame(rows)


def _paper_average(paper: PaperTable, paper_row: dict[str, float | None], task_columns: list[str], data: str) -> float | None:
    """The paper's Avg when we ran all of its tasks, else the mean of its numbers for the tasks we ran.

    (A 3-task MedMNIST run beside Table 4's 9-task average would compare different things.)
    """
    ours = [paper.column_for(c, data) for c in task_columns]
    if set(ours) == {c for c in paper.columns if c != "Avg"}:
        return paper_row.get("Avg")
    values = [paper_row.get(c) for c in ours]
    return statistics.fmean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def to_markdown(group: Group, frame: pd.DataFrame) -> str:
    columns = [t.get("column") or t["name"] for t in group.tasks] + ["Avg"]
    paper_note = f" Paper: {load_table(group.paper).caption}." if group.paper else ""
    lines = [
        f"## {group.experiment} — data `{group.data}` — selection `{group.protocol}`",
        "",
        f"{group.split} accuracy (%), mean ± std over seeds; (paper) = the paper's number.{paper_note}",
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
    cell = f"{row[column]:.2f} ± {row[f'{column}_std']:.2f}"
    paper = row[f"{column}_paper"]
    return cell if paper is None or pd.isna(paper) else f"{cell} ({paper:.2f})"


def to_latex(group: Group, frame: pd.DataFrame) -> str:
    columns = [t.get("column") or t["name"] for t in group.tasks] + ["Avg"]
    def escape(text: str) -> str:
        return text.replace("_", r"\_").replace("±", r"$\pm$").replace("&", r"\&")

    lines = [
        r"\begin{tabular}{l" + "c" * len(columns) + "}",
        r"\toprule",
        "Method & " + " & ".join(escape(c) for c in columns) + r" \\",
        r"\midrule",
    ]
    for _, row in frame.iterrows():
        lines.append(escape(str(row["method"])) + " & " + " & ".join(escape(_cell(row, c)) for c in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = f"% {group.experiment}, data {group.data}, selection {group.protocol}: {group.split} accuracy (%), mean ± std over seeds (paper)"
    return caption + "\n" + "\n".join(lines) + "\n"


def write_tables(runs_dir: Path, out_dir: Path) -> list[Path]:
    """One ``.md``/``.csv``/``.tex`` per (experiment, data, protocol) found under ``runs_dir``,
    then ``README.md``: every table in ``out_dir``, including those written earlier from records
    that are not here now (a table disappears from the index only when its files are deleted)."""
    groups = collect(record for _, record in iter_records(runs_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for group in sorted(groups, key=lambda g: (g.experiment, g.data, g.protocol)):
        frame = build_frame(group)
        stem = f"{group.experiment}__{group.data}__{group.protocol}".replace("/", "_")
        _write_text(out_dir / f"{stem}.md", to_markdown(group, frame))
        _write_text(out_dir / f"{stem}.csv", frame.to_csv(index=False, float_format="%.4f"))
        _write_text(out_dir / f"{stem}.tex", to_latex(group, frame))
        written += [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.tex"]
    index = ["# Results", "", f"Generated from the run records under `{runs_dir}`.", ""]
    index += [path.read_text() for path in sorted(out_dir.glob("*.md")) if path.name != "README.md"]
    _write_text(out_dir / "README.md", "\n".join(index))
    return written


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Aggregate run records into tables.")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (holds runs/)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <results>/tables)")
    args = parser.parse_args(argv)
    runs_dir = args.results / "runs"
    if not runs_dir.is_dir():
        print(f"error: no run records under {runs_dir}; train something first (python -m molabench.train)", file=sys.stderr)
        return 2
    written = write_tables(runs_dir, args.out or args.results / "tables")
    tables = [p for p in written if p.suffix == ".md"]
    print(f"wrote {len(tables)} table(s) to {args.out or args.results / 'tables'}")
    for path in tables:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
