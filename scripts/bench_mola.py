"""Training-step cost of MoLA vs HPS on ResNet-18 (standard stem), 28x28 inputs, T = 9 tasks.

Writes ``results/bench/mola_step.json`` (atomic: temp file + os.replace). Every variant runs a
full training step (forward, per-task cross-entropy, TwD for the routers, backward, Adam step).
Variants are timed alternately in one process (round-robin, ``--rounds`` rounds after
``--warmup``) and the median per variant is reported, so that load drifting on a shared machine
hits all of them alike.

- ``hps``: shared ResNet-18 + heads; batch of ``--batch`` samples with random task ids.
- ``mola_grad``: MoLA-Grad on a task-grouped batch with equal counts (sorted by task) so that the
  grouped-convolution fast path applies. Equal counts need B divisible by T, so this batch has
  ``T * (B // T)`` samples (126 for B=128, T=9) and is compared with ``hps_grouped`` on the same batch.
- ``mola_grad_mixed``: MoLA-Grad on the random (unequal-count) batch: one-hot dense fallback.
- ``mola_router`` / ``mola_router_light``: MoLA-Router with the authors' ResNet-20 router / the light router.
- ``authors_grad``: the authors' design: one encoder pass per task (over that task's samples) with
  merged weights W0 + delta_W_t, code factorisation.
- ``authors_router``: the authors' design: code factorisation, (E+1)-wide convolutions, ResNet-20 router.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` during two steps; on CPU each variant runs
two steps in a fresh subprocess and the peak RSS (``VmHWM`` of /proc/self/status, reset through
/proc/self/clear_refs just before) minus the RSS just before the first step is reported
(``*_peak_mem_mb``). ``getrusage().ru_maxrss`` is not used: a child inherits its parent's peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from molabench.architectures import ARCHITECTURES, Architecture, load_all
from molabench.atomic import write_json_atomic
from molabench.data.base import Batch, TaskSpec
from molabench.engine.optim import build_optimizer
from molabench.models.backbones import build_backbone
from molabench.penalties import PENALTIES, Penalty, PenaltyContext
from molabench.penalties import load_all as load_penalties

STAGES = ["layer1", "layer2", "layer3", "layer4"]
VARIANTS = ["hps", "hps_grouped", "mola_grad", "mola_grad_mixed", "mola_router", "mola_router_light", "authors_grad", "authors_router"]


def make_batches(args: argparse.Namespace, device: torch.device) -> dict[str, Batch]:
    g = torch.Generator().manual_seed(0)
    t, b = args.tasks, args.batch
    x = torch.randn(b, 3, args.image, args.image, generator=g)
    mixed_task = torch.randint(0, t, (b,), generator=g)
    per = b // t
    grouped_task = torch.arange(t).repeat_interleave(per)
    y = torch.randint(0, args.classes, (b,), generator=g)
    return {
        "mixed": Batch(x, y, mixed_task).to(device),
        "grouped": Batch(x[: per * t], y[: per * t], grouped_task).to(device),
    }


def build(name: str, args: argparse.Namespace, device: torch.device) -> tuple[Architecture, Penalty | None, str]:
    torch.manual_seed(0)
    tasks = [TaskSpec(f"task{i}", args.classes) for i in range(args.tasks)]
    common = {"tasks": tasks, "setting": "multi_input", "backbone": lambda: build_backbone("resnet18")}
    mola = {"rank": args.rank, "stages": STAGES, "lora_alpha": 16}
    batch = {"hps_grouped": "grouped", "mola_grad": "grouped"}.get(name, "mixed")
    if name.startswith("hps"):
        arch = ARCHITECTURES.build("hps", **common)
    elif name in ("mola_grad", "mola_grad_mixed"):
        arch = ARCHITECTURES.build("mola_grad", **common, **mola)
    elif name == "authors_grad":
        arch = ARCHITECTURES.build("mola_grad", **common, **mola, factorization="code")
    elif name == "authors_router":
        arch = ARCHITECTURES.build("mola_router", **common, **mola, factorization="code", router="authors")
    else:
        router = "light" if name == "mola_router_light" else "authors"
        arch = ARCHITECTURES.build("mola_router", **common, **mola, router=router)
    penalty = None
    if "router" in name:
        penalty = PENALTIES.build("twd", arch=arch, tasks=tasks, weight=0.1)
    arch.to(device)
    if penalty is not None:
        penalty.to(device)
    return arch, penalty, batch


def authors_grad_forward(arch: Architecture, batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One encoder pass per task present in the batch, each with that task's merged weights."""
    routing = arch.routings[0]  # type: ignore[attr-defined]
    pairs = []
    try:
        for t in range(arch.num_tasks):
            idx = torch.nonzero(batch.task == t).flatten()
            if idx.numel():
                routing.set_single(t)
                pairs.append((arch.heads[t](arch.encoder(batch.x[idx])), batch.y[idx]))  # type: ignore[index]
    finally:
        routing.clear()
    return pairs


