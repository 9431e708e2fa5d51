"""The static report page: ``results/report/index.html`` from the reproduced tables and figures.

``python -m molabench.report.html [--results results]`` reads what ``molabench.reproduce`` wrote —
``results/tables/table<N>_<name>.json`` for the paper's Tables 1–11 and ``results/figures/figures.json``
with the figures' images — and writes one self-contained page (inline CSS, no script, no fonts or
anything else fetched from a network): a header (budgets, seeds, run counts, the input files and their
SHA-256), the paper's headline claims checked against our numbers (:mod:`molabench.report.claims`),
every table with our mean ± std beside the paper's number and the difference, then the figures.

The page depends on the input files only — no clock, no host, no absolute path — so the same JSONs give
the same bytes. It is ASCII (other characters as HTML character references), whatever the locale.

Differences ours − paper are coloured by the column's direction (green: ours is better, red: worse).
When a table ran on stand-in data (``stand_in`` set), its columns are other data than the paper's, so only
the columns both tables share and that summarise a whole table (``Avg``, ``delta_m``) are compared.
A table whose JSON is absent is listed as not produced; a malformed JSON is a :class:`DataError` naming it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from molabench.atomic import write_text_atomic
from molabench.errors import DataError, MolabenchError
from molabench.report.claims import FAILS, HOLDS, check_claims, verdict_text
from molabench.report.paper import available_tables, load_table
from molabench.reproduce.execute import duration

#: Keys every table JSON must have for the page to show it.
TABLE_KEYS = ("number", "title", "rows", "paper_columns", "our_columns")
#: Columns that summarise a whole table, so a stand-in table can still be compared with the paper on them.
SUMMARY_COLUMNS = ("Avg", "delta_m")
FIX = "re-run `make reproduce` to rewrite it, or delete it"

Table = dict[str, Any]


@dataclass(frozen=True)
class Inputs:
    """What the page is made of: per paper table (by name, in the paper's order) its JSON or None when
    not produced; the figures index (None when absent); every file read, relative to the results folder,
    with its SHA-256."""

    tables: list[tuple[str, Table | None]]
    figures: list[dict[str, Any]] | None
    figures_present: dict[str, bool]
    sources: list[tuple[str, str]]


# ---------------------------------------------------------------- reading the inputs


def _read_json(path: Path, results_dir: Path, sources: list[tuple[str, str]]) -> Any:
    """The parsed JSON of ``path``; records its SHA-256 in ``sources``; a DataError when it cannot be read."""
    try:
        raw = path.read_bytes()
        value = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); {FIX}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc}); {FIX}") from None
    sources.append((path.relative_to(results_dir).as_posix(), hashlib.sha256(raw).hexdigest()))
    return value


def _number_of(name: str) -> int:
    return int(name.removeprefix("table").split("_", 1)[0])


def _checked_table(path: Path, value: Any, number: int) -> Table:
    """``value`` when it has the shape of a table JSON (the keys the page reads), else a one-line DataError."""
    if not isinstance(value, dict):
        raise DataError(f"{path} holds a JSON {type(value).__name__}, not a table; {FIX}")
    missing = [key for key in TABLE_KEYS if key not in value]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}, which the report needs; {FIX}")
    if value["number"] != number:
        raise DataError(f"{path} holds table number {value['number']!r}, not {number}; {FIX}")
    if not (isinstance(value["paper_columns"], list) and isinstance(value["our_columns"], list)):
        raise DataError(f"{path}: paper_columns and our_columns must be lists; {FIX}")
    rows = value["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "label" in r and "status" in r for r in rows):
        raise DataError(f"{path}: rows must be a list of objects with a label and a status; {FIX}")
    for key in ("ours", "paper"):
        if not all(isinstance(r.get(key) or {}, dict) for r in rows):
            raise DataError(f"{path}: every row's {key!r} must be an object; {FIX}")
    return value


def _table_path(tables_dir: Path, name: str) -> Path | None:
    """``tables_dir/<name>.json``, or the one ``table<N>_*.json`` there when the name differs; None when absent."""
    exact = tables_dir / f"{name}.json"
    if exact.is_file():
        return exact
    found = sorted(tables_dir.glob(f"table{_number_of(name)}_*.json"))
    if len(found) > 1:
        raise DataError(f"{tables_dir} holds {len(found)} JSONs for Table {_number_of(name)} ({', '.join(p.name for p in found)}); keep {name}.json only")
    return found[0] if found else None


def load_inputs(results_dir: Path) -> Inputs:
    """Every table JSON and the figures index under ``results_dir`` (checked before anything is written)."""
    if not results_dir.is_dir():
        raise DataError(f"no results folder {results_dir}; run `make reproduce` first (or pass --results)")
    sources: list[tuple[str, str]] = []
    tables: list[tuple[str, Table | None]] = []
    for name in sorted(available_tables(), key=_number_of):
        path = _table_path(results_dir / "tables", name)
        table = None if path is None else _checked_table(path, _read_json(path, results_dir, sources), _number_of(name))
        tables.append((name, table))
    index = results_dir / "figures" / "figures.json"
    figures = None
    present: dict[str, bool] = {}
    if index.is_file():
        figures = _read_json(index, results_dir, sources)
        if not isinstance(figures, list) or not all(isinstance(f, dict) and isinstance(f.get("file"), str) for f in figures):
            raise DataError(f"{index} must be a list of objects with a \"file\" (the image, relative to {index.parent}); {FIX}")
        present = {f["file"]: (index.parent / f["file"]).is_file() for f in figures}
    return Inputs(tables, figures, present, sources)


# ---------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: float, like: float | None = None) -> str:
    """Two decimals, three below 1 (0.045); ``like`` (a std's mean) chooses the decimals instead of ``value``."""
    scale = value if like is None else like
    return f"{value:.2f}" if abs(scale) >= 1 or scale == 0 else f"{value:.3f}"


def _ours_text(cell: dict[str, Any] | None) -> str | None:
    if not cell or cell.get("mean") is None:
        return None
    mean, std = float(cell["mean"]), cell.get("std")
    return _num(mean) + ("" if std is None else f" ± {_num(float(std), mean)}")


def _direction(table: Table, column: str) -> str:
    default = "lower" if column == "delta_m" else "higher"
    return str((table.get("directions") or {}).get(column, default))


def _diff_html(table: Table, column: str, ours: dict[str, Any] | None, paper: Any) -> str:
    """ours − paper, classed ``better``/``worse``/``even`` by the column's direction; empty when one side is absent."""
    if not ours or ours.get("mean") is None or paper is None:
        return ""
    diff = float(ours["mean"]) - float(paper)
    better = diff > 0 if _direction(table, column) == "higher" else diff < 0
    kind = "even" if diff == 0 else "better" if better else "worse"
    word = {"even": "equal to", "better": "better than", "worse": "worse than"}[kind]
    return f'<span class="diff {kind}" title="ours {word} the paper">{_e(f"{diff:+.2f}")}</span>'


def _status_html(table: Table, row: dict[str, Any]) -> str:
    status = str(row.get("status"))
    seeds = row.get("seeds")
    planned = len(table.get("seeds") or [])
    if status == "ok":
        words = f"ok ({seeds} seed{'s' if seeds != 1 else ''})"
    elif status == "partial":
        words = f"partial ({seeds} of {planned} seeds)"
    else:
        words = status
    reason = row.get("reason")
    if reason and status != "ok":
        words = str(reason) if str(reason).startswith(status) else f"{words}: {reason}"
    return f'<td class="status st-{_e(status.replace(" ", "-"))}">{_e(words)}</td>'


def _paper_text(value: Any) -> str:
    return "–" if value is None else _num(float(value))


# ---------------------------------------------------------------- the page's parts


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d2125; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; }
table { border-collapse: collapse; font-size: .82rem; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .25rem .45rem; vertical-align: top; text-align: left; }
thead th { background: #f3f5f7; }
td.num { text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; }
.ours { display: block; font-weight: 600; }
.paper { display: block; color: #57606a; }
.diff { display: block; }
.better { color: #116329; }
.worse { color: #b42318; }
.even { color: #57606a; }
.status { font-size: .78rem; min-width: 8rem; max-width: 16rem; }
.st-ok { color: #116329; }
.st-partial, .st-not-run { color: #8a5a00; }
.st-missing { color: #57606a; }
.st-failed { color: #b42318; }
.notice { background: #fff8c5; border: 1px solid #d4a72c; padding: .4rem .6rem; }
.not-produced .notice { background: #ffebe9; border-color: #cf222e; }
.meta { color: #57606a; font-size: .9rem; }
.v-holds { background: #dafbe1; }
.v-fails { background: #ffebe9; }
.v-na { background: #eaeef2; }
.spread { font-style: italic; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: .9rem; }
code { font-size: .85rem; }
"""


def _header(inputs: Inputs) -> list[str]:
    produced = [t for _, t in inputs.tables if t is not None]
    budgets = sorted({str(t.get("budget")) for t in produced if t.get("budget") is not None})
    seeds = sorted({s for t in produced for s in t.get("seeds") or []}, key=str)
    runs = {key: sum(int((t.get("runs") or {}).get(key) or 0) for t in produced) for key in ("planned", "complete", "failed", "to_do")}
    lines = [
        "<header>",
        "<h1>MoLA reproduction report</h1>",
        '<p class="meta">The paper\'s Tables 1–11 and figures reproduced by molabench, beside the paper\'s printed numbers.</p>',
        "<ul>",
        f"<li>Tables produced: {len(produced)} of {len(inputs.tables)}</li>",
        f"<li>Budget(s): {_e(', '.join(budgets) or 'none recorded')}</li>",
        f"<li>Seeds: {_e(', '.join(str(s) for s in seeds) or 'none recorded')}</li>",
        f"<li>Runs (summed over the tables; a run two tables share counts in both): {runs['complete']} complete, "
        f"{runs['failed']} failed, {runs['to_do']} to do, of {runs['planned']} planned</li>",
        "</ul>",
        "<details><summary>Generated from these files (SHA-256)</summary><ul>",
    ]
    lines += [f"<li><code>{_e(path)}</code> <code>{_e(digest)}</code></li>" for path, digest in inputs.sources]
    if not inputs.sources:
        lines.append("<li>no input files (nothing reproduced yet)</li>")
    lines += ["</ul></details>", "<nav><p>"]
    links = [f'<a href="#table{_number_of(name)}">Table {_number_of(name)}</a>' for name, _ in inputs.tables]
    lines += [" · ".join(['<a href="#claims">Claims</a>', *links, '<a href="#figures">Figures</a>']), "</p></nav>", "</header>"]
    return lines


def _claims_section(claims: list[dict[str, Any]]) -> list[str]:
    lines = [
        '<section id="claims">',
        "<h2>The paper's claims, checked</h2>",
        '<p class="meta">Each claim is judged on our means and, with the same rule, on the paper\'s numbers. '
        "Within the seeds' spread: the two means differ by less than the larger of their standard deviations.</p>",
        '<div class="scroll"><table>',
        "<thead><tr><th>Claim</th><th>Tables</th><th>Verdict (ours)</th><th>Our numbers</th><th>The paper's numbers</th></tr></thead>",
        "<tbody>",
    ]
    for claim in claims:
        kind = {HOLDS: "v-holds", FAILS: "v-fails"}.get(claim["verdict"], "v-na")
        spread = " spread" if claim.get("within_spread") else ""
        tables = ", ".join(str(n) for n in claim["tables"])
        lines.append(
            f'<tr><td>{_e(claim["claim"])}</td><td>{_e(tables)}</td><td class="{kind}{spread}">{_e(verdict_text(claim))}</td>'
            f'<td>{_e(claim["evidence"])}</td><td>{_e(claim["paper"])}</td></tr>'
        )
    lines += ["</tbody></table></div>", "</section>"]
    return lines


def _meta_line(table: Table) -> str:
    runs = table.get("runs") or {}
    parts = [
        f"budget {table.get('budget') or '–'}",
        f"seeds {', '.join(str(s) for s in table.get('seeds') or []) or '–'}",
        f"data {table.get('data') or '–'}" + (f" (paper: {table['paper_data']})" if table.get("paper_data") else ""),
    ]
    if runs:
        parts.append(f"runs: {runs.get('complete', 0)} of {runs.get('planned', 0)} complete, {runs.get('failed', 0)} failed, {runs.get('to_do', 0)} to do")
    if runs.get("wall_s"):
        parts.append(f"wall time of the complete runs {duration(float(runs['wall_s']))}")
    return f'<p class="meta">{_e(" · ".join(parts))}</p>'


def _same_data_table(table: Table) -> list[str]:
    """Ours, the paper's and ours − paper stacked in one cell per column (the columns are the paper's)."""
    columns = [str(c) for c in table["paper_columns"]]
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    lines = [f"<thead><tr><th>Row</th><th>Status</th>{head}</tr></thead>", "<tbody>"]
    for row in table["rows"]:
        cells = []
        for column in columns:
            ours = (row.get("ours") or {}).get(column)
            paper = (row.get("paper") or {}).get(column)
            text = _ours_text(ours)
            body = f'<span class="ours">{_e(text)}</span>' if text else '<span class="ours">–</span>'
            body += f'<span class="paper" title="the paper">{_e(_paper_text(paper))}</span>' + _diff_html(table, column, ours, paper)
            cells.append(f'<td class="num">{body}</td>')
        lines.append(f"<tr><th>{_e(row['label'])}</th>{_status_html(table, row)}{''.join(cells)}</tr>")
    lines.append("</tbody>")
    return lines


def _comparable(table: Table) -> list[str]:
    ours = {str(c) for c in table["our_columns"]}
    return [str(c) for c in table["paper_columns"] if c in SUMMARY_COLUMNS and str(c) in ours]


def _stand_in_table(table: Table) -> list[str]:
    """Our columns, then the paper's, then ours − paper on the summary columns only (the data differ)."""
    ours_cols, paper_cols = [str(c) for c in table["our_columns"]], [str(c) for c in table["paper_columns"]]
    compared = _comparable(table)
    ours_data, paper_data = table.get("data") or "stand-in data", table.get("paper_data") or "the paper's data"
    lines = [
        '<thead><tr><th rowspan="2">Row</th><th rowspan="2">Status</th>'
        f'<th colspan="{len(ours_cols)}">ours ({_e(ours_data)})</th>'
        f'<th colspan="{len(paper_cols)}">paper ({_e(paper_data)})</th>'
        + (f'<th colspan="{len(compared)}">ours − paper</th>' if compared else "")
        + "</tr>",
        "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in [*ours_cols, *paper_cols, *compared]) + "</tr></thead>",
        "<tbody>",
    ]
    for row in table["rows"]:
        ours, paper = row.get("ours") or {}, row.get("paper") or {}
        cells = [f'<td class="num">{_e(_ours_text(ours.get(c)) or "–")}</td>' for c in ours_cols]
        cells += [f'<td class="num">{_e(_paper_text(paper.get(c)))}</td>' for c in paper_cols]
        cells += [f'<td class="num">{_diff_html(table, c, ours.get(c), paper.get(c))}</td>' for c in compared]
        lines.append(f"<tr><th>{_e(row['label'])}</th>{_status_html(table, row)}{''.join(cells)}</tr>")
    lines.append("</tbody>")
    return lines


def _table_section(name: str, table: Table | None) -> list[str]:
    number = _number_of(name)
    if table is None:
        return [
            f'<section class="table not-produced" id="table{number}">',
            f"<h2>{_e(load_table(name).caption)}</h2>",
            f'<p class="notice">Not produced: <code>tables/{_e(name)}.json</code> is absent. Run <code>make reproduce</code> to produce it.</p>',
            "</section>",
        ]
    lines = [f'<section class="table" id="table{number}">', f"<h2>{_e(table['title'])}</h2>", _meta_line(table)]
    if table.get("stand_in"):
        compared = _comparable(table)
        which = " and ".join(compared) if compared else "no column"
        lines.append(
            f'<p class="notice stand-in">Stand-in data: {_e(table["stand_in"])}. Our columns are other data than the paper\'s, '
            f"so only {_e(which)} {'is' if len(compared) == 1 else 'are'} compared with the paper (ours − paper).</p>"
        )
        body = _stand_in_table(table)
    else:
        body = _same_data_table(table)
    if table.get("stand_in"):
        legend = "Cells: our mean ± std over seeds, the paper's number (– where the paper printed none)"
    else:
        legend = "Each cell: our mean ± std over seeds (bold), the paper's number (grey; – where the paper printed none)"
    lines.append(f'<p class="meta">{_e(legend)}, and ours − paper: green where ours is better in the column\'s direction, red where worse.</p>')
    lines += ['<div class="scroll"><table>', *body, "</table></div>"]
    return [*lines, "</section>"]


def _figures_section(inputs: Inputs) -> list[str]:
    lines = ['<section id="figures">', "<h2>Figures</h2>"]
    if inputs.figures is None:
        lines.append('<p class="notice">No figures: <code>figures/figures.json</code> is absent. Run <code>make reproduce</code> to produce them.</p>')
    elif not inputs.figures:
        lines.append('<p class="notice">The figures index lists no figures.</p>')
    for figure in inputs.figures or []:
        file = figure["file"]
        title = figure.get("title") or file
        lines += ["<figure>", f"<h3>{_e(title)}</h3>"]
        if inputs.figures_present.get(file):
            lines.append(f'<img src="../figures/{_e(quote(file))}" alt="{_e(title)}">')
        else:
            lines.append(f'<p class="notice">Image missing: <code>figures/{_e(file)}</code> is listed but absent.</p>')
        caption = [f"<b>The paper:</b> {_e(figure['caption'])}" if figure.get("caption") else "",
                   f"<b>What differs here:</b> {_e(figure['differs'])}" if figure.get("differs") else ""]
        lines += [f"<figcaption>{'<br>'.join(c for c in caption if c)}</figcaption>", "</figure>"]
    return [*lines, "</section>"]


def render(inputs: Inputs) -> str:
    """The page's HTML (ASCII: other characters as character references)."""
    claims = check_claims([t for _, t in inputs.tables if t is not None])
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>MoLA reproduction report</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        *_header(inputs),
        "<main>",
        *_claims_section(claims),
    ]
    for name, table in inputs.tables:
        lines += _table_section(name, table)
    lines += [*_figures_section(inputs), "</main>", "</body>", "</html>"]
    return ("\n".join(lines) + "\n").encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_report(results_dir: Path) -> Path:
    """Write ``results_dir/report/index.html`` atomically from the tables and figures there; its path."""
    results_dir = Path(results_dir)
    page = render(load_inputs(results_dir))  # every input checked before the page is replaced
    return write_text_atomic(results_dir / "report" / "index.html", page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the static report page results/report/index.html.")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (holds tables/ and figures/)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.results)
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
