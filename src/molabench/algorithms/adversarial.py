"""``adversarial``: a model and the discriminators of its adversary penalties, updated in separate steps
with separate optimisers (DomainBed's DANN schedule; MMD-AAE's prior adversary).

The discriminators' parameters (``Adversary.discriminator_parameters``) leave the main optimiser and get
one of their own: ``trainer.optimizer`` with the penalty's ``optimizer_options`` (DANN: Adam betas
(0.5, 0.9), weight decay 0) and ``lr_d`` when set. Two schedules:

- ``alternating`` (DomainBed's DANN): an update counter u = 1, 2, … (incremented first); when
  u mod (1 + k) < k (k = ``d_steps_per_g_step``) the update is a discriminator step (the model's forward
  without gradient, ``discriminator_loss`` on the detached features, the discriminator's optimiser),
  otherwise a generator step (the usual update: task losses + the penalties' generator terms, the main
  optimiser). k = 1 gives G, D, G, D, …: the classifier trains on half the updates.
- ``each_step`` (MMD-AAE): every update is a generator step followed by a discriminator step on the same
  batch's detached features.

Every update advances the step counter and the main schedule (progress counts updates of both kinds).

Under torchrun a discriminator step averages the ranks' discriminator losses (each on its rows) and
sums their gradients before its optimiser step; the generator step is the usual distributed step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from molabench.algorithms import ALGORITHMS
from molabench.architectures.base import Architecture
from molabench.data.base import Batch
from molabench.engine.algorithm import MultiTaskAlgorithm
from molabench.errors import ConfigError
from molabench.penalties.base import Adversary, Penalty
from molabench.weighting.base import Weighting

SCHEDULES = ("alternating", "each_step")


class AdversarialAlgorithm(MultiTaskAlgorithm):
    def __init__(
        self, arch: Architecture, weighting: Weighting, penalties: Mapping[str, Penalty], bn_stats: str = "batch",
        schedule: str = "alternating", d_steps_per_g_step: int = 1, lr_d: float | None = None,
    ) -> None:
        super().__init__(arch, weighting, penalties, bn_stats)
        if schedule not in SCHEDULES:
            raise ConfigError(f"method.algorithm.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if int(d_steps_per_g_step) < 1:
            raise ConfigError(f"method.algorithm.d_steps_per_g_step must be >= 1, got {d_steps_per_g_step!r}")
        if lr_d is not None and float(lr_d) <= 0:
            raise ConfigError(f"method.algorithm.lr_d must be positive, got {lr_d!r}")
        self.adversaries = [p for p in self.penalties.values() if isinstance(p, Adversary)]
        if not self.adversaries:
            raise ConfigError("method.algorithm.name=adversarial needs an adversary penalty (e.g. dann, mmd_aae) in method.penalties")
        for adversary in self.adversaries:
            adversary.alternating = True
        self.schedule, self.k = schedule, int(d_steps_per_g_step)
        self.lr_d = None if lr_d is None else float(lr_d)
        self.updates = 0  # DomainBed's update counter u
        self.d_optimizer: torch.optim.Optimizer | None = None
        self.d_steps = 0
        self.last_d_task_losses = torch.zeros(0)
        self.last_d_present = torch.zeros(0, dtype=torch.bool)

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        return [p for a in self.adversaries for p in a.discriminator_parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        taken = {id(p) for p in self.discriminator_parameters()}
        groups = []
        for group in super().param_groups():
            params = [p for p in group["params"] if id(p) not in taken]
            if params:
                groups.append({**group, "params": params})
        return groups

    def configure_optimizers(self, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any] | None, total_steps: int, steps_per_epoch: int) -> None:
        from molabench.engine.optim import build_optimizer

        super().configure_optimizers(optimizer, scheduler, total_steps, steps_per_epoch)
        cfg = dict(optimizer) if self.lr_d is None else {**optimizer, "lr": self.lr_d}
        groups = [{"params": a.discriminator_parameters(), **dict(a.optimizer_options)} for a in self.adversaries]
        self.d_optimizer = build_optimizer(self._checked_groups(groups, cfg), cfg)

    def discriminator_step(self, batch: Batch, fwd: Any | None = None) -> float:
        """One update of the discriminators on ``batch`` (features detached); returns their loss."""
        assert self.d_optimizer is not None
        if fwd is None:
            batch = self.prepare(batch)
            with torch.no_grad():
                fwd = self.forward_train(batch)
        with torch.no_grad():
            losses, present = self.task_losses(fwd, batch)
        ctx = self.penalty_context(batch, fwd, losses)
        loss: Tensor = sum(a.discriminator_loss(ctx) for a in self.adversaries)  # type: ignore[assignment]
        self.d_optimizer.zero_grad(set_to_none=True)
        if self.dist is None:
            self.last_d_task_losses, self.last_d_present = losses, present
            loss.backward()
            value = float(loss.detach())
        else:  # torchrun: the mean of the ranks' discriminator losses, the global task losses for the logs
            global_losses, global_present, (value,) = self._global_losses(losses, present, [loss])
            self.last_d_task_losses, self.last_d_present = global_losses.detach(), global_present
            (loss / self.dist.world_size).backward()
            self.reduce_gradients(self.discriminator_parameters())
        self.d_optimizer.step()
        self.d_steps += 1
        return value

    def update(self, batch: Batch) -> dict[str, float]:
        if self.d_optimizer is None:
            raise RuntimeError("attach optimisers with configure_optimizers() before update()")
        self.updates += 1
        if self.schedule == "alternating" and self.updates % (1 + self.k) < self.k:
            d_loss = self.discriminator_step(batch)
            if self.scheduler is not None:
                self.scheduler.step()
            self.step_count += 1
            losses = self.last_d_task_losses  # the model's task losses on this batch, (a discriminator step does not change the model)
            logs = {"loss": float(losses.sum()), "adversary/d_loss": d_loss, "adversary/d_step": 1.0}
            for t, (spec, loss) in enumerate(zip(self.tasks, losses.tolist(), strict=True)):
                if bool(self.last_d_present[t]) or self.arch.setting == "single_input":
                    logs[f"loss/{spec.name}"] = loss
            return logs
        logs, used, fwd = self.step(batch)
        logs["adversary/d_step"] = 0.0
        if self.schedule == "each_step":
            logs["adversary/d_loss"] = self.discriminator_step(used, _detached(fwd))
        return logs

    def optimizer_state(self) -> dict[str, Any]:
        state = super().optimizer_state()
        state["d_optimizer"] = self.d_optimizer.state_dict() if self.d_optimizer is not None else None
        state["updates"] = self.updates
        state["d_steps"] = self.d_steps
        return state

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        super().load_optimizer_state(state)
        if self.d_optimizer is not None and state.get("d_optimizer") is not None:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.updates = int(state.get("updates", 0))
        self.d_steps = int(state.get("d_steps", 0))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["adversarial"] = {"schedule": self.schedule, "d_steps_per_g_step": self.k, "d_steps": self.d_steps, "updates": self.updates}
        return out


def _detached(fwd: Any) -> Any:
    import dataclasses

    rep = fwd.representation.detach() if fwd.representation is not None else None
    aux = {k: v.detach() for k, v in fwd.aux.items()}
    return dataclasses.replace(fwd, representation=rep, aux=aux)


@ALGORITHMS.register("adversarial")
def adversarial(
    arch: Architecture, weighting: Weighting, penalties: Mapping[str, Penalty], bn_stats: str = "batch",
    schedule: str = "alternating", d_steps_per_g_step: int = 1, lr_d: float | None = None,
) -> AdversarialAlgorithm:
    return AdversarialAlgorithm(arch, weighting, penalties, bn_stats, schedule, d_steps_per_g_step, lr_d)
