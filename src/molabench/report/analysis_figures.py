"""The paper's analysis figures (Figs. 3–6) drawn from trained runs: ``scripts/analysis.py`` and
``make reproduce`` call these.

- :func:`fig3` principal-component ratio K/R per conv layer (MoLA's W0 + dW_e vs W0, and a baseline's W0);
- :func:`fig4` singular values of W0 and of every W0 + dW_e for the deepest adapted layers;
- :func:`fig5` parameters vs number of tasks T = 2..12 (models built on the meta device; no run needed);
- :func:`fig6` 2-D PCA of MoLA-Router's router embedding omega, coloured by task.

A run needs ``model.pt`` beside its record (``trainer.checkpoint=true``); :func:`load_run` rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from molabench.atomic import atomic_write, write_text_atomic
from molabench.data import build_data
from molabench.engine.algorithm import build_algorithm
from molabench.errors import MolabenchError
from molabench.report import analysis


def load_run(run: Path) -> tuple[dict, object, object]:
    record = json.loads((run / "record.json").read_text())
    checkpoint = run / "model.pt"
    if not checkpoint.is_file():
        raise MolabenchError(f"{checkpoint} not found: train the run with trainer.checkpoint=true")
    config = record["config"]
    data = build_data(config["data"])
    algorithm = build_algorithm(config["method"], config["backbone"], data)
    algorithm.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return record, algorithm, data


def save(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    print(f"wrote {path}")


def fig3(algorithm: object, baseline: object | None, out: Path) -> None:
    ratios = analysis.pc_ratios(algorithm.arch)
    names = list(ratios)
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.45), 3.5))
    x = torch.arange(len(names)).float()
    w0 = [ratios[n]["W0"] for n in names]
    merged = [sum(v for k, v in ratios[n].items() if k != "W0") / max(1, len(ratios[n]) - 1) if len(ratios[n]) > 1 else float("nan") for n in names]
    ax.bar(x - 0.27, w0, 0.27, label="W0 (this run)")
    ax.bar(x, merged, 0.27, label="W0 + dW_e (mean over adapters)")
    if baseline is not None:
        base = analysis.pc_ratios(baseline.arch)
        ax.bar(x + 0.27, [base.get(n, {}).get("W0", float("nan")) for n in names], 0.27, label="baseline W0")
    ax.set_xticks(x.tolist(), [n.replace("encoder.", "") for n in names], rotation=90, fontsize=7)
    ax.set_ylabel("K / R (99% of singular mass)")
    ax.set_title("Principal-component ratio per layer (Fig. 3)")
    ax.legend(fontsize=7)
    save(fig, out / "fig3_pc_ratio.png")


def fig4(algorithm: object, out: Path, layers: int = 3) -> None:
    spectra = analysis.layer_spectra(algorithm.arch)
    if not spectra:
        print("no adapted layers: skipping fig4")
        return
    chosen = list(spectra)[-layers:]
    fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 3.2), squeeze=False)
    for ax, name in zip(axes[0], chosen, strict=True):
        for label, values in spectra[name].items():
            ax.plot(values.numpy(), label=label, lw=2 if label == "W0" else 0.8)
        ax.set_yscale("log")
        ax.set_title(name.replace("encoder.", ""), fontsize=8)
        ax.set_xlabel("index")
    axes[0][0].set_ylabel("singular value")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("Singular values of W0 and W0 + dW_e (Fig. 4)")
    save(fig, out / "fig4_spectra.png")


def fig5(out: Path, backbone: str = "resnet18", input_shape: tuple[int, int, int] = (3, 224, 224), max_tasks: int = 12) -> None:
    """Parameters (heads excluded) vs number of tasks T = 2..12 for the paper's Fig. 5 architectures, counted
    on models actually built (meta device); crosses mark architectures.md's closed formulas."""
    from molabench.report import param_formulas as pf

    counts = list(range(2, max_tasks + 1))
    facts = pf.backbone_facts(backbone, input_shape)
    formula = pf.formulas(int(facts["P"]), int(facts["N_in"]), list(facts["levels"]), backbone, int(facts["S"]))  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    rows = {}
    for name, options in pf.FIG5.items():
        built = [pf.built_count(name, t, backbone, input_shape, **options) for t in counts]
        rows[name] = built
        (line,) = ax.plot(counts, [b / 1e6 for b in built], marker="o", markersize=3, label=name)
        if name in formula:
            ax.plot(counts, [formula[name](t) / 1e6 for t in counts], "x", color=line.get_color(), markersize=6)
    ax.set_xlabel("number of tasks T")
    ax.set_ylabel(f"parameters (M), {backbone}, input {'x'.join(map(str, input_shape))}")
    ax.set_title("Parameters vs number of tasks (Fig. 5; x: formulas)")
    ax.legend(fontsize=7, ncol=2)
    save(fig, out / "fig5_params.png")
    table = out / "fig5_params.csv"
    lines = ["T," + ",".join(rows)] + [f"{t}," + ",".join(str(rows[n][i]) for n in rows) for i, t in enumerate(counts)]
    write_text_atomic(table, "\n".join(lines) + "\n")
    print(f"wrote {table}")


def _pca_panel(ax: plt.Axes, algorithm: object, data: object, title: str) -> None:
    omega, tasks = analysis.router_embeddings(algorithm, data)
    centred = omega - omega.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = centred @ v[:2].T
    for t, spec in enumerate(data.tasks):
        keep = tasks == t
        ax.scatter(xy[keep, 0], xy[keep, 1], s=4, alpha=0.6, label=spec.display)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=3)


def fig6(algorithm: object, data: object, out: Path, without: tuple[object, object] | None = None) -> None:
    """2-D PCA of the router embedding omega per task; with ``without`` = (algorithm, data) of a run
    trained without the TwD loss, its panel (the router's mixing weights: no omega map is trained) first."""
    if without is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        _pca_panel(ax, algorithm, data, "Router embedding omega, 2-D PCA (Fig. 6)")
    else:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
        _pca_panel(left, without[0], without[1], "w/o TwD: mixing weights, 2-D PCA")
        _pca_panel(right, algorithm, data, "with TwD: omega, 2-D PCA")
        fig.suptitle("Router embedding per task (Fig. 6)")
    save(fig, out / "fig6_router.png")
