"""Put MoLA layers into a backbone, by stage.

Stages of a ResNet (``ResNetFeatures``): ``stem`` (``conv1``) and ``layer1`` .. ``layer4``
("Block1..Block4" of the paper's Table 7). Inside a stage every conv is adapted; the 1x1
``downsample`` convs only with ``adapt_downsample=True`` (the authors' Router variant does so).

Stages of a timm ViT (``TimmFeatures``, Table 8): ``blocks`` (all transformer blocks) or
``blocks.<i>``; inside a block the linear layers whose name ends with one of ``vit_targets``
(``qkv``, ``proj``, ``fc1``, ``fc2``) are adapted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from molabench.errors import ConfigError
from molabench.models.mola.layer import Factorization, MoLAConv2d, MoLALinear
from molabench.models.mola.routing import Routing

RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
VIT_TARGETS = ("qkv", "proj", "fc1", "fc2")


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(getattr(backbone, "net", None), "blocks")


def default_stages(backbone: nn.Module) -> list[str]:
    return ["blocks"] if is_vit(backbone) else ["layer1", "layer2", "layer3", "layer4"]


def _stage_module(backbone: nn.Module, stage: str) -> tuple[str, nn.Module]:
    """The module holding a stage's layers and its name prefix inside ``backbone``."""
    if is_vit(backbone):
        if stage == "blocks" or (stage.startswith("blocks.") and stage[7:].isdigit()):
            prefix = f"net.{stage}"
            try:
                return prefix, backbone.get_submodule(prefix)
            except AttributeError:
                pass
        raise ConfigError(f"ViT MoLA stage {stage!r} unknown; use 'blocks' or 'blocks.<i>' (method.stages=null adapts all blocks)")
    if stage not in RESNET_STAGES or not hasattr(backbone, "layer1"):
        raise ConfigError(f"MoLA stage {stage!r} unknown for this backbone; choose from {', '.join(RESNET_STAGES)}")
    if stage == "stem":
        return "conv1", backbone.conv1
    return stage, getattr(backbone, stage)


def _targets(backbone: nn.Module, stage: str, adapt_downsample: bool, vit_targets: Sequence[str]) -> list[str]:
    prefix, module = _stage_module(backbone, stage)
    if isinstance(module, nn.Conv2d):
        return [prefix]
    names = []
    for name, child in module.named_modules():
        full = f"{prefix}.{name}"
        if isinstance(child, nn.Conv2d) and not is_vit(backbone):
            if adapt_downsample or ".downsample." not in f".{name}.":
                names.append(full)
        elif isinstance(child, nn.Linear) and is_vit(backbone) and name.rsplit(".", 1)[-1] in vit_targets:
            names.append(full)
    return names


def inject_mola(
    backbone: nn.Module,
    stages: Sequence[str],
    ranks: Mapping[str, int],
    routings: Mapping[str, Routing],
    experts: int,
    lora_alpha: float,
    factorization: Factorization = "paper",
    adapt_downsample: bool = False,
    vit_targets: Sequence[str] = VIT_TARGETS,
) -> dict[str, list[str]]:
    """Replace the adapted layers in place; returns ``stage -> names of adapted layers``."""
    unknown = set(vit_targets) - set(VIT_TARGETS)
    if unknown:
        raise ConfigError(f"method.vit_targets has unknown entries {sorted(unknown)}; choose from {list(VIT_TARGETS)}")
    adapted: dict[str, list[str]] = {}
    taken: set[str] = set()
    for stage in stages:
        names = [n for n in _targets(backbone, stage, adapt_downsample, vit_targets) if n not in taken]
        if not names:
            raise ConfigError(f"MoLA stage {stage!r} has no layer to adapt (overlapping or empty stage)")
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = backbone.get_submodule(parent_name) if parent_name else backbone
            base = getattr(parent, child)
            if isinstance(base, nn.Conv2d):
                layer: nn.Module = MoLAConv2d(base, experts, ranks[stage], lora_alpha, routings[stage], factorization)
            else:
                layer = MoLALinear(base, experts, ranks[stage], lora_alpha, routings[stage])
            setattr(parent, child, layer)
        taken.update(names)
        adapted[stage] = names
    return adapted
