"""TwD loss: vectorised form equals the paper's double sum; smaller when same-task embeddings agree."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from molabench.architectures.base import Forward
from molabench.data.base import Batch
from molabench.penalties.base import PenaltyContext
from molabench.penalties.twd import TwD, twd_loss


def double_loop(omega: torch.Tensor, task: torch.Tensor, tau: float) -> float:
    """-1/|P| sum_{i != j, t_i = t_j} log( exp(w_i.w_j/tau) / sum_{k != i} exp(w_i.w_k/tau) ), literally."""
    n, total, pairs = omega.shape[0], 0.0, 0
    for i in range(n):
        denom = sum(math.exp(float(omega[i] @ omega[k]) / tau) for k in range(n) if k != i)
        for j in range(n):
            if i != j and task[i] == task[j]:
                total += math.log(math.exp(float(omega[i] @ omega[j]) / tau) / denom)
                pairs += 1
    return -total / pairs


def test_matches_double_loop() -> None:
    g = torch.Generator().manual_seed(0)
    for tau in (1.0, 0.3):
        omega = F.normalize(torch.randn(11, 6, generator=g, dtype=torch.float64), dim=1)
        task = torch.randint(0, 3, (11,), generator=g)
        assert math.isclose(float(twd_loss(omega, task, tau)), double_loop(omega, task, tau), rel_tol=1e-10)


def test_smaller_when_same_task_agrees() -> None:
    g = torch.Generator().manual_seed(1)
    task = torch.arange(4).repeat_interleave(5)
    centres = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    aligned = F.normalize(centres[task] + 0.05 * torch.randn(20, 8, generator=g), dim=1)
    scattered = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    assert twd_loss(aligned, task) < twd_loss(scattered, task)


def test_no_positive_pair_gives_zero_with_gradient_path() -> None:
    omega = F.normalize(torch.randn(3, 4, requires_grad=True), dim=1)
    loss = twd_loss(omega, torch.arange(3))
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_penalty_module_shapes_and_disabled() -> None:
    torch.manual_seed(0)
    task = torch.tensor([0, 0, 1, 1, 2])
    batch = Batch(torch.zeros(5, 1, 2, 2), torch.zeros(5, dtype=torch.long), task)
    logits = torch.randn(5, 2, 3, requires_grad=True)  # two per-stage routers, E = 3
    pen = TwD(weight=0.1, num_experts=3, num_routers=2, omega_dim=16)
    ctx = PenaltyContext(batch, Forward([], [], None, {"router_logits": logits}), torch.zeros(3))
    value = pen(ctx)
    omega = pen.embed(logits)
    want = (twd_loss(omega[:, 0], task) + twd_loss(omega[:, 1], task)) / 2
    torch.testing.assert_close(value, want)
    value.backward()
    assert logits.grad is not None and all(p.grad is not None for p in pen.parameters())
    off = TwD(weight=0.1, num_experts=3, num_routers=2, enabled=False)
    assert off.weight == 0.0 and not list(off.parameters()) and float(off(ctx)) == 0.0
