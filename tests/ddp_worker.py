"""Training of several small configurations in one process or as one rank of a ``torchrun`` launch,
for ``tests/test_distributed.py``: the final weights and the
evaluation of every split, per configuration.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT.pt CASES.json

``CASES.json``: ``{name: {"overrides": [override, ...], "float64": bool}}`` (Hydra overrides of
``configs/``; ``float64``: the model and the batches in double precision, where the comparison of two
ways of computing the same thing is not drowned by float32 rounding amplified by an ill-conditioned
computation, e.g. BatchNorm over a few samples per task). Rank 0 writes
``{name: {"state": state_dict, "metrics": metrics, "describe": ..., "traffic": ...}}`` to OUT.pt.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def compose(overrides: Sequence[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from molabench.config_path import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=list(overrides)), resolve=True)  # type: ignore[return-value]


class _Quiet:
    def set_headline(self, keys: Any) -> None: ...
    def log(self, values: Any, step: int) -> None: ...
    def finish(self, summary: Any) -> None: ...


def train_case(overrides: Sequence[str], dist: Any = None, float64: bool = False) -> dict[str, Any]:
    """Train one configuration (``dist``: as a rank of that group; None: alone) and return its final
    weights, the evaluation of every split, what the algorithm says about itself and the step times."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if float64 else torch.float32)  # the model, the normalised batches
    try:
        return _train_case(overrides, dist)
    finally:
        torch.set_default_dtype(previous)


def _train_case(overrides: Sequence[str], dist: Any) -> dict[str, Any]:
    from molabench.data import build_data
    from molabench.engine.algorithm import build_algorithm
    from molabench.engine.trainer import fit
    from molabench.run import seed_everything

    cfg = compose(overrides)
    seed = int(cfg["seed"])
    seed_everything(seed)
    data = build_data(cfg["data"])
    seed_everything(seed)
    algorithm = build_algorithm(cfg["method"], cfg["backbone"], data, cfg.get("head"), bn_stats=str(cfg["trainer"]["bn_stats"]))
    before = dict(dist.traffic) if dist is not None else {}
    start = time.perf_counter()
    result = fit(algorithm, data, cfg["trainer"], torch.device("cpu"), seed, _Quiet(), progress=False, dist=dist)
    traffic = {k: v - before.get(k, 0) for k, v in (dist.traffic if dist is not None else {}).items()}
    return {
        "state": {k: v.detach().clone() for k, v in algorithm.state_dict().items()},
        "metrics": result.metrics,
        "describe": algorithm.describe(),
        "timing": {**result.timing, "fit_s": time.perf_counter() - start},
        "traffic": traffic,
    }


def evaluate_state(overrides: Sequence[str], state: Mapping[str, torch.Tensor], float64: bool = False) -> dict[str, Any]:
    """Every split's evaluation, in this process, of the weights ``state`` of the configuration."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if float64 else torch.float32)
    try:
        return _evaluate_state(overrides, state)
    finally:
        torch.set_default_dtype(previous)


def _evaluate_state(overrides: Sequence[str], state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    from molabench.data import build_data
    from molabench.engine.algorithm import build_algorithm
    from molabench.engine.evaluate import evaluate
    from molabench.run import seed_everything

    cfg = compose(overrides)
    seed_everything(int(cfg["seed"]))
    data = build_data(cfg["data"])
    algorithm = build_algorithm(cfg["method"], cfg["backbone"], data, cfg.get("head"), bn_stats=str(cfg["trainer"]["bn_stats"]))
    algorithm.load_state_dict(dict(state))
    batch = int(cfg["trainer"].get("eval_batch_size") or max(int(cfg["trainer"]["batch_size"]), 256))
    return {split: evaluate(algorithm, data, split, batch, torch.device("cpu")) for split in data.splits}


def main(out: str, cases_path: str) -> None:
    from molabench.engine import distributed

    torch.set_num_threads(1)
    cases = json.loads(Path(cases_path).read_text())
    group = distributed.setup("cpu")
    results = {}
    try:
        for name, case in cases.items():
            results[name] = train_case(case["overrides"], group, bool(case.get("float64")))
    finally:
        if group is None or group.is_main:
            torch.save(results, out)
        distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
