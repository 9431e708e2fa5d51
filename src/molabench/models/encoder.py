"""``Encoder``: the backbone contract that every architecture and head relies on.

A backbone maps images (B, C, H, W) to pooled features (B, ``out_dim``) with ``forward``. When
``has_feature_maps`` it also exposes the timm-like per-stage API that dense heads and stage-wise
architectures (Cross-Stitch, MTAN, LTB, PLE) need::

    stage_names                ["layer1", ..., "layer4"] (empty without maps)
    output_stride              input size / final map size (None without maps)
    feature_info               [{"module": name, "num_chs": C_i, "reduction": r_i}, ...]
    forward_stem(x)            the input to the first stage
    forward_stage(name, x)     one stage on the previous stage's output
    forward_stage_body(name, x), forward_stage_last(name, x)
                               a stage split before its last block (MTAN): last(body(x)) = stage(x)
    stage_blocks(name)         the stage's blocks (an ``nn.Sequential``)
    forward_stages(x)          every stage's output, in order
    forward_features(x)        the final map (B, out_dim, H / output_stride, W / output_stride)

Every attribute is declared here, so callers read ``encoder.has_feature_maps`` and friends
directly; the map methods of an encoder without maps (ViT) raise one :class:`ConfigError`
that says which backbone to pick instead.
"""

from __future__ import annotations

import torch
from torch import nn

from molabench.errors import ConfigError


class Encoder(nn.Module):
    """Base of every backbone: pooled ``forward`` always, the per-stage API when ``has_feature_maps``."""

    has_feature_maps: bool = False

    def __init__(self, out_dim: int, backbone_name: str) -> None:
        super().__init__()
        self.out_dim: int = int(out_dim)
        self.backbone_name: str = backbone_name
        self.stage_names: list[str] = []
        self.output_stride: int | None = None
        self.feature_info: list[dict[str, int | str]] = []

    def _no_maps(self) -> ConfigError:
        return ConfigError(
            f"backbone {self.backbone_name} has no spatial feature maps: dense tasks and stage-wise architectures "
            "need a ResNet backbone (e.g. backbone=resnet18_dilated)"
        )

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise self._no_maps()

    def forward_stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        raise self._no_maps()

    def stage_blocks(self, name: str) -> nn.Sequential:
        raise self._no_maps()

    def forward_stage_body(self, name: str, x: torch.Tensor) -> torch.Tensor:
        raise self._no_maps()

    def forward_stage_last(self, name: str, x: torch.Tensor) -> torch.Tensor:
        raise self._no_maps()

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise self._no_maps()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise self._no_maps()
