"""The training loop: epochs of ``algorithm.update``, per-epoch evaluation, model selection,
checkpoints (``molabench.engine.checkpoint``) and exact resumption from them.

Under torchrun (``engine.distributed``) every rank runs this loop on its shard of every global batch;
the ranks agree after every step on whether a signal asked them to stop (so that they checkpoint after
the same step), take the BatchNorm running statistics of rank 0 before evaluating, check that their
weights are still the same, and reduce the evaluation over the ranks. Only rank 0 shows progress and
writes checkpoints (the state is the same on every rank)."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from molabench.data.base import MultiTaskData
from molabench.data.loader import BatchLoader
from molabench.engine.algorithm import MultiTaskAlgorithm
from molabench.engine.checkpoint import (
    Checkpointer,
    CheckpointSchedule,
    Interrupted,
    SignalGuard,
    rng_state,
    set_rng_state,
)
from molabench.engine.distributed import Distributed
from molabench.engine.evaluate import Metrics, evaluate
from molabench.engine.selection import Selector
from molabench.errors import ConfigError, TrainingError
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


HEARTBEAT_S = 300.0  # the longest the run's record goes without an update while training


@dataclass
class _Position:
    """Where training stands, and the per-epoch sums of the epoch in progress: everything of the
    loop a checkpoint must hold besides the model, optimiser, scheduler, selector and streams.

    ``phase`` is ``train`` (the epoch's steps; ``step`` of them are done) or ``eval`` (the epoch's
    steps and ``on_epoch_end`` are done; ``entry`` waits for the evaluation)."""

    epoch: int = 0
    step: int = 0
    phase: str = "train"
    entry: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    method_sums: dict[str, float] = field(default_factory=dict)  # the method's own per-step logs (task weights ...)
    method_counts: dict[str, int] = field(default_factory=dict)
    task_loss_sums: torch.Tensor | None = None
    task_loss_counts: torch.Tensor | None = None
    loss_sum: float = 0.0
    step_times: list[float] = field(default_factory=list)
    samples: int = 0
    train_s: float = 0.0  # training time of earlier attempts (a resumed run)

    def new_epoch(self, epoch: int, num_tasks: int) -> None:
        self.epoch, self.step, self.phase, self.entry = epoch, 0, "train", None
        self.method_sums, self.method_counts = {}, {}
        self.task_loss_sums, self.task_loss_counts = torch.zeros(num_tasks), torch.zeros(num_tasks)
        self.loss_sum = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, state[name])


def check_finite(split: str, metrics: Metrics, notes: list[str], when: str) -> None:
    """A non-finite evaluation is a failed run: any NaN/inf loss, any inf metric, and any NaN
    metric the split's notes do not explain (e.g. mIoU with a class absent from the split; the
    ``avg`` of a metric is explained when one task's is)."""

    def explained(task: str, name: str) -> bool:
        if task == "avg":
            return any(t != "avg" and name in v and math.isnan(v[name]) and explained(t, name) for t, v in metrics.items())
        return any(note.startswith(f"{split}: {task}:") for note in notes)

    bad = [
        f"{task}/{name}={value}"
        for task, values in metrics.items()
        for name, value in values.items()
        if not math.isfinite(value) and (name == "loss" or math.isinf(value) or not explained(task, name))
    ]
    if bad:
        raise TrainingError(
            f"evaluation on {split} {when} gave {', '.join(bad)} (not finite); the model diverged: "
            "lower trainer.optimizer.lr or set trainer.grad_clip"
        )


