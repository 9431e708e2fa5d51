"""Feature extractors by name.

A backbone maps images (B, C, H, W) to features (B, D) and exposes ``out_dim``. ResNets keep
torchvision's module names (``conv1``, ``layer1`` .. ``layer4``) so that adapters can be
injected by stage. ``small_input=True`` swaps the 7x7/stride-2 stem and max-pool for a 3x3
stride-1 stem, the usual choice for 28x28 or 32x32 inputs.

Pretrained weights are optional: ``pretrained`` is ``None``, a path to a local state dict, or
``"hub"`` (torchvision/timm download; needs a network).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from molabench.errors import ConfigError
from molabench.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its classifier: returns pooled features (B, D)."""

    def __init__(self, net: nn.Module, in_channels: int, small_input: bool) -> None:
        super().__init__()
        if small_input:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_dim: int = net.fc.in_features
        self.stages = ["layer1", "layer2", "layer3", "layer4"]

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.feature_maps(x), 1), 1)


def _load_local(module: nn.Module, path: str) -> None:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"pretrained weights file {str(file)!r} not found; set backbone.pretrained=null or a valid path")
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"no tensor of {str(file)!r} matches backbone parameters; is it the right architecture?")
    module.load_state_dict(usable, strict=False)


def _torchvision_resnet(name: str, in_channels: int, small_input: bool, pretrained: str | None) -> nn.Module:
    import torchvision

    weights = "DEFAULT" if pretrained == "hub" else None
    net = getattr(torchvision.models, name)(weights=weights)
    features = ResNetFeatures(net, in_channels, small_input)
    if pretrained not in (None, "hub"):
        _load_local(features, pretrained)
    return features


@BACKBONES.register("resnet18")
def resnet18(in_channels: int = 3, small_input: bool = False, pretrained: str | None = None, **_: object) -> nn.Module:
    return _torchvision_resnet("resnet18", in_channels, small_input, pretrained)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int = 3, small_input: bool = False, pretrained: str | None = None, **_: object) -> nn.Module:
    return _torchvision_resnet("resnet50", in_channels, small_input, pretrained)


class TimmFeatures(nn.Module):
    """A timm model with its classifier removed (``num_classes=0``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.out_dim: int = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@BACKBONES.register("vit_tiny")
def vit_tiny(
    in_channels: int = 3,
    image_size: int = 224,
    patch_size: int | None = None,
    pretrained: str | None = None,
    **_: object,
) -> nn.Module:
    """ViT-Tiny (192-d, 12 blocks, 3 heads). Patch 16 at 224px; patch size defaults to image_size // 7."""
    import timm

    patch = patch_size or max(2, image_size // 7 if image_size < 224 else 16)
    net = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=pretrained == "hub",
        num_classes=0,
        img_size=image_size,
        patch_size=patch,
        in_chans=in_channels,
    )
    features = TimmFeatures(net)
    if pretrained not in (None, "hub"):
        _load_local(features.net, pretrained)
    return features


def build_backbone(name: str, **kwargs: object) -> nn.Module:
    return BACKBONES.build(name, **kwargs)
