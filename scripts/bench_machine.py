"""The machine's fp32 matmul speed at 1 and 2 threads: ``results/bench/machine.json``.

Every timing in this repository (benchmarks, the demo, the tables' step ms) depends on it; quote
it beside them. ``make bench`` runs this first.

    .venv/bin/python scripts/bench_machine.py [--out results/bench/machine.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from molabench.atomic import write_json_atomic
from molabench.machine import matmul_gflops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/bench/machine.json"))
    args = parser.parse_args()
    speeds = {f"threads={t}": round(matmul_gflops(t), 1) for t in (1, 2)}
    payload = {
        "matmul_gflops_fp32": speeds, "size": 1024, "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json_atomic(args.out, payload)
    print("fp32 matmul GFLOP/s: " + ", ".join(f"{k} {v}" for k, v in speeds.items()))


if __name__ == "__main__":
    main()
