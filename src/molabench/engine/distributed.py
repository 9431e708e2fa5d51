"""Data-parallel training over several processes (``torchrun``), exact where it can be.

``torchrun --nproc_per_node=N -m molabench.train ...`` starts N processes; each finds ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment and :func:`setup` joins them into one process
group (NCCL on CUDA, each rank on ``cuda:<LOCAL_RANK>``; gloo on the CPU). A single process
(``WORLD_SIZE`` unset or 1) trains exactly as before: nothing here is used.

What N processes compute, with ``trainer.batch_size = B`` per process (docs/cluster.md):

- **Data.** Every rank draws the *same* global batch of N x B indices from the same seeded loader
  (mixed or per-task batching, with the rules of one process at batch N x B) and keeps rows
  ``rank::N`` of it (:class:`~molabench.data.loader.BatchLoader`); augmentation parameters are drawn
  for the whole global batch, so each sample gets the ones it gets in one process. The loader's
  position is therefore the same on every rank, and so is a checkpoint of it.
- **Losses.** A task's loss is a mean over its samples (or valid pixels) in the batch, and ranks
  hold different numbers of them. Each rank sends ``(L_t^r m_t^r, m_t^r)`` (``m``: the count the mean
  divides by, :meth:`TaskKind.loss_count`) in one all-reduce, and trains on
  ``L_t^r m_t^r / m_t`` — whose gradients, summed over ranks, are those of the global loss
  ``L_t = sum_r L_t^r m_t^r / m_t`` — carrying the *value* of ``L_t``: every rank's weighting sees
  the global losses (DWA's history, UW, EQRM's quantile, MGDA's loss normalisation) and holds the
  same state.
- **Gradients** are summed with explicit all-reduces, not ``DistributedDataParallel``: gradient
  methods need the T x P matrix of per-task gradients of the shared parameters, which DDP's
  bucketed hooks on the summed loss never see. :class:`GradReducer` sums, in one flat all-reduce,
  every local gradient (and, for gradient methods, the local per-task gradient matrix
  ``G^r``), so every rank combines the global ``G = sum_r G^r`` with the same deterministic code:
  N ranks x B compute what one process computes with N x B (up to float rounding). A weighting's
  own parameters (UW's log-variances ...) are left out: their gradients come from the global loss
  values and are already complete on every rank.
- **BatchNorm** in train mode normalises with each rank's own batch statistics by default (what a
  rank sees of the batch: *not* the statistics of the N x B batch); ``trainer.sync_bn=true``
  synchronises the statistics of the shared network's BatchNorm layers over the ranks
  (:mod:`molabench.models.sync_norm`: whole-batch, or per task with ``bn_stats=per_task``), which
  makes them those of the global batch. Running statistics (evaluation) are taken from rank 0
  before every evaluation, as ``DistributedDataParallel`` does.
- **Evaluation.** Each rank evaluates rows ``rank::N`` of the split; the metric accumulators
  (correct counts, confusion matrices, pixel sums, angle errors) and the loss sums are reduced
  over the ranks before any metric is computed, never averaged per rank.
- **Files.** Only rank 0 writes the record, the checkpoint, the model and the logs, and prints.
  A checkpoint records the world size; resuming it with another one is a one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from molabench.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where used: the command line reads this module before it needs torch
    import torch
    from torch import Tensor, nn

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def env_rank() -> int:
    """This process's rank from the environment (0 outside ``torchrun``)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def env_world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True in a single process and on rank 0 of a ``torchrun`` launch: the process that prints and writes."""
    return env_rank() == 0


