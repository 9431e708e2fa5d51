"""The static report page (molabench.report.html) and the paper's claims checked on it (molabench.report.claims).

Fixtures are table JSONs as ``molabench.reproduce`` writes them, built from the paper's CSVs with made-up
numbers of ours. One test renders the page in a real headless Chromium (screenshot, DOM, console errors).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from molabench.errors import DataError
from molabench.report.claims import FAILS, HOLDS, UNMEASURABLE, check_claims, verdict_text
from molabench.report.html import main as html_main
from molabench.report.html import write_report
from molabench.report.paper import PAPER_LABELS, available_tables, load_table

SEEDS = [0, 1, 2]
METHOD_OF = {label: method for method, labels in reversed(list(PAPER_LABELS.items())) for label in labels}


def table_json(name: str, ours: dict[str, dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """Table ``name`` as reproduce writes it: every paper row; rows named in ``ours`` ran ("ok") with those
    cells (a number = mean with std 0.1, a pair = (mean, std)); the others "not run"."""
    paper = load_table(name)
    ours = ours or {}
    rows = []
    for label, values in paper.rows.items():
        cells = {c: {"mean": v[0], "std": v[1]} if isinstance(v, tuple) else {"mean": v, "std": 0.1} for c, v in ours.get(label, {}).items()}
        ran = label in ours
        rows.append({
            "label": label, "method": METHOD_OF.get(label), "status": "ok" if ran else "not run",
            "reason": None if ran else "not run yet (re-run make reproduce)", "seeds": len(SEEDS) if ran else 0,
            "ours": cells, "paper": values,
        })
    number = int(name.removeprefix("table").split("_")[0])
    columns = list(paper.columns)
    table = {
        "number": number, "name": name, "title": f"Table {number}: {name} (fixture)", "budget": "cpu", "seeds": SEEDS,
        "data": name.split("_", 1)[1], "paper_data": name.split("_", 1)[1], "stand_in": None,
        "paper_columns": columns, "our_columns": columns,
        "directions": {c: "lower" if c == "delta_m" else "higher" for c in columns}, "rows": rows,
        "runs": {"planned": 3 * len(rows), "complete": 3 * len(ours), "failed": 0, "to_do": 3 * (len(rows) - len(ours))},
    }
    table.update(fields)
    return table


def set_row(table: dict[str, Any], label: str, **fields: Any) -> None:
    next(r for r in table["rows"] if r["label"] == label).update(fields)


def claim(claims: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    return next(c for c in claims if c["claim"].startswith(prefix))


CHAIN = "Table 2: MoLA-Router > MoLA-Grad > HPS > Uniform"


def _table2(router: Any = 80.0, grad: Any = 79.0, hps: Any = 78.0, uniform: Any = 77.0) -> dict[str, Any]:
    return table_json("table2_vlcs", {"MoLA-Router": {"Avg": router}, "MoLA-Grad": {"Avg": grad}, "HPS": {"Avg": hps}, "Uniform": {"Avg": uniform}})


# ---------------------------------------------------------------- claims


def test_chain_claim_holds_fails_and_within_spread():
    holds = claim(check_claims([_table2()]), CHAIN)
    assert (holds["verdict"], holds["within_spread"]) == (HOLDS, False)
    assert "MoLA-Router 80.00 ± 0.10 > MoLA-Grad 79.00 ± 0.10" in holds["evidence"]
    assert verdict_text(holds) == "holds"

    fails = claim(check_claims([_table2(router=76.0)]), CHAIN)
    assert (fails["verdict"], fails["within_spread"]) == (FAILS, False)

    close = claim(check_claims([_table2(router=(79.5, 1.0), grad=(79.0, 0.2))]), CHAIN)
    assert (close["verdict"], close["within_spread"]) == (HOLDS, True)
    assert verdict_text(close) == "holds (within the seeds' spread)"
    assert "within the seeds' spread" in close["evidence"]

    close_fail = claim(check_claims([_table2(router=(78.9, 0.5), grad=(79.0, 0.2))]), CHAIN)
    assert verdict_text(close_fail) == "does not hold (within the seeds' spread)"

    one_seed = claim(check_claims([_table2(router=(79.5, None), grad=(79.0, None))]), CHAIN)
    assert (one_seed["verdict"], one_seed["within_spread"]) == (HOLDS, False)  # a null std counts as 0


def test_claims_say_what_the_papers_numbers_show():
    chain = claim(check_claims([_table2()]), CHAIN)
    # the paper's own Table 2 prints Router 86.40 < Grad 86.41: the ordering is the lead's, not the paper's
    assert chain["paper_verdict"] == FAILS
    assert "MoLA-Router 86.40 < MoLA-Grad 86.41" in chain["paper"]
    beats = claim(check_claims([]), "Table 4: MoLA-Router and MoLA-Grad beat HPS")
    assert beats["paper_verdict"] == HOLDS and "HPS 84.19" in beats["paper"]  # the paper's "HSP" row


def test_missing_rows_and_tables_are_not_measurable():
    table = _table2()
    set_row(table, "Uniform", status="missing", reason="method not in molabench", seeds=0, ours={})
    result = claim(check_claims([table]), CHAIN)
    assert result["verdict"] == UNMEASURABLE
    assert result["evidence"] == "ours: missing (method not in molabench): Uniform"

    absent = check_claims([])
    assert all(c["verdict"] == UNMEASURABLE for c in absent)
    assert claim(absent, "Table 1:")["evidence"] == "ours: Table 1 was not produced"
    assert all(c["paper"] for c in absent)


def test_partial_rows_count_and_say_so():
    table = _table2()
    set_row(table, "MoLA-Router", status="partial", seeds=2)
    result = claim(check_claims([table]), CHAIN)
    assert result["verdict"] == HOLDS and "2 of 3 seeds" in result["evidence"]


def test_table5_mola_has_the_best_delta_m():
    rows = {"Single-Task": {"delta_m": 0.0}, "HSP": {"delta_m": 3.0}, "MTAN": {"delta_m": -1.0}, "MoLA-Grad": {"delta_m": -2.0}}
    holds = claim(check_claims([table_json("table5_nyuv2", rows)]), "Table 5")
    assert holds["verdict"] == HOLDS and "among the 3 of 22 rows" in holds["evidence"]
    rows["MTAN"] = {"delta_m": -5.0}
    assert claim(check_claims([table_json("table5_nyuv2", rows)]), "Table 5")["verdict"] == FAILS
    del rows["MoLA-Grad"]
    assert claim(check_claims([table_json("table5_nyuv2", rows)]), "Table 5")["verdict"] == UNMEASURABLE


def test_table6_best_rank():
    ranks = {"Router(r=1)": {"Avg": 70.0}, "Router(r=4)": {"Avg": 72.0}, "Router(r=8)": {"Avg": 71.0}}
    result = claim(check_claims([table_json("table6_rank_vlcs", ranks)]), "Table 6: MoLA-Router")
    assert result["verdict"] == HOLDS and "best r=4, as in the paper" in result["evidence"]
    assert "best r=4" in result["paper"]
    ranks["Router(r=8)"] = {"Avg": 73.0}
    result = claim(check_claims([table_json("table6_rank_vlcs", ranks)]), "Table 6: MoLA-Router")
    assert result["verdict"] == FAILS and "our best is r=8, the paper's r=4" in result["evidence"]
    del ranks["Router(r=4)"]
    assert claim(check_claims([table_json("table6_rank_vlcs", ranks)]), "Table 6: MoLA-Router")["verdict"] == UNMEASURABLE
    assert claim(check_claims([table_json("table6_rank_vlcs", ranks)]), "Table 6: MoLA-Grad")["verdict"] == UNMEASURABLE


def test_table7_placement():
    rows = {"Without MoLA": {"delta_m": 2.0}, "Block4": {"delta_m": -3.0}, "Block1": {"delta_m": 1.0}}
    claims = check_claims([table_json("table7_placement_nyuv2", rows)])
    assert claim(claims, "Table 7: the best")["verdict"] == HOLDS
    anywhere = claim(claims, "Table 7: MoLA in any block")
    assert anywhere["verdict"] == HOLDS and "2 of 9 placements measured" in anywhere["evidence"]
    rows["Block1"] = {"delta_m": 2.5}
    claims = check_claims([table_json("table7_placement_nyuv2", rows)])
    assert claim(claims, "Table 7: MoLA in any block")["verdict"] == FAILS
    assert claim(claims, "Table 7: the best")["paper_verdict"] == HOLDS


def test_table8_needs_both_backbones():
    resnet = {"officehome:HPS (ResNet)": {"Avg": 70.0}, "officehome:Router (ResNet)": {"Avg": 72.0}, "officehome:Grad (ResNet)": {"Avg": 71.0}}
    only_resnet = claim(check_claims([table_json("table8_backbone", resnet)]), "Table 8")
    assert only_resnet["verdict"] == UNMEASURABLE and "nothing measured for Transformer" in only_resnet["evidence"]
    both = {**resnet, "vlcs:HPS (Transformer)": {"Avg": 80.0}, "vlcs:Router (Transformer)": {"Avg": 81.0}, "vlcs:Grad (Transformer)": {"Avg": 82.0}}
    assert claim(check_claims([table_json("table8_backbone", both)]), "Table 8")["verdict"] == HOLDS
    both["vlcs:Grad (Transformer)"] = {"Avg": 79.0}
    assert claim(check_claims([table_json("table8_backbone", both)]), "Table 8")["verdict"] == FAILS


def test_table10_and_11_best_settings():
    omega = {"Router (=32)": {"Avg": 70.0}, "Router (=64)": {"Avg": 69.0}}
    assert claim(check_claims([table_json("table10_omega_dim", omega)]), "Table 10")["verdict"] == HOLDS
    experts = {"vlcs:Router (=2)": {"Avg": 70.0}, "vlcs:Router (=3)": {"Avg": (69.9, 0.5)}}
    claims = check_claims([table_json("table11_experts", experts)])
    vlcs = claim(claims, "Table 11 (vlcs)")
    assert verdict_text(vlcs) == "does not hold (within the seeds' spread)"  # the paper's best is E=3
    assert claim(claims, "Table 11 (officehome)")["verdict"] == UNMEASURABLE
    unlabelled = table_json("table11_experts", experts)
    for row in unlabelled["rows"]:
        row["label"] = row["label"].replace("Router", "MoLA")
    result = claim(check_claims([unlabelled]), "Table 11")
    assert result["verdict"] == UNMEASURABLE and "no rows labelled like the paper's settings" in result["evidence"]


# ---------------------------------------------------------------- the page


def full_results(root: Path, *, skip: tuple[int, ...] = ()) -> Path:
    """A results folder with every table (but ``skip``), Table 2 on stand-in data, and one figure."""
    results = root / "results"
    (results / "tables").mkdir(parents=True)
    for name in available_tables():
        number = int(name.removeprefix("table").split("_")[0])
        if number in skip:
            continue
        paper = load_table(name)
        first = next(iter(paper.rows))
        ours = {first: {c: 50.0 for c in paper.columns}}
        table = table_json(name, ours)
        if number == 2:
            columns = ["photo", "art_painting", "cartoon", "sketch", "Avg"]
            table = table_json(name, {"MoLA-Router": {"photo": 90.0, "Avg": 99.0}, "HPS": {"photo": 10.0, "Avg": 10.0}},
                               stand_in="PACS at 64 px stands in for VLCS (VLCS is not at data.root)", data="pacs",
                               our_columns=columns, directions={c: "higher" for c in [*paper.columns, *columns]})
            set_row(table, "MMD-AAE", status="missing", reason="method not in molabench")
            set_row(table, "CGC", status="failed", reason="run failed: CUDA out of memory <oops>")
        if number == 3:
            table = table_json(name, {"MoLA-Router": {"Avg": 90.0}, "HPS": {"Avg": (70.0, None)}})
        (results / "tables" / f"{name}.json").write_text(json.dumps(table, indent=2))
    (results / "figures").mkdir()
    (results / "figures" / "fig5_params.png").write_bytes(_tiny_png())
    figures = [
        {"file": "fig5_params.png", "title": "Fig. 5: parameters", "caption": "the paper's caption", "differs": "CPU budget, PACS"},
        {"file": "fig6_gone.png", "title": "Fig. 6: absent", "caption": "c", "differs": "d"},
    ]
    (results / "figures" / "figures.json").write_text(json.dumps(figures))
    return results


def _tiny_png() -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


class _Text(HTMLParser):
    """The visible text of a page, and its img sources."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.images: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def page_text(html: str) -> tuple[str, list[str]]:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split()), parser.images


