"""Per-task BatchNorm (models/task_norm.py) against one nn.BatchNorm forward per task's sub-batch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from molabench.models.task_norm import (
    TaskBatchNorm1d,
    TaskBatchNorm2d,
    TaskNormContext,
    convert_batchnorm,
    sort_by_task,
    task_norm_layers,
)


def _pair(channels: int = 5, momentum: float | None = 0.1, affine: bool = True) -> tuple[nn.BatchNorm2d, nn.Module, TaskNormContext]:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(channels, momentum=momentum, affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    ref.running_mean.uniform_(-1, 1)
    ref.running_var.uniform_(0.5, 2)
    context = TaskNormContext()
    holder = nn.Sequential(copy.deepcopy(ref))
    assert convert_batchnorm(holder, context) == 1
    assert isinstance(holder[0], TaskBatchNorm2d)
    return ref, holder[0], context


def _reference(ref: nn.BatchNorm2d, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """LibMTL's semantics: task by task (ascending), each sub-batch through the BatchNorm alone."""
    out = torch.empty_like(x)
    for t in torch.unique(task).tolist():
        idx = torch.nonzero(task == t).flatten()
        out[idx] = ref(x[idx])
    return out


COUNTS = {"equal": [4, 4, 4], "unequal": [2, 7, 3], "absent": [5, 0, 4]}


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("layout", list(COUNTS))
def test_train_forward_and_running_stats_equal_per_task_forwards(layout: str, momentum: float | None) -> None:
    ref, bn, context = _pair(momentum=momentum)
    task = torch.repeat_interleave(torch.arange(3), torch.tensor(COUNTS[layout]))
    x = torch.randn(task.numel(), 5, 4, 3) * 3 + 2
    x.requires_grad_(True)
    with context.scope(task):
        y = bn(x)
    expected = _reference(ref, x.detach(), task)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-6, atol=1e-6)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == sum(n > 0 for n in COUNTS[layout])


@pytest.mark.parametrize("layout", list(COUNTS))
def test_backward_equals_per_task_forwards(layout: str) -> None:
    ref, bn, context = _pair()
    task = torch.repeat_interleave(torch.arange(3), torch.tensor(COUNTS[layout]))
    x = torch.randn(task.numel(), 5, 3, 3) * 2 - 1
    cot = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with context.scope(task):
        (bn(xa) * cot).sum().backward()
    (_reference(ref, xb, task) * cot).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)


def test_one_dimensional_inputs_and_no_affine() -> None:
    torch.manual_seed(1)
    ref = nn.BatchNorm1d(6, affine=False)
    context = TaskNormContext()
    holder = nn.Sequential(copy.deepcopy(ref))
    convert_batchnorm(holder, context)
    assert isinstance(holder[0], TaskBatchNorm1d)
    task = torch.tensor([0, 0, 0, 2, 2, 2, 2])
    x = torch.randn(7, 6)
    with context.scope(task):
        y = holder[0](x)
    out = torch.empty_like(x)
    for t in (0, 2):
        out[task == t] = ref(x[task == t])
    torch.testing.assert_close(y, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(holder[0].running_var, ref.running_var)


def test_eval_mode_and_no_context_are_plain_batchnorm() -> None:
    ref, bn, context = _pair()
    x = torch.randn(9, 5, 2, 2)
    bn.eval(), ref.eval()
    with context.scope(torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])):
        assert torch.equal(bn(x), ref(x))  # running statistics, bit for bit
    bn.train(), ref.train()
    assert torch.equal(bn(x), ref(x))  # no task context (e.g. single-input setting): whole-batch statistics
    assert torch.equal(bn.running_mean, ref.running_mean)


def test_context_requires_a_task_sorted_batch_and_matching_rows() -> None:
    _, bn, context = _pair()
    with pytest.raises(ValueError, match="sorted"):
        context.set(torch.tensor([1, 0, 1]))
    order = sort_by_task(torch.tensor([2, 0, 1, 0]))
    assert order is not None and order.tolist() == [1, 3, 2, 0]
    assert sort_by_task(torch.tensor([0, 0, 1])) is None
    with context.scope(torch.tensor([0, 0, 1, 1])), pytest.raises(RuntimeError, match="rows"):
        bn(torch.randn(3, 5, 2, 2))


