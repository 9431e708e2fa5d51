"""The training loop: epochs of ``algorithm.update``, per-epoch evaluation, model selection."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from molabench.data.base import MultiTaskData
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import MultiTaskAlgorithm
from molabench.engine.evaluate import Metrics, evaluate
from molabench.engine.optim import build_optimizer, build_scheduler
from molabench.engine.selection import Selector
from molabench.errors import ConfigError
from molabench.loggers import Logger
from molabench.tasks import kind_of


@dataclass
class TrainResult:
    metrics: dict[str, Metrics]
    history: list[dict[str, Any]]
    selected_epoch: int
    timing: dict[str, float]
    selection: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _flatten(prefix: str, metrics: Metrics) -> dict[str, float]:
    return {f"{prefix}/{task}/{name}": value for task, values in metrics.items() for name, value in values.items() if name != "n"}


_KIND_NAMES = {int: "an integer", float: "a number"}


def _typed(cfg: Mapping[str, Any], key: str, kind: type, minimum: float | None = None, default: Any = ...) -> Any:
    """``trainer.<key>`` converted to ``kind``; a wrong type or range is a one-line ConfigError."""
    value = cfg.get(key) if default is ... else (cfg.get(key) if cfg.get(key) is not None else default)
    if value is None:
        return None
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"trainer.{key} must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}") from None
    if minimum is not None and converted < minimum:
        raise ConfigError(f"trainer.{key} must be at least {minimum}, got {value!r}")
    return converted


def fit(
    algorithm: MultiTaskAlgorithm,
    data: MultiTaskData,
    cfg: Mapping[str, Any],
    device: torch.device,
    seed: int,
    logger: Logger,
    progress: bool = True,
) -> TrainResult:
    epochs = _typed(cfg, "epochs", int, minimum=1)
    batch_size = _typed(cfg, "batch_size", int, minimum=1)
    eval_batch_size = _typed(cfg, "eval_batch_size", int, minimum=1, default=max(batch_size, 256))
    eval_every = _typed(cfg, "eval_every", int, minimum=1, default=1)
    max_steps = _typed(cfg, "max_steps_per_epoch", int, minimum=1, default=None)
    batching = cfg.get("batching", "mixed")
    if batching not in ("mixed", "per_task"):
        raise ConfigError(f"trainer.batching must be mixed or per_task, got {batching!r}")
    selector = Selector.create(cfg.get("selection", "val"), list(data.splits), data.tasks, cfg.get("selection_baseline"))
    logger.set_headline(headline_keys(data, selector.split))

    train_loader = BatchLoader(data, "train", batch_size, train=True, batching=batching, seed=seed, device=device)
    steps = min(len(train_loader), max_steps) if max_steps else len(train_loader)
    algorithm.to(device)
    algorithm.grad_clip = _typed(cfg, "grad_clip", float, minimum=0, default=None)
    optimizer = build_optimizer(algorithm.trainable_parameters(), cfg["optimizer"])
    algorithm.optimizer = optimizer
    scheduler = build_scheduler(optimizer, cfg.get("scheduler") or {"name": "none"}, epochs * steps, steps)

    history: list[dict[str, Any]] = []
    step_times: list[float] = []
    samples = 0
    train_start = time.perf_counter()
    for epoch in range(epochs):
        algorithm.epoch = epoch
        algorithm.arch.on_epoch_start(epoch, epochs)
        method_sums: dict[str, float] = {}  # the method's own per-step logs (task weights, penalties ...)
        method_counts: dict[str, int] = {}
        task_loss_sums = torch.zeros(data.num_tasks)
        task_loss_counts = torch.zeros(data.num_tasks)
        loss_sum = 0.0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress, dynamic_ncols=True)
        for i, batch in enumerate(train_loader):
            if i >= steps:
                break
            start = time.perf_counter()
            logs = algorithm.update(batch)
            scheduler.step()
            step_times.append(time.perf_counter() - start)
            samples += len(batch)
            loss_sum += logs["loss"]
            for key, value in logs.items():
                if key != "loss" and not key.startswith("loss/"):
                    method_sums[key] = method_sums.get(key, 0.0) + float(value)
                    method_counts[key] = method_counts.get(key, 0) + 1
            for t, spec in enumerate(data.tasks):
                if f"loss/{spec.name}" in logs:
                    task_loss_sums[t] += logs[f"loss/{spec.name}"]
                    task_loss_counts[t] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
        bar.close()
        mean_task_losses = task_loss_sums / task_loss_counts.clamp(min=1)
        algorithm.weighting.on_epoch_end(epoch, mean_task_losses)
        entry: dict[str, Any] = {"epoch": epoch + 1, "train/loss": loss_sum / max(1, steps), "lr": optimizer.param_groups[0]["lr"]}
        entry.update({f"train/{spec.name}/loss": float(v) for spec, v in zip(data.tasks, mean_task_losses, strict=True)})
        entry.update({_method_key(key, data): method_sums[key] / method_counts[key] for key in sorted(method_sums)})
        is_last = epoch == epochs - 1
        if (epoch + 1) % eval_every == 0 or is_last:
            split_metrics = evaluate(algorithm, data, selector.split, eval_batch_size, device)
            entry.update(_flatten(selector.split, split_metrics))
            entry["selected"] = selector.consider(epoch + 1, split_metrics, algorithm)
        history.append(entry)
        logger.log(entry, step=algorithm.step_count)
    train_s = time.perf_counter() - train_start

    if selector.best_state is not None:
        algorithm.load_state_dict(selector.best_state)
    notes: list[str] = []
    metrics = {split: evaluate(algorithm, data, split, eval_batch_size, device, notes) for split in data.splits}
    warm = step_times[1:] or step_times
    timing = {
        "train_s": train_s,
        "step_s_median": statistics.median(warm),
        "samples_per_s": samples / sum(step_times) if step_times else 0.0,
        "steps": float(len(step_times)),
    }
    return TrainResult(
        metrics=metrics,
        history=history,
        selected_epoch=selector.best_epoch,
        timing=timing,
        selection=selector.describe(),
        notes=notes,
    )


def _method_key(key: str, data: MultiTaskData) -> str:
    """History key of a method log: ``w<t>`` (a weighting's task weight) -> ``method/weight/<task>``."""
    if key.startswith("w") and key[1:].isdigit() and int(key[1:]) < data.num_tasks:
        return f"method/weight/{data.tasks[int(key[1:])].name}"
    return f"method/{key}"


def headline_keys(data: MultiTaskData, split: str) -> list[str]:
    """The history keys the console shows each epoch: the average of the tasks' common primary
    metric (accuracy on classification data), else every task's primary metric."""
    primaries = [kind_of(spec).primary for spec in data.tasks]
    if len(set(primaries)) == 1:
        return ["train/loss", f"{split}/avg/{primaries[0]}"]
    return ["train/loss", *(f"{split}/{spec.name}/{p}" for spec, p in zip(data.tasks, primaries, strict=True))]
