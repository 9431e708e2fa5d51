"""The machine's speed, so that timings from different machines can be compared, and the timing
loop and summary the benchmark scripts share (:func:`interleaved_update_times`, :func:`timing_summary`).

``matmul_gflops(threads)`` is the best-of-N fp32 matrix-multiply rate at a thread count — the
number the benchmarks and the demo's budget statement quote (this project's 2-core machines read
69–140 GFLOP/s at 2 threads; a run's wall time scales roughly inversely with it).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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


def interleaved_update_times(
    runners: Mapping[str, tuple[Any, Mapping[str, torch.Tensor]]],
    batch: Any,
    rounds: int,
    name: str = "",
    after_warmup: Callable[[], None] | None = None,
    batches: Mapping[str, Any] | None = None,
) -> dict[str, list[float]]:
    """Seconds of ``algorithm.update(batch)`` per runner (``label -> (algorithm, initial state)``),
    one step each per round in turn, every step from the same initial state: a slow drift of a shared
    machine then hits every runner alike. Round 0 warms up (not timed; ``after_warmup`` runs after it).
    ``batches`` gives some runners a batch of their own instead of ``batch``."""
    times: dict[str, list[float]] = {label: [] for label in runners}
    own = dict(batches or {})
    started = time.time()
    for r in range(rounds + 1):
        for label, (algorithm, state0) in runners.items():
            algorithm.load_state_dict(state0)
            step_batch = own.get(label, batch)
            start = time.perf_counter()
            algorithm.update(step_batch)
            if r:
                times[label].append(time.perf_counter() - start)
        if r == 0 and after_warmup is not None:
            after_warmup()
        print(f"{name + ': ' if name else ''}round {r}/{rounds} ({time.time() - started:.0f}s)", flush=True)
    return times


def timing_summary(times: Mapping[str, Sequence[float]], reference: str) -> dict[str, dict[str, float]]:
    """Per label: median, min and spread ((max - min) / median) of its times, the number of rounds
    and ``ratio_to_<reference>``: the median over rounds of its time over the reference's *in the
    same round* (paired: a slow stretch of a shared machine hits both sides of a ratio), with
    ``ratio_spread`` ((max - min) / median of those per-round ratios)."""
    base = times[reference]
    out = {}
    for label, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base, strict=True)]
        ratio = statistics.median(ratios)
        out[label] = {
            "median_s": statistics.median(ts), "min_s": min(ts), "spread": (max(ts) - min(ts)) / statistics.median(ts),
            f"ratio_to_{reference}": ratio, "ratio_spread": (max(ratios) - min(ratios)) / ratio, "rounds": len(ts),
        }
    return out
