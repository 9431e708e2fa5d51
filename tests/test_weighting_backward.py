"""Every weighting's backward() trains an HPS model: grads filled, one SGD step helps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from molabench.architectures.base import SharedEncoderWithHeads
from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder
from molabench.weighting import WEIGHTINGS, StepContext, build, load_all

load_all()
T = 3


class TinyEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__(16, "tiny")
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def toy(setting: str) -> tuple[SharedEncoderWithHeads, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SharedEncoderWithHeads([TaskSpec(f"t{i}", 4) for i in range(T)], setting, TinyEncoder())  # type: ignore[arg-type]
    x = torch.randn(24, 3, 8, 8)
    task = torch.arange(24) % T if setting == "multi_input" else torch.zeros(24, dtype=torch.long)
    return model, x, task, torch.randint(0, 4, (24, T))


def context(model: SharedEncoderWithHeads, x: torch.Tensor, task: torch.Tensor, y: torch.Tensor, extra: bool = False) -> StepContext:
    fw = model(x, task)
    losses = torch.stack([F.cross_entropy(o, y[g, t]) for t, (o, g) in enumerate(zip(fw.outputs, fw.groups, strict=True))])
    penalty = 1e-3 * fw.representation.pow(2).mean() if extra else None
    return StepContext(
        losses=losses, present=torch.ones(T, dtype=torch.bool), shared_params=list(model.shared_parameters()),
        task_params=list(model.task_specific_parameters()), representation=fw.representation, extra_loss=penalty,
        groups=fw.groups,
    )


@pytest.mark.parametrize("setting", ["multi_input", "single_input"])
@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_backward_fills_grads_and_one_step_decreases_the_loss(name: str, setting: str) -> None:
    model, x, task, y = toy(setting)
    weighting = build(name, num_tasks=T)
    params = [*model.parameters(), *weighting.parameters()]
    opt = torch.optim.SGD(params, lr=0.05)
    ctx = context(model, x, task, y, extra=True)
    before = float(ctx.losses.detach().sum())
    opt.zero_grad()
    logs = weighting.backward(ctx)
    assert all(isinstance(v, float) for v in logs.values())
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.encoder.parameters())
    opt.step()
    after = float(context(model, x, task, y).losses.detach().sum())
    assert after < before


def test_extra_loss_gradient_is_added_exactly_once() -> None:
    model, x, task, y = toy("multi_input")
    weighting = build("pcgrad")
    ctx = context(model, x, task, y)
    shared = ctx.shared_params
    weighting.backward(ctx)
    base = [p.grad.clone() for p in shared]
    model.zero_grad()
    ctx = context(model, x, task, y)
    extra = 1e-3 * ctx.representation.pow(2).mean()
    ctx.extra_loss = extra
    torch.manual_seed(0)
    weighting.backward(ctx)
    ctx2 = context(model, x, task, y)
    expected = torch.autograd.grad(1e-3 * ctx2.representation.pow(2).mean(), shared, allow_unused=True)
    for p, b, e in zip(shared, base, expected, strict=True):
        assert torch.allclose(p.grad, b + (0 if e is None else e), atol=1e-6)


def test_ub_variants_need_a_representation() -> None:
    model, x, task, y = toy("multi_input")
    ctx = context(model, x, task, y)
    ctx.representation = None
    with pytest.raises(ConfigError, match="representation"):
        build("mgda_ub").backward(ctx)


def test_ub_gradient_equals_weighted_loss_backward() -> None:
    """MGDA-UB's encoder gradient equals backward(sum_t alpha_t L_t), as in Sener & Koltun."""
    model, x, task, y = toy("single_input")
    w = build("mgda_ub")
    w.backward(context(model, x, task, y))
    got = [p.grad.clone() for p in model.encoder.parameters()]
    alpha = w.last_weights
    model.zero_grad()
    ctx = context(model, x, task, y)
    (alpha.to(ctx.losses) * ctx.losses).sum().backward()
    for g, p in zip(got, model.encoder.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)
