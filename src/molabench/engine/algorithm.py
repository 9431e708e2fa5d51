"""The algorithm contract (DomainBed-style): ``update(batch)`` trains one step, ``predict`` infers.

An algorithm is an architecture (how parameters are shared), a weighting (how task losses
or gradients are combined) and penalties (extra loss terms). It owns its optimisers and their
learning-rate schedules (:meth:`MultiTaskAlgorithm.configure_optimizers`) so that ``update`` is the
whole training step; a method whose step is not "one forward, one backward, one optimiser step"
(DANN's alternating discriminator/generator steps, MMD-AAE's prior adversary) is an algorithm of its
own, chosen by name (``method.algorithm.name``; ``molabench.algorithms``, default ``multitask``).

Training progress reaches the parts that schedule by it: ``step_count`` and ``total_steps`` go to the
weighting (``StepContext``, e.g. EQRM's burn-in) and the penalties (``PenaltyContext.progress``, e.g.
DANN's λ ramp); a weighting may ask for the optimiser to be re-created with other settings at a step
(:meth:`Weighting.optimizer_reset`, EQRM after burn-in).

``bn_stats`` (``trainer.bn_stats``) chooses the statistics of train-mode BatchNorm layers of the shared
network: ``batch`` (plain ``nn.BatchNorm``: one set of statistics over the mixed-task batch),
``per_task`` (multi-input and domain settings: each task's samples are normalised with that task's own
batch statistics, LibMTL's per-task forwards in one pass, ``molabench.models.task_norm``; the step
then sorts the batch by task) or ``auto`` (``per_task`` wherever the method may know the task; ``batch``
for ``uniform`` and the DG methods' shared head, which must not, and in the single-input setting). With ``per_task`` the one-backward per-task gradients of gradient
methods are the exact per-task gradients (``weighting.pertask``).

Under torchrun (:meth:`MultiTaskAlgorithm.distribute`, ``engine.distributed``) a step trains on this
rank's share of the global batch: the task losses become the global ones (values) with this rank's
share of their gradients, penalties are averaged over the ranks, and every gradient is summed over the
ranks before the optimiser step (gradient methods: the per-task gradient matrix, before they combine
it), so every rank makes the same update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

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
from molabench.weighting.pertask import sequential_backward

if TYPE_CHECKING:
    from molabench.engine.distributed import Distributed
    from molabench.models.sync_norm import SyncScope


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
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.step_count = 0
        self.total_steps = 0  # set by configure_optimizers: epochs x steps per epoch
        self.epoch = 0
        self.resets: list[dict[str, Any]] = []  # optimiser re-creations asked by the weighting (step, overrides)
        self.optimizer_notes: list[str] = []
        self._optim_cfg: tuple[dict[str, Any], dict[str, Any], int] | None = None
        self.grad_clip: float | None = None
        self.kinds: list[TaskKind] = [kind_of(spec) for spec in arch.tasks]
        self.bn_stats = bn_stats
        self.task_norm = TaskNormContext()
        self.task_norm_layers = _use_task_norm(arch, bn_stats, self.task_norm)
        self.dist: Distributed | None = None  # the torchrun process group (distribute)
        self.sync_bn = False  # trainer.sync_bn as asked
        self.sync_bn_layers = 0  # BatchNorm layers synchronised over the ranks
        self.sync_scope: SyncScope | None = None
        self._reduced: list[nn.Parameter] = []  # parameters whose gradients are summed over the ranks
        self._dropout = False
        self._counts: Tensor | None = None  # the last task_losses' counts (distributed steps)

    # -- data parallelism ---------------------------------------------------------------------------------

    def distribute(self, group: Distributed | None, sync_bn: bool = False) -> None:
        """Train as one rank of ``group`` (``engine.distributed``; ``None``: a single process).

        ``sync_bn`` (``trainer.sync_bn``) synchronises the BatchNorm statistics of the layers that see
        the whole batch (those ``bn_stats=per_task`` converts; whole-batch statistics unless per task)
        over the ranks (``models.sync_norm``); without it each rank normalises with its own rows."""
        self.sync_bn = bool(sync_bn)
        self.dist = group
        if group is None:
            return
        own = {id(p) for p in self.weighting.parameters()}
        # A weighting's own parameters get complete gradients on every rank (from the global losses).
        self._reduced = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        self._dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in self.modules())
        if self.sync_bn:
            from molabench.models.sync_norm import SyncScope, convert_sync_batchnorm

            if not self.arch.sync_bn_safe:
                raise ConfigError(
                    f"trainer.sync_bn=true: architecture {type(self.arch).__name__} runs shared BatchNorm layers on one task's "
                    "rows in some branches, which not every rank holds, so their statistics cannot be synchronised; "
                    "use trainer.sync_bn=false (per-rank statistics)"
                )
            self.sync_scope = SyncScope()
            self.sync_bn_layers = convert_sync_batchnorm(self.arch, group, len(self.tasks), self.sync_scope, skip=_own_subtrees(self.arch))

    def batchnorm_statistics(self) -> str:
        """What train-mode BatchNorm normalises with across processes, for the record."""
        from molabench.models.sync_norm import count_batchnorm

        if not count_batchnorm(self):
            return "no BatchNorm layer"
        if self.dist is None:
            return "single process" + ("" if not self.sync_bn else " (trainer.sync_bn has no effect)")
        if self.sync_bn_layers:
            local = count_batchnorm(self) - self.sync_bn_layers
            return f"synchronised over {self.dist.world_size} ranks ({self.sync_bn_layers} layers)" + (
                f"; {local} task-specific layers per rank" if local else "")
        return f"per rank: each of the {self.dist.world_size} ranks normalises with its own rows"

    def _rank_rng(self) -> contextlib.AbstractContextManager[Any]:
        """Under torchrun, dropout masks from a stream of this rank and step (the global stream, which
        the weightings draw from, stays the same on every rank); otherwise nothing."""
        if self.dist is None or not self._dropout:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def forked() -> Iterator[None]:
            devices = [self.dist.device] if self.dist.device.type == "cuda" else []  # type: ignore[union-attr]
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed((torch.initial_seed() * 1_000_003 + self.step_count * 8191 + self.dist.rank) % 2**63)  # type: ignore[union-attr]
                yield

        return forked()

    def _global_losses(self, losses: Tensor, present: Tensor, values: list[Tensor]) -> tuple[Tensor, Tensor, list[float]]:
        """The task losses of the global batch (values), carrying this rank's share of their gradients,
        which tasks the global batch holds, and the penalty ``values`` averaged over the ranks."""
        assert self.dist is not None and self._counts is not None
        T = losses.shape[0]
        counts = self._counts.to(losses.device)
        parts = [losses.detach().double() * counts, counts, present.double()]
        if values:
            parts.append(torch.stack([v.detach().double().reshape(()) for v in values]).to(losses.device))
        glob = self.dist.all_reduce(torch.cat(parts))
        m = glob[T: 2 * T]
        global_loss = torch.where(m > 0, glob[:T] / m.clamp_min(1), torch.zeros_like(m))
        share = torch.where(m > 0, counts / m.clamp_min(1), torch.zeros_like(m)).to(losses.dtype)
        scaled = losses * share
        # value: the global loss exactly (a - a = 0); gradient: this rank's share
        surrogate = scaled - scaled.detach() + global_loss.to(losses.dtype)
        averaged = (glob[3 * T:] / self.dist.world_size).tolist()
        return surrogate, (glob[2 * T: 3 * T] > 0).to(present.device), averaged

    def reduce_gradients(self, params: list[nn.Parameter] | None = None) -> None:
        """Sum ``params``' gradients (default: every gradient the step reduces) over the ranks (a no-op in one process)."""
        if self.dist is None:
            return
        from molabench.engine.distributed import GradReducer

        GradReducer(self.dist, self._reduced if params is None else params).reduce()

    @property
    def tasks(self) -> list[TaskSpec]:
        return self.arch.tasks

    # -- optimisers -------------------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: everything trainable, except that a penalty declaring
        :attr:`Penalty.optimizer_options` (e.g. DANN's discriminator: Adam betas (0.5, 0.9)) gets a group
        of its own with those options."""
        own: list[dict[str, Any]] = []
        taken: set[int] = set()
        for penalty in self.penalties.values():
            params = [p for p in penalty.parameters() if p.requires_grad]
            if params and penalty.optimizer_options:
                own.append({"params": params, **dict(penalty.optimizer_options)})
                taken.update(id(p) for p in params)
        rest = [p for p in self.trainable_parameters() if id(p) not in taken]
        return [{"params": rest}, *own]

    def configure_optimizers(
        self, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any] | None, total_steps: int, steps_per_epoch: int
    ) -> None:
        """Build the optimiser (``trainer.optimizer``) over :meth:`param_groups` and its schedule
        (``trainer.scheduler``, stepped once per update over ``total_steps``)."""
        from molabench.engine.optim import build_optimizer, build_scheduler

        self.total_steps = int(total_steps)
        self._optim_cfg = (dict(optimizer), dict(scheduler or {"name": "none"}), int(steps_per_epoch))
        self.optimizer = build_optimizer(self._checked_groups(self.param_groups(), optimizer), optimizer)
        self.scheduler = build_scheduler(self.optimizer, self._optim_cfg[1], self.total_steps, steps_per_epoch)

    def _checked_groups(self, groups: list[dict[str, Any]], optimizer: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``groups`` with the options the optimiser does not have removed (noted in the record):
        e.g. a discriminator's Adam betas when ``trainer.optimizer.name=sgd``."""
        from molabench.engine.optim import OPTIMIZERS

        accepted = set(inspect.signature(OPTIMIZERS.get(optimizer["name"])).parameters) - {"params"}
        out = []
        for group in groups:
            dropped = sorted(k for k in group if k != "params" and k not in accepted)
            if dropped:
                note = f"optimizer {optimizer['name']} has no {', '.join(dropped)}: a penalty's parameter group uses its defaults"
                if note not in self.optimizer_notes:
                    self.optimizer_notes.append(note)
            out.append({k: v for k, v in group.items() if k == "params" or k in accepted})
        return out

    def reset_optimizer(self, overrides: Mapping[str, Any]) -> None:
        """Re-create the optimiser (fresh state) with ``overrides`` of ``trainer.optimizer`` (e.g. EQRM's lr
        after burn-in); its schedule becomes constant from here, as in the references (which have none)."""
        from molabench.engine.optim import build_optimizer, build_scheduler

        if self._optim_cfg is None:
            raise RuntimeError("reset_optimizer() needs configure_optimizers() first")
        base, _, steps_per_epoch = self._optim_cfg
        cfg = {**base, **dict(overrides)}
        self.optimizer = build_optimizer(self._checked_groups(self.param_groups(), cfg), cfg)
        self.scheduler = build_scheduler(self.optimizer, {"name": "none"}, self.total_steps, steps_per_epoch)
        self.resets.append({"step": self.step_count, **{k: v for k, v in overrides.items()}})

    def optimizer_state(self) -> dict[str, Any]:
        """Everything of the optimisers a training checkpoint holds."""
        return {
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "resets": list(self.resets),
        }

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`optimizer_state` (after :meth:`configure_optimizers`)."""
        for reset in state.get("resets", []):
            step = self.step_count
            self.step_count = int(reset["step"])
            self.reset_optimizer({k: v for k, v in reset.items() if k != "step"})
            self.step_count = step
        self.resets = list(state.get("resets", []))
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def lr(self) -> float:
        """The current learning rate of the main parameter group."""
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0

    @property
    def progress(self) -> float:
        """Training progress in [0, 1]: updates done / ``total_steps`` (0 before configure_optimizers)."""
        return min(1.0, self.step_count / self.total_steps) if self.total_steps else 0.0

    def task_losses(self, fwd: Forward, batch: Batch) -> tuple[Tensor, Tensor]:
        """Loss of every task (zero for tasks absent from the batch) and the presence mask."""
        losses, present, counts = [], [], []
        for t, (spec, out, idx) in enumerate(zip(self.tasks, fwd.outputs, fwd.groups, strict=True)):
            if out is None or idx is None:
                losses.append(None)
                present.append(False)
                counts.append(0)
                continue
            target = self.arch.target(t, batch.y[spec.name] if isinstance(batch.y, dict) else batch.y[idx])
            self.kinds[t].check_target(spec, out, target)
            losses.append(self.kinds[t].loss(spec, out, target))
            present.append(True)
            if self.dist is not None:
                counts.append(self.kinds[t].loss_count(spec, out, target))
        reference = next(loss for loss in losses if loss is not None)
        stacked = torch.stack([loss if loss is not None else zero_loss(reference) for loss in losses])
        if self.dist is not None:  # what each mean divides by: the ranks' losses combine by these weights
            self._counts = torch.stack([torch.as_tensor(c, dtype=torch.float64, device=stacked.device) for c in counts])
        return stacked, torch.tensor(present, device=stacked.device)

    def prepare(self, batch: Batch) -> Batch:
        """The batch as the step uses it (sorted by task under per-task BatchNorm)."""
        if self.task_norm_layers:
            order = sort_by_task(batch.task)  # per-task BatchNorm: the rows of each task contiguous, in task order
            if order is not None:
                batch = _take(batch, order)
        return batch

    def forward_train(self, batch: Batch) -> Forward:
        """The architecture's train-mode forward of ``batch`` (per-task BatchNorm statistics when asked)."""
        self.train()
        if self.sync_scope is not None:
            self.sync_scope.batch = len(batch)
        with self.task_norm.scope(batch.task if self.task_norm_layers else None), self._rank_rng():
            return self.arch(batch.x, batch.task)

    def penalty_context(self, batch: Batch, fwd: Forward, losses: Tensor) -> PenaltyContext:
        return PenaltyContext(batch, fwd, losses, step=self.step_count, total_steps=self.total_steps)

    def update(self, batch: Batch) -> dict[str, float]:
        """One training step: forward, task losses, penalties, the weighting's backward, optimiser step."""
        return self.step(batch)[0]

    def step(self, batch: Batch) -> tuple[dict[str, float], Batch, Forward]:
        """:meth:`update`, also returning the batch as used and its forward (for algorithms that add a step)."""
        if self.optimizer is None:
            raise RuntimeError("attach an optimiser with configure_optimizers() before update()")
        reset = self.weighting.optimizer_reset(self.step_count, self.total_steps)
        if reset is not None:
            self.reset_optimizer(reset)
        batch = self.prepare(batch)
        fwd = self.forward_train(batch)
        losses, present = self.task_losses(fwd, batch)
        logs: dict[str, float] = {}
        extra: Tensor | None = None
        terms: list[tuple[str, Any, Tensor]] = []
        summed: list[bool] = []
        if len(self.penalties):
            ctx = self.penalty_context(batch, fwd, losses)
            terms = [(name, penalty.weight, penalty(ctx)) for name, penalty in self.penalties.items()]
            summed = [self.penalties[name].across_ranks == "sum" for name, _, _ in terms]
        reducer = None
        groups = fwd.groups
        if self.dist is None:
            for name, weight, value in terms:
                logs[f"penalty/{name}"] = float(value.detach())
                extra = weight * value if extra is None else extra + weight * value
            total = float(losses.detach().sum()) + (float(extra.detach()) if extra is not None else 0.0)
        else:
            from molabench.engine.distributed import GradReducer

            losses, present, averaged = self._global_losses(losses, present, [value for _, _, value in terms])
            world = self.dist.world_size
            for i, ((name, weight, value), mean) in enumerate(zip(terms, averaged, strict=True)):
                # a penalty of this rank's rows: the mean over ranks, or the sum for sums over samples (Penalty.across_ranks)
                share, averaged[i] = (1.0, mean * world) if summed[i] else (1.0 / world, mean)
                logs[f"penalty/{name}"] = averaged[i]
                extra = weight * value * share if extra is None else extra + weight * value * share
            total = float(losses.detach().sum()) + sum(float(weight) * v for (_, weight, _), v in zip(terms, averaged, strict=True))
            reducer = GradReducer(self.dist, self._reduced)
            if self.arch.setting != "single_input":  # a task this rank does not hold: an empty group, as on every rank
                empty = torch.zeros(0, dtype=torch.long, device=batch.task.device)
                groups = [g if g is not None or not bool(present[t]) else empty for t, g in enumerate(fwd.groups)]
        if not math.isfinite(total):
            raise TrainingError(
                f"loss became {total} at step {self.step_count} (epoch {self.epoch}); "
                "lower trainer.optimizer.lr or set trainer.grad_clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        sequential = sequential_backward() if self.sync_bn_layers else contextlib.nullcontext()
        with sequential:  # a backward that synchronises BatchNorm over the ranks cannot be vmapped
            logs.update(
                self.weighting.backward(
                    StepContext(
                        losses=losses,
                        present=present,
                        shared_params=[p for p in self.arch.shared_parameters() if p.requires_grad],
                        task_params=[p for p in self.arch.task_specific_parameters() if p.requires_grad],
                        representation=fwd.representation,
                        groups=groups,
                        shared_behind_representation=self.arch.shared_behind_representation and fwd.representation is not None,
                        extra_loss=extra,
                        step=self.step_count,
                        epoch=self.epoch,
                        total_steps=self.total_steps,
                        reducer=reducer,
                    )
                )
            )
        if reducer is not None and not reducer.done:
            reducer.reduce()  # every rank's share of every gradient, summed: the global batch's gradients
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_count += 1
        logs["loss"] = total
        for t, spec in enumerate(self.tasks):
            if bool(present[t]):
                logs[f"loss/{spec.name}"] = float(losses[t].detach())
        return logs, batch, fwd

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
        out: dict[str, Any] = {"head": self.arch.head_sharing, "bn_stats": self.bn_stats, "bn_stats_effective": effective, "task_norm_layers": self.task_norm_layers}
        if self.resets:
            out["optimizer_resets"] = list(self.resets)
        if self.optimizer_notes:
            out["optimizer_notes"] = list(self.optimizer_notes)
        out.update(self.weighting.describe())
        for name, penalty in self.penalties.items():
            if described := penalty.describe():
                out[f"penalty/{name}"] = described
        if self.bn_stats == "per_task" and not self.task_norm_layers:
            out["bn_stats_note"] = (
                "single-input setting: every sample serves every task, so BatchNorm uses whole-batch statistics"
                if self.arch.setting == "single_input" else "no shared BatchNorm layer to convert"
            )
        if self.dist is not None or self.sync_bn:  # torchrun: whose BatchNorm statistics (trainer.sync_bn)
            out["bn_sync"] = self.batchnorm_statistics()
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

    if isinstance(arch, Uniform) and bn_stats == "auto":  # a method blind to the task keeps whole-batch statistics
        return 0
    if isinstance(arch, Uniform):
        raise ConfigError(
            "trainer.bn_stats=per_task normalises each task's samples separately, which tells the network the task; "
            "method=uniform must not see task ids: use trainer.bn_stats=batch"
        )
    return convert_batchnorm(arch, context, skip=_own_subtrees(arch))


def _own_subtrees(arch: Architecture) -> tuple[nn.Module, ...]:
    """Subtrees with parameters, none of them shared (heads, single-task encoders): they see one task's samples."""
    shared = {id(p) for p in arch.shared_parameters()}
    skip = [m for m in arch.modules() if (ps := list(m.parameters())) and not any(id(p) in shared for p in ps)]
    heads = getattr(arch, "heads", None)
    if isinstance(heads, nn.Module):
        skip.append(heads)
    return tuple(skip)


def backbone_factory(cfg: Mapping[str, Any], data: MultiTaskData):
    from molabench.models.backbones import build_backbone

    kwargs = {k: v for k, v in _hparams(cfg).items() if k != "mola_stages"}  # MoLA's default placement, not the backbone's
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
    hparams = _hparams(arch_cfg)
    context: dict[str, Any] = {}
    # Context an architecture may declare: ``input_shape`` (C, H, W) of the data (gates on raw pixels).
    if "input_shape" in inspect.signature(ARCHITECTURES.get(arch_cfg["name"])).parameters:
        if "input_shape" in hparams:
            raise ConfigError("method.architecture.input_shape is taken from the data (data.image_size); remove it")
        context["input_shape"] = (data.in_channels, *data.image_size)
    return ARCHITECTURES.build(
        arch_cfg["name"],
        tasks=data.tasks,
        setting=data.setting,
        backbone=backbone_factory(backbone, data),
        head=head,
        **context,
        **hparams,
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
    from molabench.algorithms import ALGORITHMS
    from molabench.penalties.base import Adversary

    algorithm_cfg = dict(method.get("algorithm") or {"name": "multitask"})
    algorithm = ALGORITHMS.build(
        str(algorithm_cfg.get("name", "multitask")),
        arch=arch,
        weighting=weighting,
        penalties=penalties,
        bn_stats=bn_stats,
        **_hparams(algorithm_cfg),
    )
    for name, penalty in penalties.items():
        if isinstance(penalty, Adversary) and penalty.needs_alternating and not penalty.alternating:
            raise ConfigError(f"penalty {name} trains its discriminator in steps of its own: set method.algorithm.name=adversarial")
    return algorithm
