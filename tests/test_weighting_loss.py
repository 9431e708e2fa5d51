"""Loss-weighting methods behave as their papers say."""

from __future__ import annotations

import math

import pytest
import torch

from molabench.errors import ConfigError
from molabench.weighting import StepContext, build


def test_dwa_uses_loss_ratios_of_the_last_two_epochs() -> None:
    dwa = build("dwa", temperature=2.0)
    losses, present = torch.ones(3), torch.ones(3, dtype=torch.bool)
    assert torch.equal(dwa.weights(losses, present), torch.ones(3))  # epochs 1 and 2: w = 1
    dwa.on_epoch_end(0, torch.tensor([1.0, 1.0, 1.0]))
    assert torch.equal(dwa.weights(losses, present), torch.ones(3))
    dwa.on_epoch_end(1, torch.tensor([0.5, 1.0, 2.0]))
    r = torch.tensor([0.5, 1.0, 2.0])
    expected = 3 * torch.exp(r / 2) / torch.exp(r / 2).sum()
    assert torch.allclose(dwa.weights(losses, present), expected)
    assert float(dwa.weights(losses, present).sum()) == pytest.approx(3.0)


@pytest.mark.parametrize("distribution", ["normal", "dirichlet", "uniform"])
def test_rlw_draws_random_weights_on_the_simplex(distribution: str) -> None:
    torch.manual_seed(0)
    rlw = build("rlw", distribution=distribution)
    present = torch.tensor([True, False, True, True])
    draws = torch.stack([rlw.weights(torch.ones(4), present) for _ in range(50)])
    assert torch.allclose(draws.sum(1), torch.ones(50), atol=1e-6)
    assert (draws >= 0).all() and (draws[:, 1] == 0).all()
    assert draws[:, 0].std() > 0.01  # random, not constant
    torch.manual_seed(0)
    again = build("rlw", distribution=distribution)
    assert torch.equal(again.weights(torch.ones(4), present), draws[0])  # reproducible per seed


def test_uw_learns_log_variances() -> None:
    uw = build("uw", num_tasks=2)
    assert len(list(uw.parameters())) == 1
    losses = torch.tensor([2.0, 0.5], requires_grad=True)
    uw.backward(StepContext(losses=losses, present=torch.tensor([True, True]), shared_params=[], task_params=[]))
    # d/ds [exp(-s) L / 2 + s / 2] = (1 - exp(-s) L) / 2 at s = 0
    assert torch.allclose(uw.log_var.grad, torch.tensor([(1 - 2.0) / 2, (1 - 0.5) / 2]))
    assert torch.allclose(losses.grad, torch.tensor([0.5, 0.5]))
    opt = torch.optim.SGD(uw.parameters(), lr=0.1)
    opt.step()
    w = uw.weights(losses, torch.tensor([True, True]))
    assert w[0] < w[1]  # the task with the larger loss is down-weighted


def test_uw_and_gradnorm_need_num_tasks() -> None:
    with pytest.raises(ConfigError, match="num_tasks"):
        build("uw")
    with pytest.raises(ConfigError, match="num_tasks"):
        build("gradnorm")


def test_unknown_hyperparameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"weighting 'cagrad' does not take cc; it accepts: c, "):
        build("cagrad", cc=0.5)


def test_gradnorm_moves_weights_towards_balanced_gradient_norms() -> None:
    torch.manual_seed(0)
    z0 = torch.randn(4, 3)
    z = z0.clone().requires_grad_(True)
    gn = build("gradnorm", num_tasks=2, alpha=1.5)
    # task 0's loss has a 10x larger gradient at z than task 1's, same training rate
    losses = torch.stack([(10 * z[:, 0]).sum(), (z[:, 1]).sum()]) ** 2 / 100
    ctx = StepContext(losses=losses, present=torch.tensor([True, True]), shared_params=[], task_params=[], representation=z)
    gn.backward(ctx)
    g = gn.loss_weight.grad
    assert g[0] > 0 > g[1]  # SGD lowers the weight of the task with the larger gradient norm
    assert z.grad is not None
    with torch.no_grad():
        gn.loss_weight -= 0.5 * g
    gn._renormalise()
    assert float(gn.loss_weight.detach().sum()) == pytest.approx(2.0)
    assert math.isfinite(float(gn.loss_weight.detach().min())) and gn.loss_weight.min() > 0