def test_page_shows_every_table_claims_and_figures(tmp_path):
    results = full_results(tmp_path)
    path = write_report(results)
    assert path == results / "report" / "index.html"
    html = path.read_text()
    text, images = page_text(html)
    for name in available_tables():
        number = int(name.removeprefix("table").split("_")[0])
        assert f"Table {number}: {name} (fixture)" in text
    assert 'class="table not-produced"' not in html
    assert "Stand-in data: PACS at 64 px stands in for VLCS (VLCS is not at data.root)" in text
    assert "so only Avg is compared with the paper" in text
    assert "missing: method not in molabench" in text
    assert "not run yet (re-run make reproduce)" in text and "run failed: CUDA out of memory <oops>" in text
    assert images == ["../figures/fig5_params.png"]
    assert "Image missing: figures/fig6_gone.png" in text
    assert "What differs here: CPU budget, PACS" in text
    assert "The paper's claims, checked" in text and "not measurable here" in text
    assert "Tables produced: 11 of 11" in text
    assert "tables/table2_vlcs.json" in text  # the inputs are listed
    assert str(tmp_path) not in html  # no absolute path: the page is the same wherever results/ is


def test_differences_are_coloured_by_direction(tmp_path):
    results = full_results(tmp_path)
    html = write_report(results).read_text()
    table3 = html.split('id="table3"')[1].split("</section>")[0]
    assert '<span class="diff better" title="ours better than the paper">+6.16</span>' in table3  # 90 vs 83.84
    assert '<span class="diff worse" title="ours worse than the paper">-8.18</span>' in table3  # HPS 70 vs 78.18
    assert "70.00</span>" in table3  # one seed: no std
    table7 = html.split('id="table7"')[1].split("</section>")[0]
    assert '<span class="diff worse" title="ours worse than the paper">+45.28</span>' in table7  # Δm 50 vs 4.72: lower is better
    table2 = html.split('id="table2"')[1].split("</section>")[0]
    assert table2.count('class="diff ') == 2  # stand-in: Avg only, for the two rows that ran


