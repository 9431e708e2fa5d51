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


@dataclass(frozen=True)
class PaperTable:
    name: str
    caption: str
    columns: list[str]
    rows: dict[str, dict[str, float | None]]

    def lookup(self, method: str) -> dict[str, float | None] | None:
        for label in PAPER_LABELS.get(method, (method,)):
            if label in self.rows:
                return self.rows[label]
        return None


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
