"""The machine's speed, so that timings from different machines can be compared.

``matmul_gflops(threads)`` is the best-of-N fp32 matrix-multiply rate at a thread count — the
number the benchmarks and the demo's budget statement quote (this project's 2-core machines read
69–140 GFLOP/s at 2 threads; a run's wall time scales roughly inversely with it).
"""

from __future__ import annotations

import time

import torch


def matmul_gflops(threads: int | None = None, size: int = 1024, repeats: int = 20) -> float:
    """fp32 GFLOP/s of a ``size`` x ``size`` matmul at ``threads`` threads (best of ``repeats``);
    the thread setting is restored afterwards."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9
