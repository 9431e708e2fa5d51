"""The benches' shared timing helpers (``molabench.machine``): interleaving, per-runner batches, paired ratios."""

from __future__ import annotations

import pytest

from molabench.machine import interleaved_update_times, timing_summary


class _Recorder:
    """An algorithm stand-in that records the batches it updates on and the states it is reset to."""

    def __init__(self, log: list[tuple[str, object]], label: str) -> None:
        self.log, self.label, self.state = log, label, None

    def load_state_dict(self, state: object) -> None:
        self.state = state

    def update(self, batch: object) -> None:
        self.log.append((self.label, batch))


def test_interleaved_runs_every_runner_once_a_round_from_its_initial_state_on_its_own_batch() -> None:
    log: list[tuple[str, object]] = []
    runners = {name: (_Recorder(log, name), {"w": name}) for name in ("a", "b", "c")}
    warmed: list[int] = []
    times = interleaved_update_times(
        runners, "shared", rounds=2, after_warmup=lambda: warmed.append(len(log)), batches={"b": "own"}
    )
    # round 0 warms up (untimed), then two timed rounds, runners in turn each round
    assert [label for label, _ in log] == ["a", "b", "c"] * 3
    assert warmed == [3]
    assert {label: len(ts) for label, ts in times.items()} == {"a": 2, "b": 2, "c": 2}
    assert {label: batch for label, batch in log} == {"a": "shared", "b": "own", "c": "shared"}
    assert all(runner.state == {"w": name} for name, (runner, _) in runners.items())


def test_timing_summary_pairs_ratios_round_by_round() -> None:
    # the machine slows down 3x in round 2 for both sides: the paired ratio stays exactly 2
    out = timing_summary({"ref": [1.0, 3.0, 1.0], "x": [2.0, 6.0, 2.0]}, reference="ref")
    assert out["x"]["ratio_to_ref"] == pytest.approx(2.0)
    assert out["x"]["ratio_spread"] == pytest.approx(0.0)
    assert out["x"]["median_s"] == 2.0 and out["x"]["min_s"] == 2.0 and out["x"]["rounds"] == 3
    assert out["x"]["spread"] == pytest.approx((6.0 - 2.0) / 2.0)
    assert out["ref"]["ratio_to_ref"] == 1.0
