"""Dense single-input tasks end to end: every applicable method trains on the built-in scenes,
records the nine NYUv2 metrics and Δm%, tables show them; impossible combinations fail in one line."""

from __future__ import annotations

import math

import pytest
import torch
from tests.cli import assert_one_line_error, records, train

from molabench.data import build_data
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import build_algorithm
from molabench.engine.evaluate import evaluate
from molabench.engine.optim import build_optimizer
from molabench.report.tables import main as tables_main

TINY = ["data=scenes", "data.n_train=8", "data.n_val=4", "data.n_test=4", "data.height=32", "data.width=48", "trainer=smoke", "trainer.batch_size=4"]
NINE = {
    "segmentation": {"miou", "pix_acc"},
    "depth": {"abs_err", "rel_err"},
    "normal": {"mean", "median", "within_11.25", "within_22.5", "within_30"},
}


@pytest.fixture(scope="module")
def tiny_scenes():
    return build_data({"name": "scenes", "n_train": 8, "n_val": 4, "n_test": 4, "height": 32, "width": 48})


@pytest.mark.slow
def test_every_dense_method_trains_records_nine_metrics_and_delta_m(tmp_path):
    methods = "single_task,hps,mola_grad,mola_router,pcgrad,mgda_ub"
    proc = train("-m", f"method={methods}", *TINY, results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = {r["method"]: r for r in records(tmp_path)}
    assert set(runs) == set(methods.split(","))
    for method, record in runs.items():
        assert record["status"] == "complete" and record["setting"] == "single_input"
        for split in ("val", "test"):
            for task, metrics in NINE.items():
                assert metrics <= set(record["metrics"][split][task]), (method, split, task)
        assert record["config"]["backbone"]["name"] == "resnet18_dilated"  # the data's default
        assert record["selection"]["criterion"] == "loss"  # lowest summed validation loss
    assert runs["mola_grad"]["config"]["method"]["stages"] == ["layer4"]  # dense default placement
    # single_task ran first: every later run's record has its Δm% against it
    for method in ("hps", "mola_grad", "mola_router", "pcgrad", "mgda_ub"):
        summary = runs[method]["summary"]
        assert summary["baseline_runs"] == 1
        assert summary["delta_m"] is None or math.isfinite(summary["delta_m"]), summary
    assert tables_main(["--results", str(tmp_path)]) == 0
    table = (tmp_path / "tables" / "scenes__scenes__val.md").read_text()
    assert "seg_mIoU" in table and "normal_11.25" in table and "delta_m" in table
    assert "Stand-in data" in table and "(4.72)" in table  # the paper's HPS Δm% beside ours


@pytest.mark.slow
def test_dense_run_prints_the_nine_metrics(tmp_path):
    proc = train(*TINY, "method=hps", results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for label in ("mIoU", "PixAcc", "AbsErr", "RelErr", "Mean", "Median", "11.25", "22.5", "30"):
        assert label in proc.stdout
    assert "val/segmentation/miou" in proc.stdout  # the epoch line shows every task's primary metric


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["method=uniform"], ("method=uniform", "single-input")),
        (["backbone=vit_tiny"], ("spatial feature map", "vit_tiny", "resnet18_dilated")),
        (["head=aspp", "head.rates=[]"], ("head.rates",)),
        (["head.channels=0"], ("head.channels",)),
        (["trainer.selection=delta_m"], ("trainer.selection_baseline",)),
    ],
)
def test_impossible_dense_configurations_fail_in_one_line(tmp_path, args, fragments):
    assert_one_line_error(train(*TINY, *args, results=tmp_path), *fragments)


def test_dense_evaluation_does_not_depend_on_batch_size(tiny_scenes):
    torch.manual_seed(0)
    method = {"name": "hps", "architecture": {"name": "hps"}, "weighting": {"name": "ew"}, "penalties": {}}
    algorithm = build_algorithm(method, {"name": "resnet18_dilated"}, tiny_scenes, {"name": "psp"})
    algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "adam", "lr": 1e-3})
    for batch in BatchLoader(tiny_scenes, "train", 4, train=True):
        algorithm.update(batch)
    device = torch.device("cpu")
    one = evaluate(algorithm, tiny_scenes, "test", 4, device)
    several = evaluate(algorithm, tiny_scenes, "test", 3, device)
    for task in NINE:
        for metric in NINE[task]:
            assert one[task][metric] == pytest.approx(several[task][metric], rel=1e-6, abs=1e-9), (task, metric)


def test_per_task_gradients_through_the_representation_are_exact(tiny_scenes):
    """HPS on dense data: the two-stage chain rule gives autograd's per-task gradients."""
    from molabench.weighting.pertask import task_gradients

    torch.manual_seed(0)
    method = {"name": "hps", "architecture": {"name": "hps"}, "weighting": {"name": "ew"}, "penalties": {}}
    algorithm = build_algorithm(method, {"name": "resnet18_dilated"}, tiny_scenes, {"name": "psp", "channels": 16})
    algorithm.train()
    batch = next(iter(BatchLoader(tiny_scenes, "train", 4, train=True)))
    shared = list(algorithm.arch.shared_parameters())
    heads = list(algorithm.arch.task_specific_parameters())
    fwd = algorithm.arch(batch.x, batch.task)
    losses, _ = algorithm.task_losses(fwd, batch)
    fast = task_gradients(losses, shared, heads, fwd.groups, "auto", retain_graph=True, through=fwd.representation)
    for t in range(3):
        reference = torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True)
        flat = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(reference, shared, strict=True)])
        assert torch.allclose(fast.G[t], flat, rtol=1e-4, atol=1e-6 * float(flat.abs().max()))
    summed = torch.autograd.grad(losses.sum(), heads, allow_unused=True)
    for got, want in zip(fast.others, summed, strict=True):
        assert (got is None) == (want is None) and (got is None or torch.allclose(got, want, rtol=1e-5, atol=1e-7))


def _weighting_names() -> list[str]:
    from molabench.weighting import WEIGHTINGS

    return WEIGHTINGS.names()


@pytest.mark.parametrize("weighting", _weighting_names())
def test_every_weighting_trains_on_dense_data(tiny_scenes, weighting):
    """All 15 loss/gradient weightings on HPS with dense heads: finite steps that move the weights."""
    torch.manual_seed(0)
    method = {"name": weighting, "architecture": {"name": "hps"}, "weighting": {"name": weighting}, "penalties": {}}
    algorithm = build_algorithm(method, {"name": "resnet18_dilated"}, tiny_scenes, {"name": "psp", "channels": 8})
    algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "adam", "lr": 1e-3})
    before = [p.detach().clone() for p in algorithm.arch.shared_parameters()]
    for batch in BatchLoader(tiny_scenes, "train", 4, train=True):
        logs = algorithm.update(batch)
        assert math.isfinite(logs["loss"])
    after = list(algorithm.arch.shared_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    for name in ("segmentation", "depth", "normal"):
        assert f"loss/{name}" in logs
