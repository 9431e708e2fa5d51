"""Optimisers and learning-rate schedules by name (``trainer.optimizer``, ``trainer.scheduler``)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from molabench.errors import ConfigError
from molabench.registry import Registry

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")
SCHEDULERS: Registry[torch.optim.lr_scheduler.LRScheduler] = Registry("scheduler")


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, foreach=True)


@OPTIMIZERS.register("adam")
def adam(params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), foreach=True)


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable[nn.Parameter], lr: float, weight_decay: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), foreach=True)


def _options(kind: str, registry: Registry[Any], name: str, cfg: Mapping[str, Any], fixed: tuple[str, ...]) -> dict[str, Any]:
    """The options of ``trainer.<kind>`` its builder takes: ``name`` and null values dropped (null: the
    builder's default); a set option the builder does not take is a one-line ConfigError, never ignored."""
    builder = registry.get(name)
    accepted = [p for p in inspect.signature(builder).parameters if p not in fixed]
    options = {k: v for k, v in cfg.items() if k != "name" and v is not None}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"trainer.{kind}.{unknown[0]} does not apply to {kind} {name} (it takes: {', '.join(accepted)}); "
            f"remove it or set it to null"
        )
    return options


def build_optimizer(params: Iterable[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``trainer.optimizer`` over ``params`` (parameters or parameter groups)."""
    name = cfg["name"]
    options = _options("optimizer", OPTIMIZERS, name, cfg, ("params",))
    try:
        lr = float(options.get("lr", 0))
    except (TypeError, ValueError):
        lr = float("nan")
    if not lr > 0:  # also a non-number or NaN
        raise ConfigError(f"trainer.optimizer.lr must be positive, a number such as 1e-3, got {cfg.get('lr')!r}")
    try:
        return OPTIMIZERS.get(name)(params=params, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trainer.optimizer ({name}): {exc}") from None


# The optimisers use the multi-tensor (foreach) kernels on every device: torch enables them by default
# on CUDA only, but on CPU they also cut the per-parameter overhead that adapters and heads add.

# Schedules are stepped once per optimisation step; ``total_steps`` is epochs x steps per epoch.


@SCHEDULERS.register("none")
def constant(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@SCHEDULERS.register("cosine")
def cosine(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then lr * (min + (1 - min) * (1 + cos(pi * progress)) / 2)."""
    warmup = int(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("step")
def step(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, step_size: int = 100, gamma: float = 0.5) -> torch.optim.lr_scheduler.LRScheduler:
    """Multiply the lr by ``gamma`` every ``step_size`` epochs (StepLR, as the NYUv2 recipe)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: gamma ** ((s // steps_per_epoch) // step_size))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    name = cfg.get("name", "none")
    options = _options("scheduler", SCHEDULERS, name, cfg, ("optimizer", "total_steps", "steps_per_epoch"))
    return SCHEDULERS.get(name)(optimizer=optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch, **options)
