"""The algorithm contract (DomainBed-style): ``update(batch)`` trains one step, ``predict`` infers.

An algorithm is an architecture (how parameters are shared), a weighting (how task losses
or gradients are combined) and penalties (extra loss terms). It owns its optimiser so that
``update`` is the whole training step.

``bn_stats`` (``trainer.bn_stats``) chooses the statistics of train-mode BatchNorm layers of the shared
network: ``batch`` (plain ``nn.BatchNorm``: one set of statistics over the mixed-task batch) or
``per_task`` (multi-input and domain settings: each task's samples are normalised with that task's own
batch statistics, LibMTL's per-task forwards in one pass, ``molabench.models.task_norm``; the step
then sorts the batch by task). With ``per_task`` the one-backward per-task gradients of gradient
methods are the exact per-task gradients (``weighting.pertask``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from molabench.architectures import ARCHITECTURES, Architecture, Forward
from molabench.architectures import load_all as load_architectures
from molabench.data.base import Batch, MultiTaskData, TaskSpec
from molabench.engine.losses import zero_loss
from molabench.errors import ConfigError, TrainingError
from molabench.models.task_norm import BN_STATS, TaskNormContext, convert_batchnorm, sort_by_task
from molabench.penalties import PENALTIES, Penalty, PenaltyContext
from molabench.penalties import load_all as load_penalties
from molabench.tasks import TaskKind, kind_of
from molabench.weighting import StepContext, Weighting
from molabench.weighting import build as build_weighting


def _hparams(block: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (block or {}).items() if k != "name"}


class MultiTaskAlgorithm(nn.Module):
    def __init__(
        self, arch: Architecture, weighting: Weighting, penalties: Mapping[str, Penalty], bn_stats: str = "batch"
    ) -> None:
        super().__init__()
        self.arch = arch
        self.weighting = weighting
        self.penalties = nn.ModuleDict(penalties)
        self.optimizer: torch.optim.Optimizer | None = None
        self.step_count = 0
        self.epoch = 0
        self.grad_clip: float | None = None
        self.kinds: list[TaskKind] = [kind_of(spec) for spec in arch.tasks]
        self.bn_stats = bn_stats
        self.task_norm = TaskNormContext()
        self.task_norm_layers = _use_task_norm(arch, bn_stats, self.task_norm)

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
        if self.task_norm_layers:
            order = sort_by_task(batch.task)  # per-task BatchNorm: the rows of each task contiguous, in task order
            if order is not None:
                batch = _take(batch, order)
        with self.task_norm.scope(batch.task if self.task_norm_layers else None):
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

    def describe(self) -> dict[str, Any]:
        """What the run record should state about how gradients were obtained: BatchNorm statistics
        (asked and in effect), and for gradient methods the ``grad_mode`` asked, the paths taken
        (steps per path) and the start-up self-check of the one-backward per-task gradients."""
        from molabench.weighting.gradient import GradientWeighting

        effective = "per_task" if self.task_norm_layers else "batch"
        out: dict[str, Any] = {"bn_stats": self.bn_stats, "bn_stats_effective": effective, "task_norm_layers": self.task_norm_layers}
        if self.bn_stats == "per_task" and not self.task_norm_layers:
            out["bn_stats_note"] = (
                "single-input setting: every sample serves every task, so BatchNorm uses whole-batch statistics"
                if self.arch.setting == "single_input" else "no shared BatchNorm layer to convert"
            )
        if isinstance(self.weighting, GradientWeighting):
            from molabench.weighting.pertask import self_check

            out["grad_mode"] = self.weighting.grad_mode
            out["grad_paths"] = dict(self.weighting.path_counts)
            out["sample_groups_check"] = self_check()
        return out


def _take(batch: Batch, order: Tensor) -> Batch:
    """``batch`` with its samples reordered by ``order``."""
    y = {k: v[order] for k, v in batch.y.items()} if isinstance(batch.y, dict) else batch.y[order]
    return dataclasses.replace(batch, x=batch.x[order], y=y, task=batch.task[order])


def _use_task_norm(arch: Architecture, bn_stats: str, context: TaskNormContext) -> int:
    """Convert the shared network's BatchNorm layers for ``bn_stats=per_task``; returns how many were converted.

    Only layers that see the whole batch are converted: those whose parameters are shared (heads and
    per-task encoders see one task's samples, whose batch statistics are already per task). Nothing is
    converted in the single-input setting (every sample serves every task: whole-batch statistics).
    """
    if bn_stats not in BN_STATS:
        raise ConfigError(f"trainer.bn_stats must be one of {', '.join(BN_STATS)}, got {bn_stats!r}")
    if bn_stats == "batch" or arch.setting == "single_input":
        return 0
    from molabench.architectures.uniform import Uniform

    if isinstance(arch, Uniform):
        raise ConfigError(
            "trainer.bn_stats=per_task normalises each task's samples separately, which tells the network the task; "
            "method=uniform must not see task ids: use trainer.bn_stats=batch"
        )
    shared = {id(p) for p in arch.shared_parameters()}
    # Subtrees with parameters, none of them shared (heads, single-task encoders), see one task's samples.
    skip = [m for m in arch.modules() if (ps := list(m.parameters())) and not any(id(p) in shared for p in ps)]
    heads = getattr(arch, "heads", None)
    if isinstance(heads, nn.Module):
        skip.append(heads)
    return convert_batchnorm(arch, context, skip=tuple(skip))


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
    method: Mapping[str, Any],
    backbone: Mapping[str, Any],
    data: MultiTaskData,
    head: Mapping[str, Any] | None = None,
    bn_stats: str = "batch",
) -> MultiTaskAlgorithm:
    """The method's algorithm on ``data``; ``bn_stats`` is ``trainer.bn_stats`` (module docstring)."""
    arch = build_architecture(method, backbone, data, head)
    weighting = build_weighting(method["weighting"]["name"], num_tasks=data.num_tasks, **_hparams(method["weighting"]))
    load_penalties()
    penalties = {
        name: PENALTIES.build(name, arch=arch, tasks=data.tasks, **{k: v for k, v in cfg.items() if k != "enabled"})
        for name, cfg in (method.get("penalties") or {}).items()
        if cfg is not None and cfg.get("enabled", True)
    }
    return MultiTaskAlgorithm(arch, weighting, penalties, bn_stats)