def make_step(name: str, arch: Architecture, penalty: Penalty | None, batch: Batch) -> Callable[[], None]:
    params = list(arch.parameters()) + (list(penalty.parameters()) if penalty is not None else [])
    opt = build_optimizer(params, {"name": "adam", "lr": 1e-4})  # the trainer's optimiser

    def step() -> None:
        if name == "authors_grad":
            losses = [F.cross_entropy(out, y) for out, y in authors_grad_forward(arch, batch)]
            forward = None
        else:
            forward = arch(batch.x, batch.task)
            losses = [
                F.cross_entropy(out, batch.y[idx])
                for out, idx in zip(forward.outputs, forward.groups, strict=True)
                if out is not None
            ]
        loss = torch.stack(losses).sum()
        if penalty is not None and forward is not None:
            loss = loss + penalty.weight * penalty(PenaltyContext(batch, forward, torch.stack(losses)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (VmHWM); ru_maxrss would keep the parent's peak across fork/exec."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_probe(name: str, args: argparse.Namespace, device: torch.device) -> float:
    """Peak memory (MiB) of two training steps beyond what the process held before them."""
    arch, penalty, kind = build(name, args, device)
    step = make_step(name, arch, penalty, make_batches(args, device)[kind])
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    reset_peak_rss()
    before = proc_status_mb("VmRSS")
    step()
    step()
    return proc_status_mb("VmHWM") - before


def measure_memory(args: argparse.Namespace, device: torch.device, names: list[str]) -> dict[str, object]:
    memory = {}
    for name in names:
        cmd = [sys.executable, __file__, "--memory-probe", name] + [
            f"--{k}={getattr(args, k)}" for k in ("batch", "tasks", "rank", "image", "classes")
        ] + ([f"--threads={args.threads}"] if args.threads else [])
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        memory[f"{name}_peak_mem_mb"] = round(json.loads(res.stdout.strip().splitlines()[-1])["peak_mem_mb"], 1)
    method = (
        "torch.cuda.max_memory_allocated over two steps minus allocated before"
        if device.type == "cuda"
        else "fresh subprocess per variant: peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before two steps"
    )
    return {"memory": memory, "memory_method": method}




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=9)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--image", type=int, default=28)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--variants", nargs="*", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--out", type=Path, default=Path("results/bench/mola_step.json"))
    parser.add_argument("--memory-only", action="store_true", help="only (re)run the memory probes into --out")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_all()
    load_penalties()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.memory_probe:
        print(json.dumps({"peak_mem_mb": memory_probe(args.memory_probe, args, device)}))
        return

    if args.memory_only:
        out = json.loads(args.out.read_text())
        out.update(measure_memory(args, device, args.variants))
        write_json_atomic(args.out, out)
        print(json.dumps(out["memory"], indent=1))
        return

    batches = make_batches(args, device)
    steps, counts = {}, {}
    for name in args.variants:
        arch, penalty, kind = build(name, args, device)
        steps[name] = make_step(name, arch, penalty, batches[kind])
        counts[name] = arch.param_counts()
        counts[name]["total"] = sum(p.numel() for p in arch.parameters()) + (
            sum(p.numel() for p in penalty.parameters()) if penalty is not None else 0
        )
    times: dict[str, list[float]] = {name: [] for name in steps}
    start = time.perf_counter()
    for round_ in range(args.warmup + args.rounds):
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - t0)
        print(f"round {round_ + 1}/{args.warmup + args.rounds} done ({time.perf_counter() - start:.0f}s)", flush=True)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    out: dict[str, object] = {f"{name}_step_s": round(t, 5) for name, t in med.items()}

    def ratio(key: str, num: str, den: str) -> None:
        if num in med and den in med:
            out[key] = round(med[num] / med[den], 3)

    ratio("grad_ratio", "mola_grad", "hps_grouped")
    ratio("grad_mixed_ratio", "mola_grad_mixed", "hps")
    ratio("router_ratio", "mola_router", "hps")
    ratio("router_light_ratio", "mola_router_light", "hps")
    ratio("authors_grad_ratio", "authors_grad", "hps")
    ratio("authors_router_ratio", "authors_router", "hps")
    out["step_s_min"] = {name: round(min(ts), 5) for name, ts in times.items()}
    out["step_s_spread"] = {name: [round(min(ts), 4), round(max(ts), 4)] for name, ts in times.items()}

    if not args.no_memory:
        out.update(measure_memory(args, device, list(steps)))
    out["params"] = counts
    out["config"] = {
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "backbone": "torchvision resnet18, standard 7x7/2 stem + maxpool",
        "image": args.image, "batch": args.batch, "tasks": args.tasks, "rank": args.rank, "lora_alpha": 16,
        "stages": STAGES, "adapt_downsample": False, "experts": args.tasks, "optimizer": "Adam",
        "rounds": args.rounds, "warmup": args.warmup, "statistic": "median over rounds, variants interleaved",
        "batching": {
            "mola_grad, hps_grouped": f"{(args.batch // args.tasks) * args.tasks} samples, {args.batch // args.tasks} per task, "
            "sorted by task (grouped-conv fast path)",
            "others": f"{args.batch} samples with uniformly random task ids (unequal counts)",
        },
        "router_variants_include": "TwD penalty (weight 0.1, omega MLP dim 32)",
        "authors_grad": "one encoder pass per task over that task's samples, merged W0 + delta_W_t (code factorisation)",
        "authors_router": "code factorisation, (E+1)-wide convolutions, ResNet-20 router",
    }
    write_json_atomic(args.out, out)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
