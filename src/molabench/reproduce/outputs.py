"""Everything a reproduction writes from its records: the paper-layout tables, the figures and the
report page. ``make reproduce`` calls :func:`write_outputs` after its runs; ``make tables`` calls it
for every budget that has a saved plan, so the committed outputs are rebuilt from the committed
records (tables and report byte for byte; Figs 3, 4 and 6 need the runs' weights, which are not
committed, and are left as they are when those are absent).

``results/{tables,figures,report}`` hold the largest budget with a saved plan (``paper`` over
``cpu`` over ``smoke``); a smaller budget writes its outputs beside its plan
(``results/runs/reproduce/<budget>/``), so a smoke check never replaces a committed reproduction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from molabench.atomic import write_text_atomic
from molabench.reproduce.layout import load_plan, plan_path, write_tables

#: budgets in the order their outputs are written (a later one's tables replace an earlier one's)
BUDGET_ORDER = ("smoke", "cpu", "paper")


def saved_budgets(results_dir: Path) -> list[str]:
    """Budgets with a saved plan, smallest first."""
    root = results_dir / "runs" / "reproduce"
    found = [p.parent.name for p in sorted(root.glob("*/plan.json"))] if root.is_dir() else []
    return sorted(found, key=lambda b: (BUDGET_ORDER.index(b) if b in BUDGET_ORDER else len(BUDGET_ORDER), b))


def output_dir(results_dir: Path, budget: str) -> Path:
    """Where ``budget``'s tables, figures and report go: ``results_dir`` for the largest saved budget
    (or when none is saved yet), else ``results_dir/runs/reproduce/<budget>``."""
    return plan_path(results_dir, budget).parent if budget in saved_budgets(results_dir)[:-1] else results_dir


FIGURES = {
    "fig3_pc_ratio.png": ("Fig. 3: principal-component ratio K/R per layer, with and without MoLA",
                          "The proportion of principal-component eigenvectors (99% of the singular mass) of the weights with and without MoLA."),
    "fig4_spectra.png": ("Fig. 4: singular values of W0 and of W0 + ΔW_e",
                         "Eigenvalue distributions of the shared weight and of the shared weight combined with each low-rank adapter."),
    "fig5_params.png": ("Fig. 5: parameters vs number of tasks",
                        "The parameter number of HPS, MoLA and the soft-sharing / MoE baselines as the number of tasks T grows."),
    "fig6_router.png": ("Fig. 6: MoLA-Router's router embedding ω, 2-D PCA",
                        "The router embedding ω of each task's samples, without and with the TwD loss."),
}


def write_figures(results_dir: Path, plan: dict[str, Any], out: Callable[[str], None] = print, dest: Path | None = None) -> Path:
    """Fig 5 (built models; no run needed) and Figs 3, 4, 6 from the first seed's HPS / MoLA-Grad /
    MoLA-Router runs of the first domain table whose weights (``model.pt``) are there; then
    ``figures.json`` indexes every figure present with its caption and what differs from the paper.
    Written to ``dest/figures`` (``dest``: :func:`output_dir`, by default ``results_dir``)."""
    from molabench.report import analysis_figures as af

    folder = (dest or results_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    af.fig5(folder)
    runs: dict[str, Path] = {}
    for run in plan["runs"]:
        record = run.get("record")
        if record and run["paper_data"] in ("vlcs", "officehome") and run["seed"] == plan["seeds"][0]:
            model = results_dir / Path(record).parent / "model.pt"
            if not model.is_file():
                continue
            if run.get("figure") and run["method"] == "mola_router" and "method.twd=false" in run["params"]:
                runs.setdefault("mola_router without twd", model.parent)
            elif not any(p.startswith("method.") for p in run["params"]):
                runs.setdefault(run["method"], model.parent)
    source: dict[str, str] = {}
    if "mola_grad" in runs:
        _, grad, _ = af.load_run(runs["mola_grad"])
        baseline = af.load_run(runs["hps"])[1] if "hps" in runs else None
        af.fig3(grad, baseline, folder)
        af.fig4(grad, folder)
        source["fig3_pc_ratio.png"] = source["fig4_spectra.png"] = str(runs["mola_grad"].relative_to(results_dir))
    if "mola_router" in runs:
        _, router, data = af.load_run(runs["mola_router"])
        without = af.load_run(runs["mola_router without twd"])[1:] if "mola_router without twd" in runs else None
        af.fig6(router, data, folder, without)
        source["fig6_router.png"] = str(runs["mola_router"].relative_to(results_dir))
        if without is not None:
            source["fig6_router.png"] += " and " + str(runs["mola_router without twd"].relative_to(results_dir))
    budget = plan["budget"]
    index = []
    for name, (title, caption) in FIGURES.items():
        if not (folder / name).is_file():
            continue
        if name == "fig5_params.png":
            differs = "counted on ResNet-18 at 224 px (models built, crosses: docs/architectures.md formulas); the paper does not state its backbone"
        else:
            sources = source.get(name, "").split(" and ")
            data = {r["data"] for r in plan["runs"] if r.get("record") and str(Path(r["record"]).parent) in sources}
            differs = f"from run {source.get(name, 'an earlier reproduction')} (budget {budget}, data {', '.join(sorted(data)) or 'see the run'}), not the paper's trained models"
            if name == "fig6_router.png" and len(sources) < 2:
                differs += "; only with the TwD loss (the paper also shows ω without it)"
            elif name == "fig6_router.png":
                differs += "; without TwD the panel shows the router's mixing weights softmax(router(x)) (no ω map is trained)"
        index.append({"file": name, "title": title, "caption": caption, "differs": differs})
    path = folder / "figures.json"
    write_text_atomic(path, json.dumps(index, indent=1) + "\n")
    out(f"wrote {len(index)} figure(s) to {folder}")
    return path


def write_outputs(results_dir: Path, budget: str, numbers: Sequence[int] | None = None, figures: bool = True, report: bool = True,
                  out: Callable[[str], None] = print) -> list[Path]:
    """The tables of ``numbers`` (all of the plan's when None), then figures and report."""
    path = plan_path(results_dir, budget)
    plan = load_plan(path)
    dest = output_dir(results_dir, budget)
    tables_dir = dest / "tables"
    written = write_tables(path, tables_dir, numbers)
    from molabench.report.claims import check_claims, claims_markdown
    from molabench.report.tables import write_index

    produced = [json.loads(p.read_text()) for p in sorted(tables_dir.glob("table*_*.json"))]
    claims = tables_dir / "claims.md"
    write_text_atomic(claims, claims_markdown(check_claims(produced), budget))
    written.append(claims)

    if dest == results_dir:  # the index of every experiment under results/runs lives beside the main tables
        write_index(tables_dir, results_dir / "runs")
        out(f"wrote {len(written)} paper table(s) to {tables_dir} (budget {budget}), indexed in {tables_dir / 'README.md'}")
    else:
        larger = saved_budgets(results_dir)[-1]
        out(f"wrote {len(written)} paper table(s) to {tables_dir} (budget {budget}; {results_dir / 'tables'} keeps budget {larger}'s)")
    if figures:
        written.append(write_figures(results_dir, plan, out, dest))
    if report:
        from molabench.report.html import write_report

        page = write_report(dest)
        written.append(page)
        out(f"wrote {page}")
    return written
