"""The paper's headline claims, checked against the reproduced tables (``results/tables/table<N>_*.json``).

Every claim is judged twice, with the same rule: on our means (the verdict) and on the paper's printed
numbers of the same rows (the ``paper`` text), so a reader sees that the claim is the paper's, whether the
paper's own numbers support it, and whether our runs reproduce it.

A claim is a list of comparisons "row A beats row B in column C" (higher or lower is better as the
table's ``directions`` say; ``delta_m`` is lower-is-better, everything else higher-is-better by default):

* **holds** — every comparison goes the claimed way (a tie does not);
* **does not hold** — at least one goes the other way;
* **not measurable here** — a row it needs has no number of ours (missing, failed, not run, or the
  whole table was not produced); the evidence says which row and why.

The seeds' spread: a comparison is *within the seeds' spread* when ``|mean_A − mean_B| < max(std_A, std_B)``
(a std over one seed is null and counts as 0). A verdict carries ``within_spread``: for "holds", some
comparison it rests on is within the spread (the ordering is not resolved by our seeds); for "does not hold",
every comparison that failed is within the spread (the failure is not resolved either).
:func:`verdict_text` spells this out, e.g. "holds (within the seeds' spread)".

"Best setting" claims (Tables 6, 7, 10, 11) compare the setting the paper found best (its best value in
the column) with ours: holds when our best measured setting is the paper's; within the spread when the
runner-up (holds) or our value at the paper's best setting (does not hold) is within the spread of our best.
Our value at the paper's best setting must be measured, else the claim is not measurable.

Rows that ran on only some seeds ("partial") count, and the evidence says how many seeds they had.
A table that was not produced is checked on the paper's CSV alone: its claims are not measurable here but
still say what the paper's numbers show.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from molabench.report.paper import available_tables, load_table

HOLDS, FAILS, UNMEASURABLE = "holds", "does not hold", "not measurable here"
SPREAD = "within the seeds' spread"

ROUTER = (("mola_router",), ("MoLA-Router",))
GRAD = (("mola_grad",), ("MoLA-Grad",))
HPS = (("hps", "ew"), ("HPS", "HSP"))
UNIFORM = (("uniform",), ("Uniform",))
SINGLE_TASK = (("single_task",), ("Single-Task",))

Table = dict[str, Any]
Row = dict[str, Any]


@dataclass(frozen=True)
class Value:
    """One row's number in one column: ours (mean ± std over seeds) or the paper's (no std)."""

    label: str
    mean: float
    std: float | None = None
    note: str = ""  # e.g. "2 of 3 seeds" for a partial row

    def show(self) -> str:
        spread = f" ± {_number(self.std, self.mean)}" if self.std is not None else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.label} {_number(self.mean)}{spread}{note}"


#: What a lookup gives: the value, or the reason (one phrase) why there is none.
Lookup = Value | str


@dataclass(frozen=True)
class Comparison:
    """``a`` beats ``b`` in a column whose better direction is ``direction``."""

    a: Value
    b: Value
    direction: str

    @property
    def diff(self) -> float:
        return self.a.mean - self.b.mean

    @property
    def holds(self) -> bool:
        return self.diff > 0 if self.direction == "higher" else self.diff < 0

    @property
    def within_spread(self) -> bool:
        return abs(self.diff) < max(self.a.std or 0.0, self.b.std or 0.0)

    def show(self) -> str:
        sign = ">" if self.a.mean > self.b.mean else "<" if self.a.mean < self.b.mean else "="
        spread = f", {SPREAD}" if self.within_spread else ""
        return f"{self.a.show()} {sign} {self.b.show()} (diff {self.diff:+.2f}{spread})"


@dataclass(frozen=True)
class Judgement:
    verdict: str
    within_spread: bool
    text: str


def verdict_text(claim: dict[str, Any]) -> str:
    """The verdict as a reader should see it: "holds (within the seeds' spread)" when the seeds do not resolve it."""
    return f"{claim['verdict']} ({SPREAD})" if claim.get("within_spread") else str(claim["verdict"])


# ---------------------------------------------------------------- number formatting and lookups


def _number(value: float, like: float | None = None) -> str:
    """Two decimals, three below 1 (0.045); ``like`` (a std's mean) chooses the decimals instead of ``value``."""
    scale = value if like is None else like
    return f"{value:.2f}" if abs(scale) >= 1 or scale == 0 else f"{value:.3f}"


def _direction(table: Table, column: str) -> str:
    default = "lower" if column == "delta_m" else "higher"
    return str((table.get("directions") or {}).get(column, default))


def _find(table: Table, methods: Sequence[str], labels: Sequence[str]) -> Row | None:
    """The first row whose method is one of ``methods`` or whose label is one of ``labels``."""
    for row in table.get("rows") or []:
        if row.get("method") in methods or row.get("label") in labels:
            return row
    return None


def _ours(table: Table, row: Row | None, column: str, name: str) -> Lookup:
    """Our mean ± std of ``row`` in ``column``, or why there is none (``name`` labels the row in the text)."""
    if row is None:
        return f"{name}: no such row in Table {table.get('number')}"
    status = row.get("status")
    if status == "not produced":  # the whole table is absent: one reason, not one per row
        return str(row.get("reason") or f"Table {table.get('number')} was not produced")
    cell = (row.get("ours") or {}).get(column) or {}
    if status not in ("ok", "partial") or cell.get("mean") is None:
        why = str(row.get("reason") or (f"no {column} value" if status in ("ok", "partial") else ""))
        if why.startswith(str(status)):  # "not run yet (...)" says its status already
            return f"{name}: {why}"
        return f"{name}: {status}" + (f" ({why})" if why else "")
    note = ""
    if status == "partial":
        note = f"{row.get('seeds')} of {len(table.get('seeds') or [])} seeds"
    return Value(name, float(cell["mean"]), None if cell.get("std") is None else float(cell["std"]), note)


def _paper(row: Row | None, column: str, name: str) -> Lookup:
    if row is None:
        return f"{name}: not in the paper's table"
    value = (row.get("paper") or {}).get(column)
    return f"{name}: the paper printed no {column}" if value is None else Value(name, float(value))


def _pair(table: Table, row: Row | None, column: str, name: str) -> tuple[Lookup, Lookup]:
    return _ours(table, row, column, name), _paper(row, column, name)


def _reasons(missing: Sequence[str]) -> str:
    """Why rows have no number, grouped by reason: "not run yet: HPS, MoLA-Grad; failed (...): CGC".

    ``missing`` holds "<row>: <why>" phrases (or a bare reason, e.g. "Table 4 was not produced").
    """
    grouped: dict[str, list[str]] = {}
    for text in missing:
        name, sep, why = text.partition(": ")
        if sep:
            names = grouped.setdefault(why, [])
            if name not in names:
                names.append(name)
        else:
            grouped.setdefault(text, [])
    return "; ".join(f"{why}: {', '.join(names)}" if names else why for why, names in grouped.items())


# ---------------------------------------------------------------- judging lists of comparisons


def _judge(pairs: Iterable[tuple[Lookup, Lookup]], direction: str) -> Judgement:
    """Every ``a`` beats its ``b``: the verdict, whether the seeds resolve it, and the numbers in words."""
    pairs = list(pairs)
    missing = [side for pair in pairs for side in pair if isinstance(side, str)]
    if missing:
        return Judgement(UNMEASURABLE, False, _reasons(missing))
    comparisons = [Comparison(a, b, direction) for a, b in pairs if isinstance(a, Value) and isinstance(b, Value)]
    return _verdict_of(comparisons)


def _verdict_of(comparisons: Sequence[Comparison], require: Callable[[], str] | None = None) -> Judgement:
    """Holds when every comparison holds; ``require`` may name what is still unmeasured (then not measurable)."""
    failed = [c for c in comparisons if not c.holds]
    text = "; ".join(c.show() for c in comparisons)
    if failed:
        return Judgement(FAILS, all(c.within_spread for c in failed), text)
    gap = require() if require else ""
    if gap:
        return Judgement(UNMEASURABLE, False, f"{text}; {gap}" if text else gap)
    if not comparisons:
        return Judgement(UNMEASURABLE, False, "nothing to compare")
    return Judgement(HOLDS, any(c.within_spread for c in comparisons), text)


def _claim(claim: str, tables: list[int], ours: Judgement, paper: Judgement) -> dict[str, Any]:
    paper_words = f"{paper.verdict} on the paper's numbers: {paper.text}"
    return {
        "claim": claim,
        "tables": tables,
        "verdict": ours.verdict,
        "within_spread": ours.within_spread,
        "evidence": f"ours: {ours.text}",
        "paper_verdict": paper.verdict,
        "paper": paper_words,
    }


# ---------------------------------------------------------------- the claims


def _chain_claim(table: Table, column: str, rows: Sequence[tuple[str, tuple[Sequence[str], Sequence[str]]]]) -> dict[str, Any]:
    """(a) rows[0] > rows[1] > ... in ``column`` (adjacent pairs compared)."""
    found = [(name, _find(table, *keys)) for name, keys in rows]
    direction = _direction(table, column)
    ours, paper = [], []
    for (name_a, row_a), (name_b, row_b) in pairwise(found):
        (oa, pa), (ob, pb) = _pair(table, row_a, column, name_a), _pair(table, row_b, column, name_b)
        ours.append((oa, ob))
        paper.append((pa, pb))
    text = " > ".join(name for name, _ in rows)
    number = int(table["number"])
    return _claim(f"Table {number}: {text} in {column}", [number], _judge(ours, direction), _judge(paper, direction))


def _beats_claim(table: Table, column: str, winners: Sequence[tuple[str, Any]], loser: tuple[str, Any]) -> dict[str, Any]:
    """(b) each of ``winners`` beats ``loser`` in ``column``."""
    direction = _direction(table, column)
    loser_row = _find(table, *loser[1])
    lo, lp = _pair(table, loser_row, column, loser[0])
    ours, paper = [], []
    for name, keys in winners:
        wo, wp = _pair(table, _find(table, *keys), column, name)
        ours.append((wo, lo))
        paper.append((wp, lp))
    number = int(table["number"])
    text = " and ".join(name for name, _ in winners)
    verb = "beat" if len(winners) > 1 else "beats"
    return _claim(f"Table {number}: {text} {verb} {loser[0]} in {column}", [number], _judge(ours, direction), _judge(paper, direction))


def _is_mola(row: Row) -> bool:
    return row.get("method") in ("mola_router", "mola_grad") or str(row.get("label", "")).startswith("MoLA")


def _best_row_judgement(values: Sequence[Lookup], direction: str, of_what: str, total: int) -> Judgement:
    """The best measured row is a MoLA row; the comparison is best MoLA vs best other row."""
    measured = [v for v in values if isinstance(v, Value)]
    mola = [v for v in measured if v.label.startswith("MoLA")]
    others = [v for v in measured if not v.label.startswith("MoLA")]
    if not mola or not others:
        lacking = "no MoLA row" if not mola else "no other row"
        reasons = _reasons([v for v in values if isinstance(v, str) and (v.startswith("MoLA") or not others)])
        return Judgement(UNMEASURABLE, False, f"{lacking} has a {of_what} value" + (f" ({reasons})" if reasons else ""))
    pick = max if direction == "higher" else min
    best_mola = pick(mola, key=lambda v: v.mean)
    best_other = pick(others, key=lambda v: v.mean)
    judgement = _verdict_of([Comparison(best_mola, best_other, direction)])
    scope = f"among the {len(measured)} of {total} rows with a {of_what} value"
    return Judgement(judgement.verdict, judgement.within_spread, f"{scope}, best MoLA vs best other: {judgement.text}")


def _table5_claim(table: Table) -> dict[str, Any]:
    """(c) MoLA (Router or Grad) has the best Δm% of all rows (Single-Task, the reference, left out)."""
    column = "delta_m"
    direction = _direction(table, column)
    rows = [r for r in table.get("rows") or [] if r.get("method") not in SINGLE_TASK[0] and r.get("label") not in SINGLE_TASK[1]]
    ours = [_ours(table, r, column, str(r.get("label"))) for r in rows]
    paper = [_paper(r, column, str(r.get("label"))) for r in rows]
    return _claim(
        "Table 5: MoLA (Router or Grad) has the best (lowest) Δm% of all rows (Single-Task, the reference, left out)",
        [5],
        _best_row_judgement(ours, direction, column, len(rows)),
        _best_row_judgement(paper, direction, column, len(rows)),
    )


def _best_setting(table: Table, settings: Sequence[tuple[str, Row]], column: str, what: str, claim: str) -> dict[str, Any]:
    """(d, e, g) the paper's best setting (by its value in ``column``) is also ours."""
    direction = _direction(table, column)
    pick = max if direction == "higher" else min
    paper = [(s, _paper(r, column, _setting(what, s))) for s, r in settings]
    ours = [(s, _ours(table, r, column, _setting(what, s))) for s, r in settings]
    paper_values = [(s, v) for s, v in paper if isinstance(v, Value)]
    number = int(table["number"])
    if not paper_values:
        why = "the paper printed no values" if settings else f"Table {number} has no rows labelled like the paper's settings"
        nothing = Judgement(UNMEASURABLE, False, why)
        return _claim(claim, [number], nothing, nothing)
    paper_best = pick(paper_values, key=lambda sv: sv[1].mean)[0]
    listed = ", ".join(v.show() for _, v in paper_values)
    paper_text = f"best {_setting(what, paper_best)} ({listed})"
    paper_judgement = Judgement(HOLDS, False, paper_text)
    measured = [(s, v) for s, v in ours if isinstance(v, Value)]
    at_paper_best = dict(ours)[paper_best]
    if isinstance(at_paper_best, str) or len(measured) < 2:
        our_best = f"; our best measured: {pick(measured, key=lambda sv: sv[1].mean)[1].show()}" if measured else ""
        unmeasured = _reasons([v for _, v in ours if isinstance(v, str)])
        why = "fewer than two settings measured" if isinstance(at_paper_best, Value) else f"the paper's best {_setting(what, paper_best)} is not measured"
        unmeasured = f" ({unmeasured})" if unmeasured else ""
        return _claim(claim, [number], Judgement(UNMEASURABLE, False, f"{why}{our_best}{unmeasured}"), paper_judgement)
    our_best, our_value = pick(measured, key=lambda sv: sv[1].mean)
    listed = ", ".join(v.show() for _, v in measured)
    if our_best == paper_best:
        runner_up = pick([sv for sv in measured if sv[0] != our_best], key=lambda sv: sv[1].mean)[1]
        within = Comparison(our_value, runner_up, direction).within_spread
        spread = f" ({SPREAD})" if within else ""
        ours_j = Judgement(HOLDS, within, f"best {_setting(what, our_best)}, as in the paper; runner-up {runner_up.label}{spread} ({listed})")
    else:
        within = Comparison(our_value, at_paper_best, direction).within_spread
        spread = f" ({SPREAD} of ours at {_setting(what, paper_best)})" if within else ""
        ours_j = Judgement(FAILS, within, f"our best is {_setting(what, our_best)}, the paper's {_setting(what, paper_best)}{spread} ({listed})")
    return _claim(claim, [number], ours_j, paper_judgement)


def _setting(what: str, setting: str) -> str:
    """A setting in words: ``r=4`` (``what`` = "r"), or the bare label (``what`` empty, e.g. "Block4")."""
    return f"{what}={setting}" if what else setting


def _labelled(table: Table, pattern: str) -> list[tuple[re.Match[str], Row]]:
    out = []
    for row in table.get("rows") or []:
        match = re.fullmatch(pattern, str(row.get("label", "")))
        if match:
            out.append((match, row))
    return out


def _table6_claims(table: Table) -> list[dict[str, Any]]:
    """(d) per method: the paper's best adapter rank r (Avg) vs ours."""
    claims = []
    for short in ("Router", "Grad"):
        settings = [(m.group(1), r) for m, r in _labelled(table, rf"{short}\(r=(\d+)\)")]
        claims.append(_best_setting(table, settings, "Avg", "r", f"Table 6: MoLA-{short}'s best adapter rank r (Avg) is the paper's"))
    return claims


def _table7_claims(table: Table) -> list[dict[str, Any]]:
    """(e) the best MoLA placement (lowest Δm%) is the paper's; and MoLA in any block beats "Without MoLA"."""
    column = "delta_m"
    direction = _direction(table, column)
    placements = [(str(r.get("label")), r) for r in table.get("rows") or [] if r.get("label") != "Without MoLA"]
    best = _best_setting(table, placements, column, "", "Table 7: the best MoLA placement (lowest Δm%) is the paper's")
    without = _find(table, (), ("Without MoLA",))
    wo, wp = _pair(table, without, column, "Without MoLA")
    ours = [_ours(table, r, column, name) for name, r in placements]
    paper = [_paper(r, column, name) for name, r in placements]

    def anywhere(values: list[Lookup], base: Lookup) -> Judgement:
        if isinstance(base, str):
            return Judgement(UNMEASURABLE, False, base)
        measured = [Comparison(v, base, direction) for v in values if isinstance(v, Value)]
        if not measured:
            return Judgement(UNMEASURABLE, False, "no placement measured")
        j = _verdict_of(measured)
        return Judgement(j.verdict, j.within_spread, f"{len(measured)} of {len(values)} placements measured: {j.text}")

    beats = _claim("Table 7: MoLA in any block beats Without MoLA (lower Δm%)", [7], anywhere(ours, wo), anywhere(paper, wp))
    return [best, beats]


def _grouped_claim(
    table: Table, pattern: str, column: str, claim: str, pairs_of: Callable[[dict[str, Row]], list[tuple[str, str]]],
    group_names: Callable[[re.Match[str]], tuple[str, str]], needed: Sequence[str] = (),
) -> dict[str, Any]:
    """Comparisons within groups of rows (Tables 8, 9): each group's rows keyed by a role (e.g. "HPS").

    ``group_names(match)`` is (group, role) of a row; ``pairs_of(roles)`` the (winner, loser) roles to compare.
    Holds when every measured comparison holds and every group named in ``needed`` has one measured.
    """
    direction = _direction(table, column)
    groups: dict[str, dict[str, Row]] = {}
    for match, row in _labelled(table, pattern):
        group, role = group_names(match)
        groups.setdefault(group, {})[role] = row

    def judge(lookup: Callable[[Row, str], Lookup]) -> Judgement:
        comparisons, missing, measured_groups = [], [], set()
        for group, roles in groups.items():
            for winner, loser in pairs_of(roles):
                a, b = lookup(roles[winner], f"{group} {winner}"), lookup(roles[loser], f"{group} {loser}")
                if isinstance(a, Value) and isinstance(b, Value):
                    comparisons.append(Comparison(a, b, direction))
                    measured_groups.add(group.split(":")[-1].lower())
                else:
                    missing += [side for side in (a, b) if isinstance(side, str)]
        lacking = [n for n in needed if n.lower() not in measured_groups]

        def gap() -> str:
            if lacking:
                return f"nothing measured for {', '.join(lacking)}" + (f" ({_reasons(missing)})" if missing else "")
            return ""

        if not comparisons:
            return Judgement(UNMEASURABLE, False, _reasons(missing) or "no rows to compare")
        return _verdict_of(comparisons, gap)

    number = int(table["number"])
    return _claim(claim, [number], judge(lambda r, n: _ours(table, r, column, n)), judge(lambda r, n: _paper(r, column, n)))


def _table8_claim(table: Table) -> dict[str, Any]:
    """(f) MoLA-Router and MoLA-Grad each beat HPS in Avg, per dataset, with both backbones."""

    def names(m: re.Match[str]) -> tuple[str, str]:
        backbone = "ResNet" if m.group(3).lower() == "resnet" else "Transformer"
        return f"{m.group(1)}:{backbone}", m.group(2)

    def pairs(roles: dict[str, Row]) -> list[tuple[str, str]]:
        return [(w, "HPS") for w in ("Router", "Grad") if w in roles and "HPS" in roles]

    return _grouped_claim(
        table, r"(\w+):(HPS|Router|Grad) \((\w+)\)", "Avg",
        "Table 8: MoLA-Router and MoLA-Grad beat HPS in Avg with both backbones (ResNet and Transformer)",
        pairs, names, needed=("ResNet", "Transformer"),
    )


def _table9_claim(table: Table) -> dict[str, Any]:
    """A shared router beats a non-shared one (same blocks, same data) in Avg."""

    def names(m: re.Match[str]) -> tuple[str, str]:
        return f"{m.group(1)} ({m.group(3)})", m.group(2)

    def pairs(roles: dict[str, Row]) -> list[tuple[str, str]]:
        return [("Shared", "Non-shared")] if {"Shared", "Non-shared"} <= set(roles) else []

    return _grouped_claim(table, r"(\w+):(Shared|Non-shared) \(([\d+]+)\)", "Avg", "Table 9: a shared router beats a non-shared one in Avg (same data, same blocks)", pairs, names)


def _table10_claim(table: Table) -> dict[str, Any]:
    """(g) the paper's best router-embedding dimension ω (Avg) vs ours."""
    settings = [(m.group(1), r) for m, r in _labelled(table, r"Router \(=(\d+)\)")]
    return _best_setting(table, settings, "Avg", "ω dim", "Table 10: the best router-embedding dimension ω (Avg) is the paper's")


def _table11_claims(table: Table) -> list[dict[str, Any]]:
    """(g) per dataset: the paper's best number of experts E (Avg) vs ours."""
    by_data: dict[str, list[tuple[str, Row]]] = {}
    for m, r in _labelled(table, r"(\w+):Router \(=(\d+)\)"):
        by_data.setdefault(m.group(1), []).append((m.group(2), r))
    if not by_data:  # no row labelled "<data>:Router (=E)": one claim that says so
        return [_best_setting(table, [], "Avg", "E", "Table 11: the best number of experts E (Avg) is the paper's")]
    return [_best_setting(table, settings, "Avg", "E", f"Table 11 ({data}): the best number of experts E (Avg) is the paper's") for data, settings in by_data.items()]


# ---------------------------------------------------------------- entry point


def _paper_only(number: int) -> Table:
    """Table ``number`` from the paper's CSV, every row "not produced": its claims still show the paper's numbers."""
    name = next(n for n in available_tables() if n.startswith(f"table{number}_"))
    paper = load_table(name)
    rows = [
        {"label": label, "method": None, "status": "not produced", "reason": f"Table {number} was not produced", "seeds": 0, "ours": {}, "paper": values}
        for label, values in paper.rows.items()
    ]
    directions = {c: "lower" if c == "delta_m" else "higher" for c in paper.columns}
    return {"number": number, "name": name, "title": paper.caption, "seeds": [], "paper_columns": paper.columns, "our_columns": paper.columns, "directions": directions, "rows": rows}


def check_claims(tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's headline claims, each as ``{"claim", "tables", "verdict", "within_spread", "evidence",
    "paper_verdict", "paper"}`` (see the module docstring for the rules); ``tables`` are the table JSONs
    (any subset of Tables 1–11; an absent one is checked on the paper's numbers only)."""
    by_number: dict[int, Table] = {int(t["number"]): t for t in tables}

    def table(n: int) -> Table:
        return by_number.get(n) or _paper_only(n)

    avg = "Avg"
    claims = []
    for n in (2, 3):  # (a) the domain tables
        claims.append(_chain_claim(table(n), avg, [("MoLA-Router", ROUTER), ("MoLA-Grad", GRAD), ("HPS", HPS), ("Uniform", UNIFORM)]))
    for n in (1, 4, 2, 3):  # (b) the multi-input tables, and the same headline on the domain tables
        claims.append(_beats_claim(table(n), avg, [("MoLA-Router", ROUTER), ("MoLA-Grad", GRAD)], ("HPS", HPS)))
    claims.append(_table5_claim(table(5)))  # (c)
    claims += _table6_claims(table(6))  # (d)
    claims += _table7_claims(table(7))  # (e)
    claims.append(_table8_claim(table(8)))  # (f)
    claims.append(_table9_claim(table(9)))
    claims.append(_table10_claim(table(10)))  # (g)
    claims += _table11_claims(table(11))
    return claims


def claims_markdown(claims: Sequence[dict[str, Any]], budget: str) -> str:
    """The claims as a Markdown section (``results/tables/claims.md``, indexed in the tables' README)."""
    counts = {v: sum(1 for c in claims if c["verdict"] == v) for v in (HOLDS, FAILS, UNMEASURABLE)}
    lines = [
        f"## The paper's claims on these runs (budget {budget})",
        "",
        f"{counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[UNMEASURABLE]} are not measurable here "
        "(rules: `molabench/report/claims.py`; a comparison is within the seeds' spread when the means differ by less than "
        "the larger std).",
        "",
        "| claim | ours | evidence | the paper's own numbers |",
        "|---|---|---|---|",
    ]
    for c in claims:
        cells = [c["claim"], verdict_text(c), c["evidence"].removeprefix("ours: "), c["paper"]]
        lines.append("| " + " | ".join(str(x).replace("|", "/") for x in cells) + " |")
    return "\n".join(lines) + "\n"

