"""The paper's analysis figures (Figs. 3–6) from trained runs.

    python scripts/analysis.py --run results/runs/<experiment>/<run-id> [--baseline <hps run>]
    python scripts/analysis.py --params-only

A run needs ``model.pt`` beside its record (train with ``trainer.checkpoint=true``). Figures go to
``results/figures/<run-id>/``:

- ``fig3_pc_ratio.png``   principal-component ratio K/R per conv layer (MoLA's W0 + dW_e vs W0; and
                          the baseline's W0 when ``--baseline`` is given)
- ``fig4_spectra.png``    singular values of W0 and of every W0 + dW_e for the deepest adapted layers
- ``fig5_params.png``     parameters vs number of tasks (no run needed)
- ``fig6_router.png``     2-D PCA of the router embedding omega, coloured by task (MoLA-Router runs)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from molabench.errors import MolabenchError
from molabench.report.analysis_figures import fig3, fig4, fig5, fig6, load_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder holding record.json and model.pt")
    parser.add_argument("--baseline", type=Path, help="an HPS run to compare principal-component ratios with")
    parser.add_argument("--params-only", action="store_true", help="only the parameter-count figure")
    parser.add_argument("--out", type=Path, default=Path("results/figures"))
    parser.add_argument("--fig5-max-tasks", type=int, default=12, help="Fig. 5 counts T = 2..this (paper: 12)")
    args = parser.parse_args(argv)
    try:
        if args.params_only or args.run is None:
            fig5(args.out, max_tasks=args.fig5_max_tasks)
            return 0
        record, algorithm, data = load_run(args.run)
        out = args.out / record["run_id"]
        baseline = load_run(args.baseline)[1] if args.baseline else None
        fig3(algorithm, baseline, out)
        fig4(algorithm, out)
        fig5(out, max_tasks=args.fig5_max_tasks)
        if record["method"] == "mola_router":
            fig6(algorithm, data, out)
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