def test_text_is_escaped(tmp_path):
    results = full_results(tmp_path)
    path = results / "tables" / "table4_medmnist.json"
    table = json.loads(path.read_text())
    table["title"] = 'Table 4: <script>alert("x")</script> & co'
    table["rows"][0]["label"] = "<b>bold</b>"
    path.write_text(json.dumps(table))
    html = write_report(results).read_text()
    assert "<script>" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in html
    assert "CUDA out of memory &lt;oops&gt;" in html
    assert html.isascii()


def test_page_bytes_are_deterministic(tmp_path):
    first = write_report(full_results(tmp_path / "a")).read_bytes()
    again = write_report(tmp_path / "a" / "results").read_bytes()
    elsewhere = write_report(full_results(tmp_path / "b")).read_bytes()
    assert first == again == elsewhere


def test_absent_tables_and_figures_are_listed(tmp_path):
    results = full_results(tmp_path, skip=(6, 11))
    (results / "figures" / "figures.json").unlink()
    html = write_report(results).read_text()
    text, images = page_text(html)
    assert html.count('class="table not-produced"') == 2
    assert "Not produced: tables/table6_rank_vlcs.json is absent" in text
    assert load_table("table11_experts").caption in text
    assert "Tables produced: 9 of 11" in text
    assert "No figures: figures/figures.json is absent" in text and images == []