def test_conversion_shares_parameters_and_skips_subtrees() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    weight, state = net[1].weight, {k: v.clone() for k, v in net.state_dict().items()}
    context = TaskNormContext()
    assert convert_batchnorm(net, context, skip=(net[2],)) == 1
    assert net[1].weight is weight and type(net[2][0]) is nn.BatchNorm2d
    assert list(net.state_dict()) == list(state) and all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    assert len(task_norm_layers(net)) == 1


def _arch(name: str, setting: str = "multi_input", **kw: object) -> nn.Module:
    from molabench.architectures import ARCHITECTURES, load_all
    from molabench.data.base import TaskSpec
    from molabench.models.backbones import build_backbone

    load_all()
    torch.manual_seed(0)
    tasks = [TaskSpec(f"t{i}", 3) for i in range(3)]
    return ARCHITECTURES.build(name, tasks=tasks, setting=setting, backbone=lambda: build_backbone("resnet18"), **kw)


def test_algorithm_converts_only_the_shared_network() -> None:
    from molabench.engine.algorithm import MultiTaskAlgorithm
    from molabench.errors import ConfigError
    from molabench.weighting import build

    hps = MultiTaskAlgorithm(_arch("hps"), build("ew"), {}, "per_task")
    assert hps.task_norm_layers == 20 == len(task_norm_layers(hps.arch.encoder))  # ResNet-18: stem + 16 + 3 downsample
    assert not task_norm_layers(hps.arch.heads)
    router = MultiTaskAlgorithm(_arch("mola_router", rank=2, router="light"), build("ew"), {}, "per_task")
    assert router.task_norm_layers == 22  # encoder + the light router's two (shared: it sees the whole batch)
    assert MultiTaskAlgorithm(_arch("single_task"), build("ew"), {}, "per_task").task_norm_layers == 0  # nothing shared
    assert MultiTaskAlgorithm(_arch("hps", "single_input"), build("ew"), {}, "per_task").task_norm_layers == 0
    with pytest.raises(ConfigError, match="uniform"):
        MultiTaskAlgorithm(_arch("uniform"), build("ew"), {}, "per_task")
    with pytest.raises(ConfigError, match="bn_stats"):
        MultiTaskAlgorithm(_arch("hps"), build("ew"), {}, "per_sample")
    batch = MultiTaskAlgorithm(_arch("hps"), build("ew"), {}, "batch")
    assert batch.task_norm_layers == 0 and not task_norm_layers(batch)


@pytest.mark.parametrize("batching", ["mixed", "per_task"])
def test_build_algorithm_with_per_task_statistics_trains(tiny_shapes, batching: str) -> None:
    from molabench.data.loader import BatchLoader
    from molabench.engine.algorithm import build_algorithm
    from molabench.engine.optim import build_optimizer

    method = {"name": "pcgrad", "architecture": {"name": "hps"}, "weighting": {"name": "pcgrad"}, "penalties": {}}
    torch.manual_seed(0)
    algorithm = build_algorithm(method, {"name": "resnet18"}, tiny_shapes, bn_stats="per_task")
    algorithm.optimizer = build_optimizer(algorithm.trainable_parameters(), {"name": "adam", "lr": 1e-3})
    batch = next(iter(BatchLoader(tiny_shapes, "train", 32, train=True, batching=batching)))
    first = algorithm.update(batch)
    for _ in range(5):
        last = algorithm.update(batch)
    assert last["loss"] < first["loss"]
    info = algorithm.describe()
    assert info["bn_stats_effective"] == "per_task" and info["grad_paths"] == {"sample_groups": 6}
    algorithm.eval()
    with torch.no_grad():
        out = algorithm.predict(batch.x, batch.task)  # eval: running statistics, no task context needed
    assert all(o is None or torch.isfinite(o).all() for o in out.outputs)


def test_a_task_with_one_value_per_channel_is_normalised_but_not_tracked() -> None:
    ref, bn, context = _pair()
    task = torch.tensor([0, 1, 1, 1])  # task 0: one sample on a 1 x 1 map (PyTorch refuses such a batch)
    x = torch.randn(4, 5, 1, 1)
    with context.scope(task):
        y = bn(x)
    # x - mu_0 = 0: the output is beta, up to the kernel's rounding of the mean times 1/sqrt(eps) ~ 316
    torch.testing.assert_close(y[0].flatten(), bn.bias.detach(), rtol=0, atol=1e-4)
    torch.testing.assert_close(y[1:], ref(x[1:]), rtol=1e-5, atol=1e-5)  # task 1 as alone
    torch.testing.assert_close(bn.running_var, ref.running_var)  # only task 1 updated the statistics
    assert int(bn.num_batches_tracked) == 1
