"""The algorithm contract (DomainBed-style): ``update(batch)`` trains one step, ``predict`` infers.

An algorithm is an architecture (how parameters are shared), a weighting (how task losses
or gradients are combined) and penalties (extra loss terms). It owns its optimiser so that
``update`` is the whole training step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES, Architecture, Forward
from molabench.architectures import load_all as load_architectures
from molabench.data.base import Batch, MultiTaskData, TaskSpec
from molabench.engine.losses import zero_loss
from molabench.errors import TrainingError
from molabench.penalties import PENALTIES, Penalty, PenaltyContext
from molabench.penalties import load_all as load_penalties
from molabench.tasks import TaskKind, kind_of
from molabench.weighting import StepContext, Weighting
from molabench.weighting import build as build_weighting


def _hparams(block: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (block or {}).items() if k != "name"}


class MultiTaskAlgorithm(nn.Module):
    def __init__(self, arch: Architecture, weighting: Weighting, penalties: Mapping[str, Penalty]) -> None:
        super().__init__()
        self.arch = arch
        self.weighting = weighting
        self.penalties = nn.ModuleDict(penalties)
        self.optimizer: torch.optim.Optimizer | None = None
        self.step_count = 0
        self.epoch = 0
        self.grad_clip: float | None = None
        self.kinds: list[TaskKind] = [kind_of(spec) for spec in arch.tasks]

    @property
    def tasks(self) -> list[TaskSpec]:
        return self.arch.tasks

    def task_losses(self, fwd: Forward, batch: Batch) -> tuple[Tensor, Tensor]:
        """Loss of every task (zero for tasks absent from the batch) and the presence mask."""
        losses, present = [], []
        for t, (spec, out, idx) in enumerate(zip(self.tasks, fwd.outputs, fwd.groups, strict=True)):
            if out is None or idx is None:
                losses.append(None)
                present.append(False)
                continue
            target = self.arch.target(t, batch.y[spec.name] if isinstance(batch.y, dict) else batch.y[idx])
            self.kinds[t].check_target(spec, out, target)
            losses.append(self.kinds[t].loss(spec, out, target))
            present.append(True)
        reference = next(loss for loss in losses if loss is not None)
        stacked = torch.stack([loss if loss is not None else zero_loss(reference) for loss in losses])
        return stacked, torch.tensor(present, device=stacked.device)

    def update(self, batch: Batch) -> dict[str, float]:
        if self.optimizer is None:
            raise RuntimeError("attach an optimiser with configure_optimizer() before update()")
        self.train()
        fwd = self.arch(batch.x, batch.task)
        losses, present = self.task_losses(fwd, batch)
        logs: dict[str, float] = {}
        extra: Tensor | None = None
        if len(self.penalties):
            ctx = PenaltyContext(batch, fwd, losses)
            for name, penalty in self.penalties.items():
                value = penalty(ctx)
                logs[f"penalty/{name}"] = float(value.detach())
                extra = penalty.weight * value if extra is None else extra + penalty.weight * value
        total = float(losses.detach().sum()) + (float(extra.detach()) if extra is not None else 0.0)
        if not math.isfinite(total):
            raise TrainingError(
                f"loss became {total} at step {self.step_count} (epoch {self.epoch}); "
                "lower trainer.optimizer.lr or set trainer.grad_clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        logs.update(
            self.weighting.backward(
                StepContext(
                    losses=losses,
                    present=present,
                    shared_params=[p for p in self.arch.shared_parameters() if p.requires_grad],
                    task_params=[p for p in self.arch.task_specific_parameters() if p.requires_grad],
                    representation=fwd.representation,
                    groups=fwd.groups,
                    shared_behind_representation=self.arch.shared_behind_representation and fwd.representation is not None,
                    extra_loss=extra,
                    step=self.step_count,
                    epoch=self.epoch,
                )
            )
        )
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        logs["loss"] = total
        for t, spec in enumerate(self.tasks):
            if bool(present[t]):
                logs[f"loss/{spec.name}"] = float(losses[t].detach())
        return logs

    @torch.no_grad()
    def predict(self, x: Tensor, task: Tensor) -> Forward:
        self.eval()
        return self.arch(x, task)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)


def backbone_factory(cfg: Mapping[str, Any], data: MultiTaskData):
    from molabench.models.backbones import build_backbone

    kwargs = _hparams(cfg)
    height, _ = data.image_size
    kwargs.setdefault("in_channels", data.in_channels)
    if cfg["name"].startswith("vit"):
        kwargs.setdefault("image_size", height)
    return lambda: build_backbone(cfg["name"], **kwargs)


def build_architecture(
    method: Mapping[str, Any], backbone: Mapping[str, Any], data: MultiTaskData, head: Mapping[str, Any] | None = None
) -> Architecture:
    """The method's architecture on ``data``; ``head`` configures dense heads (``configs/head``)."""
    load_architectures()
    arch_cfg = method["architecture"]
    return ARCHITECTURES.build(
        arch_cfg["name"],
        tasks=data.tasks,
        setting=data.setting,
        backbone=backbone_factory(backbone, data),
        head=head,
        **_hparams(arch_cfg),
    )


def build_algorithm(
    method: Mapping[str, Any], backbone: Mapping[str, Any], data: MultiTaskData, head: Mapping[str, Any] | None = None
) -> MultiTaskAlgorithm:
    arch = build_architecture(method, backbone, data, head)
    weighting = build_weighting(method["weighting"]["name"], num_tasks=data.num_tasks, **_hparams(method["weighting"]))
    load_penalties()
    penalties = {
        name: PENALTIES.build(name, arch=arch, tasks=data.tasks, **{k: v for k, v in cfg.items() if k != "enabled"})
        for name, cfg in (method.get("penalties") or {}).items()
        if cfg is not None and cfg.get("enabled", True)
    }
    return MultiTaskAlgorithm(arch, weighting, penalties)