def test_malformed_json_is_one_clear_error(tmp_path, capsys):
    results = full_results(tmp_path)
    bad = results / "tables" / "table7_placement_nyuv2.json"
    bad.write_text('{"number": 7, "rows": [')
    with pytest.raises(DataError, match=re.escape(str(bad))):
        write_report(results)
    assert not (results / "report" / "index.html").exists()
    assert html_main(["--results", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "table7_placement_nyuv2.json is not valid JSON" in err[0]

    bad.write_text(json.dumps({"number": 7, "title": "t"}))
    with pytest.raises(DataError, match="lacks rows, paper_columns, our_columns"):
        write_report(results)
    (results / "figures" / "figures.json").write_text('{"file": 1}')
    bad.unlink()
    with pytest.raises(DataError, match=r"figures\.json must be a list"):
        write_report(results)


def test_main_writes_and_prints_the_path(tmp_path, capsys):
    results = full_results(tmp_path)
    assert html_main(["--results", str(results)]) == 0
    assert capsys.readouterr().out.strip() == str(results / "report" / "index.html")
    assert html_main(["--results", str(tmp_path / "nowhere")]) == 2
    assert "error: no results folder" in capsys.readouterr().err


# ---------------------------------------------------------------- a real browser

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
]


def chromium() -> str:
    """The chromium binary; the test is skipped without one, except under CI (CI=...), where it fails."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must run the browser test (.ci/run installs it with apt-get)")
    pytest.skip("chromium is not installed (apt-get install chromium); the browser test needs it")


def run_chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL)


def console_errors(stderr: str) -> list[str]:
    """The lines of Chromium's log that report a page's console message or an uncaught exception.

    Chromium (150, Debian) logs every console message as ``[...:INFO:CONSOLE:<line>] "<text>", source: ...``
    whatever its level — console.error, console.warn and console.log all read INFO — and older
    builds as ``...:CONSOLE(<line>)] ...``. The level cannot be told from the log, so, since the page
    has no script, any console message counts as an error; so does any "Uncaught" exception.
    """
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]\d", line) or "Uncaught" in line]


def test_console_error_detector_fires_on_console_error(tmp_path):
    noisy = tmp_path / "noisy.html"
    noisy.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body><p>x</p>'
                     '<script>console.error("boom")</script></body></html>')
    quiet = tmp_path / "quiet.html"
    quiet.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body><p>x</p></body></html>')
    found = console_errors(run_chromium(noisy, tmp_path, "--dump-dom").stderr)
    assert len(found) == 1 and '"boom"' in found[0]
    assert console_errors(run_chromium(quiet, tmp_path, "--dump-dom").stderr) == []
    thrown = tmp_path / "thrown.html"
    thrown.write_text("<!DOCTYPE html><html><body><script>undefinedFunction()</script></body></html>")
    assert any("Uncaught" in line for line in console_errors(run_chromium(thrown, tmp_path, "--dump-dom").stderr))


def test_page_renders_in_headless_chromium(tmp_path):
    page = write_report(full_results(tmp_path))
    shot = tmp_path / "page.png"
    snap = run_chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file() and shot.stat().st_size > 0
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1280, 2000)

    dom = run_chromium(page, tmp_path, "--dump-dom")
    text, images = page_text(dom.stdout)
    for name in available_tables():
        title = json.loads((page.parent.parent / "tables" / f"{name}.json").read_text())["title"]
        assert title in text
    assert 'class="table not-produced"' not in dom.stdout and "Not produced" not in text
    assert images == ["../figures/fig5_params.png"]
    assert console_errors(snap.stderr) == [] and console_errors(dom.stderr) == []