def fit(
    algorithm: MultiTaskAlgorithm,
    data: MultiTaskData,
    cfg: Mapping[str, Any],
    device: torch.device,
    seed: int,
    logger: Logger,
    progress: bool = True,
    checkpoints: Checkpointer | None = None,
    guard: SignalGuard | None = None,
    dist: Distributed | str | None = "current",
) -> TrainResult:
    """Train ``algorithm`` for ``trainer.epochs`` epochs and evaluate the selected weights.

    With ``checkpoints`` the whole training state is saved as ``trainer.checkpoint_every`` says,
    after the last epoch and when ``guard`` reports a signal, and training continues from
    ``checkpoints.resume`` when given: the result is then the same, bit for bit, as without the
    interruption (on the same machine).

    ``dist``: the torchrun process group this process is a rank of (default: the current one,
    ``engine.distributed.current()``; ``None``: train alone). ``trainer.batch_size`` is then per rank."""
    from molabench.engine import distributed

    group = distributed.current() if dist == "current" else dist
    assert group is None or isinstance(group, Distributed)
    main = group is None or group.is_main
    epochs = _typed(cfg, "epochs", int, minimum=1)
    batch_size = _typed(cfg, "batch_size", int, minimum=1)
    eval_batch_size = _typed(cfg, "eval_batch_size", int, minimum=1, default=max(batch_size, 256))
    eval_every = _typed(cfg, "eval_every", int, minimum=1, default=1)
    max_steps = _typed(cfg, "max_steps_per_epoch", int, minimum=1, default=None)
    batching = cfg.get("batching", "mixed")
    if batching not in ("mixed", "per_task"):
        raise ConfigError(f"trainer.batching must be mixed or per_task, got {batching!r}")
    schedule = checkpoints.schedule if checkpoints is not None else CheckpointSchedule(0)
    selector = Selector.create(cfg.get("selection", "val"), list(data.splits), data.tasks, cfg.get("selection_baseline"))
    logger.set_headline(headline_keys(data, selector.split))
    guard = guard or SignalGuard(active=False)
    sync_bn = cfg.get("sync_bn", False)
    if not isinstance(sync_bn, bool):
        raise ConfigError(f"trainer.sync_bn must be true or false, got {sync_bn!r}")
    algorithm.distribute(group, sync_bn)
    progress = progress and main

    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    train_loader = BatchLoader(data, "train", batch_size, train=True, batching=batching, seed=seed, device=device, rank=rank, world_size=world)
    steps = min(len(train_loader), max_steps) if max_steps else len(train_loader)
    algorithm.to(device)
    algorithm.grad_clip = _typed(cfg, "grad_clip", float, minimum=0, default=None)
    algorithm.configure_optimizers(cfg["optimizer"], cfg.get("scheduler"), epochs * steps, steps)

    at = _Position()
    at.new_epoch(0, data.num_tasks)
    if checkpoints is not None and checkpoints.resume is not None:
        saved = checkpoints.resume
        algorithm.load_state_dict(saved["model"])
        if "optimizers" not in saved:
            raise ConfigError(
                "this checkpoint was written by an older molabench (no optimiser section): "
                "start afresh with trainer.resume=never"
            )
        algorithm.load_optimizer_state(saved["optimizers"])
        algorithm.weighting.load_training_state(saved["weighting"])
        algorithm.step_count = int(saved["step_count"])
        selector.load_state_dict(saved["selector"])
        at.load_state_dict(saved["position"])
        train_loader.load_state_dict(saved["loader"])
        set_rng_state(saved["rng"])
    if group is not None:
        group.broadcast_module(algorithm)  # every rank starts from rank 0's weights (equal anyway: same seed)

    def agreed_stop() -> int | None:
        """The signal to stop on, agreed by all ranks (any rank's), so that they stop after the same step."""
        if group is not None:
            signum = group.agree_signal(guard.requested)
            if signum is not None and guard.requested is None:
                guard.requested = signum
        return guard.requested

    def check(stop: int | None) -> None:
        """Stop here when asked: on a signal this process received, or (torchrun) on the signal the ranks agreed on."""
        if group is None:
            guard.check()
        elif stop is not None:
            raise Interrupted(stop)

    def end_of_training_phase() -> None:
        """Under torchrun: rank 0's BatchNorm running statistics everywhere (they differ with per-rank
        statistics; evaluation and checkpoints use rank 0's, as DistributedDataParallel does), and a check
        that the ranks still hold the same weights."""
        if group is None:
            return
        group.broadcast_module(algorithm, buffers_only=True)
        with torch.no_grad():
            sums = [float(sum(p.detach().double().sum() for p in algorithm.parameters())), float(torch.get_rng_state().double().sum())]
        if not group.same_everywhere(sums):
            raise TrainingError(
                f"the {group.world_size} ranks no longer hold the same weights after epoch {at.epoch + 1}; "
                "this is a bug of the distributed training (please report it), train with one process meanwhile"
            )

    train_before, attempt_start = at.train_s, time.perf_counter()  # training time of earlier attempts, this one's start

    def save() -> None:
        """Checkpoint the state as it stands between two steps (or before an evaluation)."""
        if checkpoints is None:
            return
        at.train_s = train_before + time.perf_counter() - attempt_start
        if not main:
            return  # rank 0 writes: the state is the same on every rank
        checkpoints.save({
            "world_size": world,
            "position": at.state_dict(),
            "model": algorithm.state_dict(),
            "optimizers": algorithm.optimizer_state(),
            "weighting": algorithm.weighting.training_state(),
            "step_count": algorithm.step_count,
            "selector": selector.state_dict(),
            "loader": train_loader.state_dict(within_epoch=at.phase == "train" and at.step > 0),
            "rng": rng_state(),
        })
        report()

    last_report = time.monotonic()

    def report() -> None:
        nonlocal last_report
        last_report = time.monotonic()
        if checkpoints is not None and main:
            done = at.epoch + (1 if at.phase == "eval" else 0)
            checkpoints.report({"epoch": at.epoch, "step": at.step, "phase": at.phase, "epochs_done": min(done, epochs), "history": at.history})

    def stop_if_asked() -> None:
        stop = agreed_stop()
        if stop is not None:
            save()
            check(stop)

    for epoch in range(at.epoch, epochs):
        algorithm.epoch = epoch
        algorithm.arch.on_epoch_start(epoch, epochs)
        if at.phase == "train":
            with guard.deferred():
                assert at.task_loss_sums is not None and at.task_loss_counts is not None
                bar = tqdm(total=steps, initial=at.step, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress, dynamic_ncols=True)
                for i, batch in enumerate(train_loader, start=at.step):
                    if i >= steps:
                        break
                    start = time.perf_counter()
                    logs = algorithm.update(batch)
                    at.step_times.append(time.perf_counter() - start)
                    at.samples += len(batch)
                    at.loss_sum += logs["loss"]
                    for key, value in logs.items():
                        if key != "loss" and not key.startswith("loss/"):
                            at.method_sums[key] = at.method_sums.get(key, 0.0) + float(value)
                            at.method_counts[key] = at.method_counts.get(key, 0) + 1
                    for t, spec in enumerate(data.tasks):
                        if f"loss/{spec.name}" in logs:
                            at.task_loss_sums[t] += logs[f"loss/{spec.name}"]
                            at.task_loss_counts[t] += 1
                    at.step = i + 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.3f}")
                    _pause_for_tests("step", algorithm.step_count)
                    stop = agreed_stop()
                    if schedule.after_step(algorithm.step_count) or stop is not None:
                        save()
                    elif time.monotonic() - last_report > HEARTBEAT_S:
                        report()  # long epochs: the record's heartbeat still moves
                    check(stop)
                bar.close()
                end_of_training_phase()
                mean_task_losses = at.task_loss_sums / at.task_loss_counts.clamp(min=1)
                algorithm.weighting.on_epoch_end(epoch, mean_task_losses)
                entry: dict[str, Any] = {"epoch": epoch + 1, "train/loss": at.loss_sum / max(1, steps), "lr": algorithm.lr()}
                entry.update({f"train/{spec.name}/loss": float(v) for spec, v in zip(data.tasks, mean_task_losses, strict=True)})
                entry.update({_method_key(key, data): at.method_sums[key] / at.method_counts[key] for key in sorted(at.method_sums)})
                at.phase, at.entry = "eval", entry
                stop_if_asked()
        assert at.entry is not None
        entry = at.entry
        is_last = epoch == epochs - 1
        split_metrics: Metrics | None = None
        if (epoch + 1) % eval_every == 0 or is_last:
            try:
                _pause_for_tests("eval", epoch + 1)
                notes: list[str] = []
                split_metrics = evaluate(algorithm, data, selector.split, eval_batch_size, device, notes, dist=group)
            except Interrupted:
                with guard.deferred():
                    save()  # evaluating changes nothing: this is the state before it
                raise
            check_finite(selector.split, split_metrics, notes, f"after epoch {epoch + 1}")
        with guard.deferred():
            if split_metrics is not None:
                entry.update(_flatten(selector.split, split_metrics))
                entry["selected"] = selector.consider(epoch + 1, split_metrics, algorithm)
            at.history.append(entry)
            logger.log(entry, step=algorithm.step_count)
            at.new_epoch(epoch + 1, data.num_tasks)
            stop = agreed_stop()
            if is_last or schedule.after_epoch(epoch + 1) or stop is not None:
                save()
            else:
                report()
            check(stop)
    train_s = train_before + time.perf_counter() - attempt_start

    _pause_for_tests("final", epochs)
    if selector.best_state is not None:
        algorithm.load_state_dict(selector.best_state)
        if selector.best_epoch >= 1:  # the model's own schedule as when these weights were evaluated (LTB's warm-up)
            algorithm.epoch = selector.best_epoch - 1
            algorithm.arch.on_epoch_start(selector.best_epoch - 1, epochs)
    notes = []
    metrics = {split: evaluate(algorithm, data, split, eval_batch_size, device, notes, dist=group) for split in data.splits}
    for split, values in metrics.items():
        check_finite(split, values, notes, "of the selected weights")
    warm = at.step_times[1:] or at.step_times
    timing = {
        "train_s": train_s,
        "step_s_median": statistics.median(warm),
        "samples_per_s": world * at.samples / sum(at.step_times) if at.step_times else 0.0,  # all ranks' samples
        "steps": float(len(at.step_times)),
    }
    return TrainResult(
        metrics=metrics,
        history=at.history,
        selected_epoch=selector.best_epoch,
        timing=timing,
        selection=selector.describe(),
        notes=notes,
    )


def _pause_for_tests(point: str, count: int) -> None:
    """Test hook: with ``MOLABENCH_TEST_PAUSE=<point>:<count>`` (point: step, eval or final) the
    process writes ``$MOLABENCH_TEST_PAUSE_FILE`` (``{rank}`` in it: the torchrun rank) and sleeps
    there, so a test can kill it at a chosen moment. Unset in normal use."""
    wanted = os.environ.get("MOLABENCH_TEST_PAUSE")
    if wanted != f"{point}:{count}":
        return
    marker = os.environ.get("MOLABENCH_TEST_PAUSE_FILE")
    if marker:
        Path(marker.replace("{rank}", os.environ.get("RANK", "0"))).write_text(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("MOLABENCH_TEST_PAUSE_S", "60")))


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
