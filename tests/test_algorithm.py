import pytest
import torch

from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import build_algorithm
from molabench.engine.optim import build_optimizer, build_scheduler
from molabench.errors import ConfigError, TrainingError

HPS = {"name": "hps", "architecture": {"name": "hps"}, "weighting": {"name": "ew"}, "penalties": {}}
BACKBONE = {"name": "resnet18", "small_input": False, "pretrained": None}


def _algorithm(data, method=HPS, lr=1e-3):
    torch.manual_seed(0)
    algorithm = build_algorithm(method, BACKBONE, data)
    algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "adam", "lr": lr})
    return algorithm


def test_update_reduces_the_loss_on_a_fixed_batch(tiny_shapes):
    algorithm = _algorithm(tiny_shapes)
    batch = next(iter(BatchLoader(tiny_shapes, "train", 32, train=True, batching="per_task")))
    first = algorithm.update(batch)
    for _ in range(15):
        last = algorithm.update(batch)
    assert last["loss"] < 0.5 * first["loss"]
    assert set(first) >= {"loss", "loss/shape", "loss/colour", "loss/size", "loss/quadrant"}


def test_absent_tasks_are_masked(tiny_shapes):
    algorithm = _algorithm(tiny_shapes)
    batch = next(iter(BatchLoader(tiny_shapes, "train", 32, train=True, batching="per_task")))
    keep = batch.task < 2
    from molabench.data.base import Batch

    logs = algorithm.update(Batch(batch.x[keep], batch.y[keep], batch.task[keep]))
    assert "loss/size" not in logs and "loss/shape" in logs


def test_non_finite_loss_stops_with_a_clear_error(tiny_shapes):
    algorithm = _algorithm(tiny_shapes)
    batch = next(iter(BatchLoader(tiny_shapes, "train", 8, train=True)))
    batch.x[:] = float("nan")
    with pytest.raises(TrainingError, match=r"lower trainer\.optimizer\.lr"):
        algorithm.update(batch)


def test_unknown_names_are_config_errors(tiny_shapes):
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_algorithm({**HPS, "architecture": {"name": "nope"}}, BACKBONE, tiny_shapes)
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_algorithm(HPS, {"name": "resnet7"}, tiny_shapes)


def test_schedules():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], {"name": "sgd", "lr": 1.0})
    sched = build_scheduler(opt, {"name": "cosine"}, total_steps=10, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and abs(lrs[5] - 0.5) < 1e-9 and lrs == sorted(lrs, reverse=True)
    opt = build_optimizer([param], {"name": "sgd", "lr": 1.0})
    sched = build_scheduler(opt, {"name": "step", "step_size": 2, "gamma": 0.1}, total_steps=30, steps_per_epoch=3)
    lrs = []
    for _ in range(12):
        lrs.append(round(opt.param_groups[0]["lr"], 6))
        opt.step()
        sched.step()
    assert lrs == [1.0] * 6 + [0.1] * 6
    with pytest.raises(ConfigError, match="lr must be positive"):
        build_optimizer([param], {"name": "sgd", "lr": 0})


def test_an_option_the_optimiser_or_schedule_does_not_take_is_an_error_not_ignored():
    param = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ConfigError, match=r"trainer\.optimizer\.momentum does not apply to optimizer adam"):
        build_optimizer([param], {"name": "adam", "lr": 1e-3, "momentum": 0.9})
    opt = build_optimizer([param], {"name": "adam", "lr": 1e-3, "momentum": None})  # null: not set
    assert isinstance(opt, torch.optim.Adam)
    assert build_optimizer([param], {"name": "sgd", "lr": 1e-3, "momentum": None}).defaults["momentum"] == 0.9
    with pytest.raises(ConfigError, match=r"trainer\.scheduler\.step_size does not apply to scheduler cosine"):
        build_scheduler(opt, {"name": "cosine", "step_size": 5}, total_steps=10, steps_per_epoch=5)
    build_scheduler(opt, {"name": "cosine", "step_size": None, "gamma": None, "warmup_epochs": None}, total_steps=10, steps_per_epoch=5)
