"""Can T per-task experts on ~B/T samples each be run faster by batching them into grouped kernels?

The question behind CGC's and PLE's cost (``docs/architectures.md``, Cost): in the multi-input setting a
task-t sample runs task t's own expert, a whole backbone, on the ~B/T samples of its task. Those T small
passes cost more per sample than one pass over the whole batch. If the price were per-operation overhead,
running the T experts as one grouped computation would remove it; if it is each expert's weights being
read for only ~B/T samples, nothing exact removes it. Measured here, all fwd + bwd of ResNet-18
(``BACKBONES['resnet18']``, the default stem) on 3 x size x size images, interleaved in one process:

- ``one_on_all``: one backbone on T x n images (the reference: the same samples, one set of weights);
- ``loop``: T backbones, each on its own n images, one after the other (what CGC's efficient path does);
- ``vmap``: the T backbones as one computation, ``torch.func.vmap`` over stacked parameters (grouped
  convolutions underneath; BatchNorm without running statistics, which vmap cannot update in place).

and per ResNet-18 stage shape (3x3 convolution, C -> C at the stage's map size for this input), the same
three forms for a single convolution: ``conv_loop`` (T convolutions), ``conv_grouped`` (one convolution
with ``groups=T``) and ``conv_one`` (one convolution on all T x n samples). Ratios are to ``one_on_all``
(resp. ``conv_one``) paired round by round (``machine.timing_summary``).

    .venv/bin/python scripts/bench_grouped_experts.py [--rounds 5] [--out results/bench/grouped_experts.json]
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

from molabench.atomic import write_json_atomic
from molabench.machine import matmul_gflops, timing_summary
from molabench.models.backbones import build_backbone


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, repeats: int = 2) -> dict[str, list[float]]:
    """Per label, the fastest of ``repeats`` calls in each of ``rounds`` rounds (labels in turn; round 0 warms up)."""
    times: dict[str, list[float]] = {label: [] for label in steps}
    for r in range(rounds + 1):
        for label, step in steps.items():
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - start)
            if r:
                times[label].append(best)
    return times


def backbone_steps(tasks: int, n: int, size: int) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    reference = build_backbone("resnet18")
    experts = [build_backbone("resnet18") for _ in range(tasks)]
    stacked = [copy.deepcopy(e) for e in experts]
    for e in stacked:
        replace_all_batch_norm_modules_(e)
    params, buffers = stack_module_state(stacked)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    skeleton = copy.deepcopy(stacked[0]).to("meta")
    xs = torch.randn(tasks, n, 3, size, size)
    x_all = xs.reshape(tasks * n, 3, size, size)

    def one_on_all() -> None:
        reference.forward_features(x_all).sum().backward()

    def loop() -> None:
        for t in range(tasks):
            experts[t].forward_features(xs[t]).sum().backward()

    def grouped() -> None:
        vmap(functools.partial(_features, skeleton))(params, buffers, xs).sum().backward()

    return {"one_on_all": one_on_all, "loop": loop, "vmap": grouped}


class _Features(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def _features(skeleton: nn.Module, p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``skeleton.forward_features(x)`` with parameters ``p`` and buffers ``b`` (one expert under vmap)."""
    wrapped = {f"net.{k}": v for k, v in {**p, **b}.items()}
    return functional_call(_Features(skeleton), wrapped, (x,))


def conv_steps(tasks: int, n: int, channels: int, spatial: int) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    weights = [torch.randn(channels, channels, 3, 3, requires_grad=True) for _ in range(tasks)]
    xs = [torch.randn(n, channels, spatial, spatial, requires_grad=True) for _ in range(tasks)]
    w_grouped = torch.randn(tasks * channels, channels, 3, 3, requires_grad=True)
    x_grouped = torch.randn(n, tasks * channels, spatial, spatial, requires_grad=True)
    x_all = torch.randn(tasks * n, channels, spatial, spatial, requires_grad=True)

    def conv_loop() -> None:
        for w, x in zip(weights, xs, strict=True):
            F.conv2d(x, w, padding=1).sum().backward()

    def conv_grouped() -> None:
        F.conv2d(x_grouped, w_grouped, padding=1, groups=tasks).sum().backward()

    def conv_one() -> None:
        F.conv2d(x_all, weights[0], padding=1).sum().backward()

    return {"conv_one": conv_one, "conv_loop": conv_loop, "conv_grouped": conv_grouped}


def stage_shapes(size: int) -> list[tuple[str, int, int]]:
    """(stage, channels, map size) of ResNet-18 with the default stem for a ``size`` input."""
    net = build_backbone("resnet18").eval()
    with torch.no_grad():
        maps = net.forward_stages(torch.zeros(1, 3, size, size))
    names = [str(info["module"]) for info in net.feature_info]
    return [(name, int(m.shape[1]), int(m.shape[-1])) for name, m in zip(names, maps, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=9)
    parser.add_argument("--per-task", type=int, default=14, help="samples per task (B/T: 128/9 ~ 14)")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/bench/grouped_experts.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gflops = matmul_gflops(args.threads)
    started = time.time()
    whole = timing_summary(interleaved(backbone_steps(args.tasks, args.per_task, args.size), args.rounds), "one_on_all")
    convs = {}
    for stage, channels, spatial in stage_shapes(args.size):
        summary = timing_summary(interleaved(conv_steps(args.tasks, args.per_task, channels, spatial), args.rounds), "conv_one")
        convs[f"{stage} ({channels} ch, {spatial}x{spatial})"] = summary
    result = {
        "config": {
            "backbone": "resnet18 (standard stem), forward_features", "input": f"3x{args.size}x{args.size}",
            "tasks": args.tasks, "per_task": args.per_task, "threads": args.threads, "rounds": args.rounds,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "matmul_gflops_fp32": round(gflops, 1), "wall_s": round(time.time() - started, 1),
            "note": "fwd+bwd; fastest of 2 calls per round; ratios paired per round to one_on_all / conv_one",
        },
        "backbones": whole,
        "conv3x3_per_stage": convs,
    }
    write_json_atomic(args.out, result)
    print(f"matmul {gflops:.0f} GFLOP/s; T = {args.tasks} experts x {args.per_task} samples, {args.size} px")
    for label, row in whole.items():
        print(f"  {label:<12} {row['median_s'] * 1e3:8.1f} ms  x{row['ratio_to_one_on_all']:.2f}  (ratio spread {row['ratio_spread']:.0%})")
    for shape, rows in convs.items():
        print(f"  {shape:<26} " + "  ".join(f"{k} x{v['ratio_to_conv_one']:.2f}" for k, v in rows.items()))


if __name__ == "__main__":
    main()
