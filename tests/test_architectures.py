import pytest
import torch
import torch.nn.functional as F

from molabench.architectures import ARCHITECTURES, load_all
from molabench.architectures.base import task_groups
from molabench.data.base import TaskSpec
from molabench.models.backbones import build_backbone

load_all()
TASKS = [TaskSpec("a", 3), TaskSpec("b", 5)]


def make(name, setting="multi_input", tasks=TASKS):
    torch.manual_seed(0)
    return ARCHITECTURES.build(name, tasks=tasks, setting=setting, backbone=lambda: build_backbone("resnet18"))


def batch(n=6):
    torch.manual_seed(1)
    return torch.randn(n, 3, 16, 16), torch.tensor([0, 1, 0, 1, 1, 0][:n])


def test_task_groups():
    task = torch.tensor([1, 0, 1])
    groups = task_groups(task, 3, "multi_input")
    assert groups[0].tolist() == [1] and groups[1].tolist() == [0, 2] and groups[2] is None
    assert all(g.tolist() == [0, 1, 2] for g in task_groups(task, 2, "single_input"))


@pytest.mark.parametrize("name", ["hps", "single_task", "uniform"])
def test_outputs_per_task(name):
    arch = make(name)
    x, task = batch()
    fwd = arch(x, task)
    widths = {"uniform": [8, 8]}.get(name, [3, 5])
    for t, (out, idx) in enumerate(zip(fwd.outputs, fwd.groups, strict=True)):
        assert out.shape == (int((task == t).sum()), widths[t])
        assert torch.equal(idx, torch.nonzero(task == t).flatten())


def test_hps_shares_the_encoder_and_exposes_the_representation():
    arch = make("hps")
    shared = {id(p) for p in arch.shared_parameters()}
    assert shared == {id(p) for p in arch.encoder.parameters()}
    assert {id(p) for p in arch.task_specific_parameters()} == {id(p) for p in arch.heads.parameters()}
    x, task = batch()
    assert arch(x, task).representation.shape == (6, 512)


def test_single_task_networks_are_independent():
    arch = make("single_task").eval()
    x, task = batch()
    fwd = arch(x, task)
    F.cross_entropy(fwd.outputs[0], torch.zeros(3, dtype=torch.long)).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in arch.encoders[1].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in arch.encoders[0].parameters())
    assert list(arch.shared_parameters()) == []


def test_uniform_uses_no_task_information():
    arch = make("uniform").eval()
    x, task = batch()
    swapped = arch(x, 1 - task)
    plain = arch(x, task)
    # same logits for every sample whatever task id it carries
    by_sample = torch.empty(6, 8)
    for out, idx in zip(plain.outputs, plain.groups, strict=True):
        by_sample[idx] = out
    for out, idx in zip(swapped.outputs, swapped.groups, strict=True):
        assert torch.allclose(by_sample[idx], out)
    assert arch.target(1, torch.tensor([0, 4])).tolist() == [3, 7]


def test_uniform_in_the_domain_setting_shares_one_label_set():
    arch = make("uniform", setting="domain", tasks=[TaskSpec("d1", 4), TaskSpec("d2", 4)])
    assert arch.head.out_features == 4 and arch.target(1, torch.tensor([2])).tolist() == [2]


def test_single_task_skips_a_task_with_one_training_sample():
    arch = make("single_task").train()
    x, task = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 1, 1])
    fwd = arch(x, task)
    assert fwd.outputs[0] is None and fwd.groups[0] is None
    assert fwd.outputs[1].shape == (3, 5)
    assert arch.eval()(x, task).outputs[0].shape == (1, 3)
