"""Data-parallel training under torchrun (issue 17): N ranks x batch B compute what one process computes
with batch N x B; evaluation is reduced over the ranks; only rank 0 writes; a killed launch resumes.

The multi-process tests start real ``torchrun`` launches of 2 gloo processes on the CPU
(``--standalone``: a free port each time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from molabench.data.augment import RandomResizedCropFlip
from molabench.data.loader import BatchLoader
from molabench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer=smoke", "data.n_train=16", "data.n_val=8", "data.n_test=8", "data.image_size=16"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLABENCH_TEST_PAUSE", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **extra}


def _records(results: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").rglob("record.json"))]


# -- the data: the ranks' shards are the global batch of one process ------------------------------


@pytest.mark.parametrize("batching", ["mixed", "per_task"])
def test_the_ranks_load_the_rows_of_one_process_global_batch(tiny_shapes, batching):
    data = replace(tiny_shapes, augment=RandomResizedCropFlip(scale=(0.5, 1.0)))  # per-sample random parameters
    one = BatchLoader(data, "train", 16, train=True, batching=batching, seed=3)
    ranks = [BatchLoader(data, "train", 8, train=True, batching=batching, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 96 // 16
    for _ in range(2):  # two epochs: the shuffles and the per-task cyclers stay in step
        for whole, *shards in zip(one, *ranks, strict=True):
            for r, shard in enumerate(shards):
                assert torch.equal(shard.x, whole.x[r::2]) and torch.equal(shard.task, whole.task[r::2])
                assert torch.equal(shard.y, whole.y[r::2])
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict()["gen"], ranks[1].state_dict()["gen"], strict=True))


def test_evaluation_shards_cover_the_split_once(tiny_shapes):
    seen = torch.cat([
        torch.cat([b.x.flatten(1) for b in BatchLoader(tiny_shapes, "val", 5, train=False, rank=r, world_size=3)]) for r in range(3)
    ])
    whole = torch.cat([b.x.flatten(1) for b in BatchLoader(tiny_shapes, "val", 5, train=False)])
    assert seen.shape == whole.shape
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, whole.tolist()))


def test_a_run_keeps_its_number_of_processes(tmp_path):
    from molabench.run import _check_world_size

    checkpoint = tmp_path / "r" / "checkpoint.pt"
    _check_world_size("resume", {"world_size": 2}, 2, "r", checkpoint)
    _check_world_size("resume", {}, 1, "r", checkpoint)  # checkpoints of one process before DDP existed
    with pytest.raises(ConfigError, match=r"written by 2 processes \(torchrun\) and this launch has one process.*torchrun --nproc_per_node=2.*trainer.resume=never"):
        _check_world_size("resume", {"world_size": 2}, 1, "r", checkpoint)
    with pytest.raises(ConfigError, match=r"complete .* trained by one process; this launch has 4 processes"):
        _check_world_size("skip", {"status": "complete"}, 4, "r", checkpoint)


def test_sync_bn_left_at_its_default_keeps_run_ids():
    from molabench.engine.checkpoint import fingerprint

    config = {"method": {"name": "hps"}, "trainer": {"epochs": 2}}
    assert fingerprint({**config, "trainer": {"epochs": 2, "sync_bn": False}}) == fingerprint(config)
    assert fingerprint({**config, "trainer": {"epochs": 2, "sync_bn": True}}) != fingerprint(config)


# -- equivalence: 2 ranks x B == 1 process x 2B ---------------------------------------------------

BASE = [*TINY, "trainer.epochs=3", "trainer.max_steps_per_epoch=1", "trainer.selection=last", "trainer.batch_size=8", "seed=0"]
# ViT (no BatchNorm), mixed batches, float32, SGD: equal to float32 rounding. (Adam divides by the
# gradient's running magnitude: a component whose gradient is rounding noise moves by +-lr either
# way, so Adam runs are compared in float64.)
VIT = ["backbone=vit_tiny", "backbone.patch_size=8", "trainer.batching=mixed", "trainer.optimizer.name=sgd", "trainer.optimizer.lr=0.05"]
# ResNet with per-task statistics synchronised over the ranks, per-task batches, Adam, float64: per-task
# BatchNorm over a few samples is ill-conditioned (float32 gradients of one process are off by up to
# 2% from float64 ones), so float32 rounding would hide what is compared.
RESNET = ["backbone=resnet18_small", "trainer.bn_stats=per_task", "trainer.sync_bn=true", "trainer.batching=per_task"]
METHODS = ["ew", "dwa", "pcgrad", "mgda"]  # EW, a loss weighting with state, two gradient methods
CASES = {
    **{f"vit-{m}": {"overrides": [*BASE, *VIT, f"method={m}"], "float64": False, "tolerance": 2e-7} for m in METHODS},
    **{f"resnet-{m}": {"overrides": [*BASE, *RESNET, f"method={m}"], "float64": True, "tolerance": 1e-10} for m in METHODS},
}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[str, Any]:
    """Every case trained by one torchrun launch of 2 processes (tests/ddp_worker.py)."""
    folder = tmp_path_factory.mktemp("ddp")
    (folder / "cases.json").write_text(json.dumps(CASES))
    start = time.perf_counter()
    proc = subprocess.run(
        [*TORCHRUN, str(ROOT / "tests" / "ddp_worker.py"), str(folder / "out.pt"), str(folder / "cases.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\n2-rank launch of {len(CASES)} cases: {time.perf_counter() - start:.1f}s")
    return torch.load(folder / "out.pt", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_train_what_one_process_trains_with_the_double_batch(two_ranks, name):
    from tests.ddp_worker import evaluate_state, train_case

    case = CASES[name]
    overrides = [o.replace("trainer.batch_size=8", "trainer.batch_size=16") for o in case["overrides"]]
    one = train_case(overrides, None, case["float64"])
    ddp = two_ranks[name]
    assert ddp["state"].keys() == one["state"].keys()
    worst, scale = 0.0, 0.0
    for key, value in one["state"].items():
        if not value.is_floating_point():
            assert torch.equal(value, ddp["state"][key]), key  # BatchNorm's batch counters
            continue
        worst = max(worst, float((value - ddp["state"][key]).abs().max()))
        scale = max(scale, float(value.abs().max()))
    print(f"\n{name}: max |parameter difference| {worst:.3g} (parameter scale {scale:.3g}), paths {ddp['describe'].get('grad_paths')}")
    assert worst <= case["tolerance"] * max(1.0, scale), (worst, scale)
    assert ddp["describe"].get("grad_paths") == one["describe"].get("grad_paths")  # the same per-task gradient path
    if name.startswith("resnet"):
        assert ddp["describe"]["bn_sync"].startswith("synchronised over 2 ranks")
    # the evaluation reduced over the ranks is that of the same weights in one process
    alone = evaluate_state(case["overrides"], ddp["state"], case["float64"])
    assert alone.keys() == ddp["metrics"].keys()
    for split, tasks in alone.items():
        for task, values in tasks.items():
            assert values.keys() == ddp["metrics"][split][task].keys()
            for metric, value in values.items():
                if metric == "acc" or metric == "n":
                    assert value == ddp["metrics"][split][task][metric], (split, task, metric)
                else:
                    assert value == pytest.approx(ddp["metrics"][split][task][metric], rel=1e-6, abs=1e-6), (split, task, metric)
