"""One PNG per results table: ``make tables`` writes ``<stem>.png`` beside ``<stem>.md``.

A figure shows one small panel per metric column of the table (so metrics of different scales,
mIoU in % beside AbsErr or a fraction of pixels, never share an axis), plus ``Avg`` where the table
has one and ``Δm%`` for dense tables. In every panel each method row is a horizontal bar (its mean
over seeds, the std as an error bar, "n/a" where the metric is missing); the paper's number, where
the paper has one, is a black vertical tick on that row (a line with ``gid="paper"``). Panel titles
carry the metric's direction (↑ higher is better, ↓ lower is better); method labels stand once per
row of panels, on the left.

The figure's pixel size depends only on the number of panels and of method rows
(:func:`figure_size`), and the PNG carries no metadata (no ``Software`` key, and matplotlib writes
no timestamp into PNGs), so the same records give byte-identical images with a given matplotlib.
The figure is drawn on a standalone :class:`~matplotlib.figure.Figure` with the non-interactive
Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from molabench.atomic import atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from molabench.report.tables import Group

#: output resolution; every length below is in pixels at this resolution
DPI = 100
#: panels per row of the grid
MAX_COLS = 4
LABEL_W = 280  # method labels, left of the first panel of a row
PANEL_W = 200
GAP_W = 30  # between panels of a row
RIGHT_W = 25
TITLE_H = 80  # figure title (two lines) and legend
PANEL_TITLE_H = 28
ROW_H = 30  # one method bar
BARS_PAD_H = 12
XTICKS_H = 40  # tick labels below a panel, and the gap to the next row of panels
BOTTOM_H = 10
#: method labels wrap at this many characters and keep at most two lines
LABEL_CHARS = 44

_PAPER_STYLE: dict[str, Any] = {"marker": "|", "color": "black", "markersize": 11, "markeredgewidth": 2.2, "linestyle": "none"}


def grid_shape(n_panels: int) -> tuple[int, int]:
    """``(rows, columns)`` of the panel grid for ``n_panels`` panels."""
    cols = max(1, min(n_panels, MAX_COLS))
    return math.ceil(max(n_panels, 1) / cols), cols


def figure_size(n_panels: int, n_methods: int) -> tuple[int, int]:
    """The PNG's ``(width, height)`` in pixels for ``n_panels`` panels of ``n_methods`` bars each."""
    rows, cols = grid_shape(n_panels)
    width = LABEL_W + cols * PANEL_W + (cols - 1) * GAP_W + RIGHT_W
    height = TITLE_H + rows * (PANEL_TITLE_H + max(n_methods, 1) * ROW_H + BARS_PAD_H + XTICKS_H) + BOTTOM_H
    return width, height


def panels(group: Group) -> list[tuple[str, str, bool]]:
    """``(frame column, panel title, higher is better)`` of every panel of ``group``'s figure."""
    from molabench.report.tables import metric_columns  # tables imports this module lazily

    columns, has_avg, has_delta = metric_columns(group)
    out = [(c.label, c.label, c.higher_is_better) for c in columns]
    if has_avg:
        out.append(("Avg", "Avg", columns[0].higher_is_better))
    if has_delta:
        out.append(("delta_m", "Δm%", False))
    return out


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, None, NaN, inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _label(method: str) -> str:
    """A method row's label wrapped to at most two lines of :data:`LABEL_CHARS` characters."""
    lines = textwrap.wrap(method, LABEL_CHARS, break_on_hyphens=False) or [""]
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), LABEL_CHARS, placeholder=" …")]
    return "\n".join(lines)


def _title(group: Group, width_px: int) -> str:
    head = f"{group.experiment} — data {group.data} — selection {group.protocol}"
    sub = f"{group.split} split: bar = mean ± std over seeds"
    if group.paper:
        sub += f"; | = the paper's number ({group.paper})"
    chars = max(40, int(width_px / 7.5))  # ~7.5 px per character at the title's size
    return "\n".join([textwrap.shorten(head, chars, placeholder=" …"), textwrap.shorten(sub, chars, placeholder=" …")])


def draw(group: Group, frame: pd.DataFrame) -> Figure:
    """The table's figure (see the module docstring); :func:`table_figure` saves it."""
    specs = panels(group)
    methods = [str(m) for m in frame["method"]] if len(frame) else []
    n = len(methods)
    width, height = figure_size(len(specs), n)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    _, cols = grid_shape(len(specs))
    colours = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    ys = list(range(n))
    any_paper = False
    bars_h = max(n, 1) * ROW_H + BARS_PAD_H
    for i, (column, title, higher) in enumerate(specs):
        r, c = divmod(i, cols)
        left = LABEL_W + c * (PANEL_W + GAP_W)
        top = TITLE_H + r * (PANEL_TITLE_H + bars_h + XTICKS_H) + PANEL_TITLE_H
        ax = fig.add_axes((left / width, 1 - (top + bars_h) / height, PANEL_W / width, bars_h / height))
        means = [_number(v) for v in frame[column]] if column in frame else [None] * n
        stds = [_number(v) for v in frame[f"{column}_std"]] if f"{column}_std" in frame else [None] * n
        papers = [_number(v) for v in frame[f"{column}_paper"]] if f"{column}_paper" in frame else [None] * n
        for y, mean, std in zip(ys, means, stds, strict=True):
            if mean is None:
                ax.text(0.02, y, "n/a", transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=7, color="0.4")
                continue
            ax.barh(y, mean, height=0.7, color=colours(y % colours.N), xerr=std or 0.0,
                    error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "0.2"})
        marked = [(p, y) for y, p in zip(ys, papers, strict=True) if p is not None]
        if marked:
            any_paper = True
            ax.plot([p for p, _ in marked], [y for _, y in marked], gid="paper", **_PAPER_STYLE)
        if all(m is None for m in means) and not marked:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")
            ax.set_xticks([])
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.set_title(f"{title} {'↑' if higher else '↓'}", fontsize=9, pad=4)
        ax.set_ylim(n - 0.5, -0.5)  # first row on top, as in the table
        ax.set_yticks(ys)
        ax.set_yticklabels([_label(m) for m in methods] if c == 0 else [], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.tick_params(axis="y", length=0 if c else 2)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(axis="x", color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
    fig.suptitle(_title(group, width), x=0.5, y=1 - 6 / height, va="top", fontsize=10)
    if any_paper:
        fig.legend(handles=[Line2D([], [], label="paper", **_PAPER_STYLE)], loc="upper right",
                   bbox_to_anchor=(1 - 4 / width, 1 - 46 / height), fontsize=7, frameon=False)
    return fig


def table_figure(group: Group, frame: pd.DataFrame, path: Path) -> Path:
    """Draw ``group``'s table (``frame`` from :func:`~molabench.report.tables.build_frame`) and write
    it to ``path`` as a PNG of :func:`figure_size` pixels, atomically; returns ``path``."""
    fig = draw(group, frame)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}))
    return Path(path)