@dataclass
class Distributed:
    """The process group of a ``torchrun`` launch and the collectives training uses.

    Every collective here is called by every rank in the same order; tensors travel on
    :attr:`comm_device` (the rank's GPU under NCCL, the CPU under gloo) and come back on their own
    device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    sync_bn: bool = False
    #: collectives issued (by kind) and bytes all-reduced, for the record and the benchmark
    traffic: dict[str, float] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        import torch

        return self.device if self.backend == "nccl" else torch.device("cpu")

    def _count(self, kind: str, tensor: Tensor | None = None) -> None:
        self.traffic[kind] = self.traffic.get(kind, 0) + 1
        if tensor is not None:
            self.traffic["bytes"] = self.traffic.get("bytes", 0) + tensor.numel() * tensor.element_size()

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """The sum (or ``max``/``min``) of ``tensor`` over the ranks, on ``tensor``'s device (a new tensor)."""
        import torch.distributed as dist

        buf = tensor.detach().to(self.comm_device, copy=True).contiguous()
        self._count("all_reduce", buf)
        dist.all_reduce(buf, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return buf.to(tensor.device)

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's ``tensor`` (same shape on every rank), in rank order, on ``tensor``'s device."""
        import torch
        import torch.distributed as dist

        buf = tensor.detach().to(self.comm_device).contiguous()
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._count("all_gather", buf)
        dist.all_gather(out, buf)
        return [t.to(tensor.device) for t in out]

    def all_gather_object(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        self._count("all_gather_object")
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; e.g. the resume plan and its checkpoint)."""
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        self._count("broadcast_object")
        dist.broadcast_object_list(box, src=0, device=self.comm_device)
        return box[0]

    def broadcast_(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's (one flat broadcast per dtype)."""
        import torch
        import torch.distributed as dist

        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1).to(self.comm_device) for t in group])
            self._count("broadcast", flat)
            dist.broadcast(flat, src=0)
            offset = 0
            with torch.no_grad():
                for t in group:
                    t.copy_(flat[offset: offset + t.numel()].view_as(t).to(t.device))
                    offset += t.numel()

    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Rank 0's parameters (unless ``buffers_only``) and buffers in every rank's ``module``."""
        tensors = [] if buffers_only else [p.data for p in module.parameters()]
        tensors += [b for b in module.buffers() if b.numel()]
        if tensors:
            self.broadcast_(tensors)

    def barrier(self) -> None:
        import torch.distributed as dist

        self._count("barrier")
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def agree_signal(self, requested: int | None) -> int | None:
        """The signal any rank received (the largest number), so that all ranks stop after the same step."""
        import torch

        value = self.all_reduce(torch.tensor([requested or 0], dtype=torch.int64), op="max")
        return int(value) or None

    def same_everywhere(self, values: Sequence[float]) -> bool:
        """Whether ``values`` (checksums) are equal on every rank."""
        import torch

        t = torch.tensor(list(values), dtype=torch.float64)
        return bool(torch.equal(self.all_reduce(t, op="max"), self.all_reduce(t, op="min")))

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend, "device": str(self.device)}


_CURRENT: Distributed | None = None


def current() -> Distributed | None:
    """The process group this process joined (:func:`setup`), or ``None`` (a single process)."""
    return _CURRENT


def setup(device_name: str = "auto") -> Distributed | None:
    """Join the ``torchrun`` process group when the environment names one of several processes; the
    rank's device follows ``device`` (``auto``: ``cuda:<LOCAL_RANK>`` when CUDA is available, else
    the CPU; ``cpu``; ``cuda``). Returns ``None`` in a single process. Idempotent."""
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    world = env_world_size()
    if world < 2:
        return None
    missing = [name for name in ENV if name not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set: launch several processes with "
            "torchrun --nproc_per_node=N -m molabench.train ..., which sets all of RANK, WORLD_SIZE, LOCAL_RANK"
        )
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    name = str(device_name)
    if name.startswith("cuda:"):
        raise ConfigError(
            f"device={name} under torchrun: each process uses cuda:<LOCAL_RANK> (the GPUs CUDA_VISIBLE_DEVICES shows); "
            "use device=cuda or device=auto"
        )
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but CUDA is not available here; use device=cpu or device=auto")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started more processes per node than there are GPUs ({torch.cuda.device_count()}): "
                "use --nproc_per_node <= the number of GPUs, or device=cpu"
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    elif name in ("cpu", "auto"):
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise ConfigError(f"device={name!r} is not a device molabench can train on under torchrun; use device=auto, cpu or cuda")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    _CURRENT = Distributed(rank, world, local_rank, backend, device)
    return _CURRENT


def use(group: Distributed | None) -> None:
    """Make ``group`` the current one (tests and benchmarks that join a process group themselves)."""
    global _CURRENT
    _CURRENT = group


def teardown() -> None:
    """Leave the process group (end of a launch)."""
    global _CURRENT
    if _CURRENT is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = None


class GradReducer:
    """Sums the gradients of ``params`` over the ranks in one flat all-reduce (see the module docstring).

    ``.grad`` holds this rank's contribution before :meth:`reduce` and the global gradient after;
    a parameter whose gradient is ``None`` on every rank stays ``None`` (an optimiser then skips it,
    as in one process), one with a gradient on some rank gets the sum. ``extra`` tensors (the per-task
    gradient matrix) ride in the same all-reduce. Called once per step (:attr:`done`)."""

    def __init__(self, group: Distributed, params: Sequence[nn.Parameter]) -> None:
        self.group = group
        self.params = list(params)
        self.done = False

    def reduce(self, extra: Sequence[Tensor] = (), without: Sequence[nn.Parameter] = ()) -> list[Tensor]:
        """Sum ``extra`` and every gradient over the ranks (see the class docstring); ``without``: parameters
        that have no gradient yet on any rank (the same on every rank), left out of the message."""
        import torch

        if self.done:
            raise RuntimeError("the gradients of this step were already reduced")
        self.done = True
        skip = {id(p) for p in without}
        params = [p for p in self.params if id(p) not in skip]
        like = params[0] if params else (extra[0] if extra else torch.zeros(()))
        dtype = like.dtype if like.is_floating_point() else torch.float32
        parts = [e.detach().reshape(-1).to(dtype) for e in extra]
        parts += [p.grad.detach().reshape(-1).to(dtype) if p.grad is not None else p.new_zeros(p.numel(), dtype=dtype) for p in params]
        parts.append(torch.tensor([float(p.grad is not None) for p in params], dtype=dtype, device=like.device))
        flat = self.group.all_reduce(torch.cat(parts)) if parts else torch.zeros(0)
        out, offset = [], 0
        for e in extra:
            out.append(flat[offset: offset + e.numel()].view_as(e).to(e.dtype))
            offset += e.numel()
        grads = []
        for p in params:
            grads.append(flat[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
        has = flat[offset:]
        for p, g, n in zip(params, grads, has.tolist(), strict=True):
            p.grad = g.to(p.dtype) if n > 0 else None
        return out

    def agree(self, ok: bool) -> bool:
        """True when ``ok`` is true on every rank (a code path every rank can take)."""
        import torch

        return bool(self.group.all_reduce(torch.tensor([int(ok)], dtype=torch.int64), op="min"))

    def reduce_small(self, tensor: Tensor) -> Tensor:
        """The sum over ranks of a small tensor needed before the backward ends (a Gramian, norms)."""
        return self.group.all_reduce(tensor)
