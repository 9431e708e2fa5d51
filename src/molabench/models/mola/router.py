"""Routers of MoLA-Router: image -> E logits; the mixing weights are their softmax (dense, no top-k).

Presets (``method.router``):

- ``authors``: the authors' router, a CIFAR-style ResNet-20 on the full input image: 3x3 stem with
  16 channels, three stages of three BasicBlocks (16/32/64 channels, strides 1/2/2), global
  average pooling, Linear(64 -> E). Paper Sec. 3.5: "we stack three residual blocks and a gate
  function to build a shared router".
- ``light``: a much cheaper router: the image average-pooled to at most 16x16, two stride-2 3x3
  convs (16, 32 channels) with BN/ReLU, global average pooling, Linear(32 -> E).

The router never sees the task id.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from molabench.errors import ConfigError

ROUTER_PRESETS = ("authors", "light")


def _stage(in_ch: int, out_ch: int, stride: int, blocks: int) -> nn.Sequential:
    down = None
    if stride != 1 or in_ch != out_ch:
        down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, stride, down)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet20Router(nn.Module):
    """CIFAR ResNet-20 (He et al., 2016, Sec. 4.2) ending in Linear(64 -> E)."""

    def __init__(self, in_channels: int, num_experts: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(_stage(16, 16, 1, 3), _stage(16, 32, 2, 3), _stage(32, 64, 2, 3))
        self.fc = nn.Linear(64, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stages(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class LightRouter(nn.Module):
    """Two strided convs on a <= 16x16 thumbnail of the image: a tiny fraction of the authors' cost."""

    def __init__(self, in_channels: int, num_experts: int, size: int = 16) -> None:
        super().__init__()
        self.size = size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(32, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        if max(x.shape[-2:]) > self.size:
            x = F.adaptive_avg_pool2d(x, self.size)
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def build_router(name: str, in_channels: int, num_experts: int) -> nn.Module:
    if name == "authors":
        return ResNet20Router(in_channels, num_experts)
    if name == "light":
        return LightRouter(in_channels, num_experts)
    raise ConfigError(f"unknown method.router {name!r}; choose one of {', '.join(ROUTER_PRESETS)}")
