"""Parameter counts of the architectures as closed formulas (``../shared/docs/architectures.md``, "Parameter
counts"; heads excluded), for Fig. 5 and for tests that the built models hold exactly these.

Notation: T tasks, E = T experts (the authors' setting), P the backbone's parameters without its classifier,
N_in = C·H·W the flattened input (gates on raw pixels), n_i the flattened input of PLE's level i (stem,
layer1..layer4), k DSelect-k's experts per selector (2), r MoLA's rank and S = Σ over adapted convs of
(C_in·k² + C_out) (paper factorisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

#: MTAN's task-shared f blocks (F) and per-task attention (A): ResNet-18 / ResNet-50 (architectures.md).
MTAN_SHARED = {"resnet18": 4_822_272, "resnet50": 7_931_392}
MTAN_ATTENTION = {"resnet18": 1_046_144, "resnet50": 4_175_936}


def level_inputs(backbone: nn.Module, input_shape: tuple[int, int, int]) -> list[int]:
    """n_0..n_4: the flattened inputs of the stem and of layer1..layer4 for one image of ``input_shape``."""
    x = torch.zeros(1, *input_shape, device="meta")
    sizes = [math.prod(input_shape)]
    x = backbone.forward_stem(x)
    for name in backbone.stage_names:
        sizes.append(math.prod(x.shape[1:]))
        x = backbone.forward_stage(name, x)
    return sizes


def mola_conv_sum(backbone: nn.Module, stages: Sequence[str], downsample: bool = False) -> int:
    """S: Σ over the adapted convs of the given stages of C_in·k² + C_out (``stem``: conv1)."""
    total = 0
    for stage in stages:
        module = backbone.conv1 if stage == "stem" else getattr(backbone, stage)
        for name, conv in ([("conv1", module)] if stage == "stem" else module.named_modules()):
            if isinstance(conv, nn.Conv2d) and ("downsample" not in name or downsample):
                total += conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] + conv.out_channels
    return total


def formulas(p: int, n_in: int, levels: Sequence[int], backbone_name: str, mola_s: int, rank: int = 8, k: int = 2) -> dict[str, Callable[[int], int]]:
    """T -> parameter count (heads excluded), per architecture (E = T)."""
    return {
        "hps": lambda t: p,
        "cross_stitch": lambda t: t * p + 4 * t * t,
        "ltb": lambda t: t * p + 6 * t * t,
        "mmoe": lambda t: t * p + t * t * (n_in + 1),
        "cgc": lambda t: (t + 1) * p + 2 * t * (n_in + 1),
        "dselect_k": lambda t: t * p + t * (n_in + 1) * k * (math.ceil(math.log2(t)) + 1),
        "ple": lambda t: (t + 1) * p + 2 * t * sum(n + 1 for n in levels),
        "mtan": lambda t: p + MTAN_SHARED[backbone_name] + t * MTAN_ATTENTION[backbone_name],
        "mola_grad": lambda t: p + t * rank * mola_s,
    }


#: The architectures of Fig. 5 with the options they are counted at (the authors' defaults; MoLA r = 8).
FIG5 = {
    "hps": {},
    "mola_grad": {"rank": 8, "stages": ["stem", "layer1", "layer2", "layer3", "layer4"]},  # configs/method/mola_grad.yaml
    "mola_router": {"rank": 8},
    "cross_stitch": {},
    "mmoe": {},
    "cgc": {},
    "dselect_k": {},
    "ltb": {},
    "mtan": {},
}


def built_count(name: str, num_tasks: int, backbone: str = "resnet18", input_shape: tuple[int, int, int] = (3, 224, 224), **options: object) -> int:
    """Parameters of architecture ``name`` for ``num_tasks`` classification tasks, heads excluded, counted on
    the meta device (nothing allocated, so T = 12 MMoEs cost nothing)."""
    import inspect

    from molabench.architectures import ARCHITECTURES
    from molabench.data.base import TaskSpec
    from molabench.models.backbones import build_backbone

    tasks = [TaskSpec(f"t{i}", 2) for i in range(num_tasks)]
    kwargs: dict[str, object] = dict(options)
    if "input_shape" in inspect.signature(ARCHITECTURES.get(name)).parameters:
        kwargs["input_shape"] = input_shape
    with torch.device("meta"):
        arch = ARCHITECTURES.build(
            name, tasks=tasks, setting="multi_input",
            backbone=lambda: build_backbone(backbone, in_channels=input_shape[0]), **kwargs,
        )
    heads = {id(p) for p in arch.head_parameters()}
    return sum(p.numel() for p in arch.parameters() if id(p) not in heads)


def backbone_facts(backbone: str = "resnet18", input_shape: tuple[int, int, int] = (3, 224, 224)) -> dict[str, object]:
    """P, N_in, the PLE level inputs n_i and MoLA-Grad's S (stem + layer1..4, the default stages) of a backbone."""
    from molabench.models.backbones import build_backbone

    with torch.device("meta"):
        net = build_backbone(backbone, in_channels=input_shape[0])
    return {
        "P": sum(p.numel() for p in net.parameters()),
        "N_in": math.prod(input_shape),
        "levels": level_inputs(net, input_shape),
        "S": mola_conv_sum(net, ["stem", "layer1", "layer2", "layer3", "layer4"]),
    }
