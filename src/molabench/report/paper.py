"""The paper's published numbers (Tables 1–11), shipped as data with the package.

The CSV files in ``molabench/paper_tables`` are the paper's tables as printed (first line a
``#`` caption, then ``method,<columns...>``). Our method names map to the paper's row labels
through :data:`PAPER_LABELS`; the paper spells HPS as "HSP" in Tables 1, 4 and 5.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

PAPER_LABELS: dict[str, tuple[str, ...]] = {
    "single_task": ("Single-Task",),
    "uniform": ("Uniform",),
    "hps": ("HPS", "HSP"),
    "ew": ("HPS", "HSP"),
    "uw": ("UW",),
    "dwa": ("DWA",),
    "rlw": ("RLW",),
    "gradnorm": ("GradNorm",),
    "mgda": ("MGDA",),
    "mgda_ub": ("MGDA-UB",),
    "pcgrad": ("PCGrad",),
    "cagrad": ("CAGrad",),
    "graddrop": ("GradDrop",),
    "gradvac": ("GradVac",),
    "imtl": ("IMTL",),
    "nash_mtl": ("Nash-MTL",),
    "aligned_mtl": ("Aligned-MTL",),
    "aligned_mtl_ub": ("Aligned-MTL-UB",),
    "cross_stitch": ("Cross-Stitch",),
    "mmoe": ("MMoE",),
    "cgc": ("CGC",),
    "ple": ("PLE",),
    "dselect_k": ("DSelect-K",),
    "ltb": ("LTB",),
    "mtan": ("MTAN",),
    "mmd_aae": ("MMD-AAE",),
    "selfreg": ("SelfReg",),
    "eqrm": ("EQRM",),
    "dann": ("DANN",),
    "mola_grad": ("MoLA-Grad",),
    "mola_router": ("MoLA-Router",),
}


# Built-in stand-ins for the paper's datasets: a table of one says so beside the paper's numbers.
STAND_INS: dict[str, str] = {"scenes": "NYUv2"}

# Tables 8, 9 and 11 name domains D1..D4 in this order (their captions).
DOMAIN_ORDER = {"vlcs": ["V", "L", "C", "S"], "officehome": ["P", "A", "C", "R"]}
_SHORT = {"mola_router": "Router", "mola_grad": "Grad", "hps": "HPS"}


_RECIPE_PREFIXES = ("trainer.", "trainer=", "data.", "backbone.", "backbone=", "head.", "head=")


def paper_labels(table: str, record: dict[str, Any]) -> tuple[str, ...]:
    """The paper's row label(s) for a run: the method's name in the main tables, its setting in the ablations.

    Ablation rows are recognised from the run's resolved method config (e.g. ``method.rank=4`` on
    VLCS is Table 6's ``Router(r=4)``), so a sweep over that knob fills the ablation table.
    """
    method, data = record["method"], record["data"]
    config = record.get("config") or {}
    knobs = config.get("method") or {}
    short = _SHORT.get(method)
    if table == "table6_rank_vlcs" and short in ("Router", "Grad"):
        return (f"{short}(r={knobs.get('rank')})",)
    if table == "table7_placement_nyuv2":
        if method in ("hps", "ew"):
            return ("Without MoLA",)
        if short == "Grad":
            stages = [str(s) for s in knobs.get("stages") or []]
            if all(s.startswith("layer") for s in stages) and stages:
                return ("Block" + "".join(s[-1] for s in stages),)
        return ()
    if table == "table10_omega_dim" and short == "Router":
        return (f"Router (={knobs.get('omega_dim')})",)
    if table == "table11_experts" and short == "Router":
        experts = knobs.get("experts") or len(record.get("tasks") or [])
        return (f"{data}:Router (={experts})",)
    if table == "table8_backbone" and short:
        kind = "Transformer" if str((config.get("backbone") or {}).get("name", "")).startswith("vit") else "ResNet"
        return (f"{data}:{short} ({kind})", f"{data}:{short} ({kind.capitalize()})")
    if table == "table9_router_sharing" and short == "Router":
        sharing = "Shared" if knobs.get("router_sharing", "shared") == "shared" else "Non-shared"
        blocks = "+".join(str(int(s[-1]) - 1) for s in knobs.get("stages") or [] if str(s).startswith("layer"))
        return (f"{data}:{sharing} ({blocks})",)
    from molabench.report.records import variant_overrides

    # A variant of the method (``method.rank=8``) is not the paper's row; a different training
    # recipe (``trainer.epochs=5``, another optimiser) still is, and its row label says so.
    if any(not o.startswith(_RECIPE_PREFIXES) for o in variant_overrides(record.get("overrides") or [])):
        return ()
    return PAPER_LABELS.get(method, (method,))


@dataclass(frozen=True)
class PaperTable:
    name: str
    caption: str
    columns: list[str]
    rows: dict[str, dict[str, float | None]]

    def lookup(self, method: str) -> dict[str, float | None] | None:
        return self.lookup_labels(PAPER_LABELS.get(method, (method,)))

    def lookup_labels(self, labels: tuple[str, ...]) -> dict[str, float | None] | None:
        for label in labels:
            if label in self.rows:
                return self.rows[label]
        return None

    def column_for(self, task_column: str, data: str) -> str:
        """The paper's column for one of our task columns (Tables 8, 9 and 11 number domains D1..D4)."""
        if task_column in self.columns:
            return task_column
        order = DOMAIN_ORDER.get(data, [])
        return f"D{order.index(task_column) + 1}" if task_column in order else task_column


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@cache
def load_table(name: str) -> PaperTable:
    """Load ``paper_tables/<name>.csv`` (e.g. ``table4_medmnist``)."""
    text = resources.files("molabench").joinpath("paper_tables", f"{name}.csv").read_text()
    lines = text.splitlines()
    caption = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else name
    reader = csv.reader(line for line in lines if not line.startswith("#"))
    header = next(reader)
    rows = {row[0]: {col: _number(value) for col, value in zip(header[1:], row[1:], strict=True)} for row in reader if row}
    return PaperTable(name, caption, header[1:], rows)


def available_tables() -> list[str]:
    return sorted(p.name.removesuffix(".csv") for p in resources.files("molabench").joinpath("paper_tables").iterdir() if p.name.endswith(".csv"))
