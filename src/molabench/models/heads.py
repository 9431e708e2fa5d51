"""Task heads: one small module per task on top of the shared representation.

``make_head(spec, encoder, cfg)`` builds the head of task ``spec`` for the backbone ``encoder``
(read: ``out_dim``, ``output_stride``, ``has_feature_maps``):

- classification on pooled features (B, D): exactly ``nn.Linear(D, num_classes)``;
- classification on a map (B, D, h, w) (an architecture feeds maps because another task is
  dense): global average pool + flatten + the same linear layer (:class:`PooledLinear`);
- dense kinds (segmentation, depth, normal): a context head chosen by ``cfg["name"]`` on the map,
  then upsampling to the input size (h * output_stride, w * output_stride), then the kind's output
  activation (:class:`DenseHead`):

  ``psp`` (default; the authors' pyramid-pooling decoder), with c = ``channels`` (default D // |bins|: 512 for D = 2048)::

      for b in bins (1, 2, 3, 6):  P_b = up_bilinear(ReLU(BN(conv1x1_{D->c}(adaptive_avg_pool_b(x)))))
      y = conv1x1_{c->C}(ReLU(BN(conv3x3_{D + |bins| c -> c}([x, P_1, ..., P_6]))))      (bias only in the last)
      parameters: |bins| (D c + 2c) + 9 c (D + |bins| c) + 2c + (c + 1) C
                  = 23,073,792 + 513 C for D = 2048 and the defaults

  ``aspp`` (LibMTL's DeepLabV3 head), with c = ``channels`` (256), rates (12, 24, 36)::

      branches: conv1x1_{D->c}; conv3x3_{D->c} dilation r for each rate; image pool
                (global avg pool, conv1x1_{D->c}, bilinear back); each + BN + ReLU, no bias
      y = conv1x1_{c->C}(ReLU(BN(conv3x3_{c->c}(Dropout(ReLU(BN(conv1x1_{5c->c}([branches]))))))))
      parameters: 2 D c + 9 D c |rates| + (|rates| + 2) c^2 + 9 c^2 + 2c (|rates| + 4) + (c + 1) C
                  = 16,125,440 + 257 C for D = 2048 and the defaults

Head configuration (the ``head`` config group; it applies to dense tasks only, classification
tasks always get a linear head): ``name`` (psp | aspp) and the keys of :data:`HEAD_DEFAULTS`.
Upsampling ``nearest`` (psp default, the authors') equals ``interpolate(scale_factor=stride)``;
``bilinear`` (aspp default, LibMTL's) uses ``align_corners=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder

Features = Literal["pooled", "map"]

#: every head's keys and defaults (a ``head`` config may give any subset; ``name`` defaults to psp)
HEAD_DEFAULTS: dict[str, dict[str, Any]] = {
    # channels None: in_channels // len(bins) — 512 on a 2048-channel map (the authors'), 128 on ResNet-18's 512
    "psp": {"channels": None, "bins": [1, 2, 3, 6], "upsample": "nearest", "activation": True},
    "aspp": {"channels": 256, "rates": [12, 24, 36], "dropout": 0.5, "upsample": "bilinear", "activation": False},
}
UPSAMPLE_MODES = ("nearest", "bilinear")


class PooledLinear(nn.Linear):
    """A linear classifier that also accepts a map: (B, D, h, w) -> mean over (h, w) -> linear.

    Same parameters (and initialisation) as ``nn.Linear``; (B, D) inputs pass straight through.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return super().forward(x)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PSPContext(nn.Module):
    """Pyramid pooling + fusion + classifier (formula in the module docstring); output at map size."""

    def __init__(
        self, in_channels: int, out_channels: int, channels: int = 512, bins: Sequence[int] = (1, 2, 3, 6)
    ) -> None:
        super().__init__()
        self.bins = [int(b) for b in bins]
        self.pools = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), *_conv_bn_relu(in_channels, channels)) for b in self.bins
        )
        self.fuse = _conv_bn_relu(in_channels + len(self.bins) * channels, channels, kernel=3)
        self.classifier = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pyramid = [F.interpolate(pool(x), size=size, mode="bilinear", align_corners=False) for pool in self.pools]
        return self.classifier(self.fuse(torch.cat([x, *pyramid], dim=1)))


class ASPPContext(nn.Module):
    """Atrous spatial pyramid pooling + projection + tail + classifier (module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 256,
        rates: Sequence[int] = (12, 24, 36),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.rates = [int(r) for r in rates]
        branches = [_conv_bn_relu(in_channels, channels)]
        branches += [_conv_bn_relu(in_channels, channels, kernel=3, dilation=r) for r in self.rates]
        self.branches = nn.ModuleList(branches)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, channels))
        self.project = nn.Sequential(*_conv_bn_relu((len(self.rates) + 2) * channels, channels), nn.Dropout(dropout))
        self.tail = _conv_bn_relu(channels, channels, kernel=3)
        self.classifier = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        outs = [branch(x) for branch in self.branches]
        outs.append(F.interpolate(self.image_pool(x), size=size, mode="bilinear", align_corners=False))
        return self.classifier(self.tail(self.project(torch.cat(outs, dim=1))))


class DenseHead(nn.Module):
    """``activation(upsample(context(x)))``: (B, D, h, w) -> (B, C, h * stride, w * stride).

    ``upsample``: ``nearest`` or ``bilinear`` (``align_corners=True``); skipped for stride 1.
    ``activation``: a per-pixel function of the (B, C, H, W) output (the task kind's), or None.
    """

    def __init__(self, context: nn.Module, stride: int, upsample: str, activation: Any = None) -> None:
        super().__init__()
        self.context = context
        self.stride = int(stride)
        self.upsample = upsample
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        y = self.context(x)
        if self.stride != 1:
            size = (x.shape[-2] * self.stride, x.shape[-1] * self.stride)
            if self.upsample == "nearest":
                y = F.interpolate(y, size=size, mode="nearest")
            else:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=True)
        return y if self.activation is None else self.activation(y)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, upsample={self.upsample!r}, activation={self.activation is not None}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(name: str, key: str, value: object) -> list[int]:
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if not items or not all(_is_int(v) and v >= 1 for v in items):
        raise ConfigError(f"head.{key} must be a non-empty list of positive integers for head={name}, got {value!r}")
    return [int(v) for v in items]


def head_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The validated, completed head configuration (defaults filled in); one-line ConfigError otherwise."""
    given = dict(cfg or {})
    name = given.pop("name", None) or "psp"
    if name not in HEAD_DEFAULTS:
        raise ConfigError(f"unknown head {name!r}; choose one of: {', '.join(HEAD_DEFAULTS)}")
    defaults = HEAD_DEFAULTS[name]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"head={name} does not take {', '.join(f'head.{k}' for k in unknown)}; it accepts: name, {', '.join(defaults)}"
        )
    out = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if out["channels"] is None and name == "psp":
        pass  # sized from the encoder in make_head
    elif not _is_int(out["channels"]) or out["channels"] < 1:
        raise ConfigError(f"head.channels must be a positive integer, got {out['channels']!r}")
    for key in ("bins", "rates"):
        if key in out:
            out[key] = _int_list(name, key, out[key])
    if out["upsample"] not in UPSAMPLE_MODES:
        raise ConfigError(f"head.upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {out['upsample']!r}")
    if not isinstance(out["activation"], bool):
        raise ConfigError(f"head.activation must be true or false, got {out['activation']!r}")
    if "dropout" in out:
        dropout = out["dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ConfigError(f"head.dropout must be a probability in [0, 1), got {dropout!r}")
        out["dropout"] = float(dropout)
    return {"name": name, **out}


def features_for(tasks: Sequence[TaskSpec]) -> Features:
    """``"map"`` when any task's kind is dense (its head needs the feature map), else ``"pooled"``."""
    from molabench.tasks import kind_of

    return "map" if any(kind_of(spec).dense for spec in tasks) else "pooled"


def make_head(
    spec: TaskSpec,
    encoder: Encoder | int,
    cfg: Mapping[str, Any] | None = None,
    features: Features | None = None,
) -> nn.Module:
    """The head of task ``spec`` on top of ``encoder`` (a backbone module; an int is read as the
    ``out_dim`` of a backbone giving pooled features only, the older call).

    ``cfg``: the ``head`` config (None = psp defaults), used by dense tasks only but validated
    always. ``features``: what the architecture feeds the head, ``"pooled"`` (B, D) or ``"map"``
    (B, D, h, w); None = what the task needs (``"map"`` for dense kinds, else ``"pooled"``); use
    :func:`features_for` to pick one for all tasks.
    """
    from molabench.tasks import kind_of

    config = head_config(cfg)
    kind = kind_of(spec)
    if isinstance(encoder, int):
        out_dim, stride, has_maps, label = encoder, None, False, "this backbone"
    else:
        out_dim = int(encoder.out_dim)
        stride = encoder.output_stride
        has_maps = encoder.has_feature_maps
        label = f"backbone {encoder.backbone_name}"
    features = features or ("map" if kind.dense else "pooled")
    if features not in ("pooled", "map"):
        raise ConfigError(f"head features must be 'pooled' or 'map', got {features!r}")
    out_channels = kind.out_channels(spec)
    if not kind.dense:
        return PooledLinear(out_dim, out_channels) if features == "map" else nn.Linear(out_dim, out_channels)
    if not has_maps or stride is None:
        raise ConfigError(
            f"task {spec.name!r} ({spec.kind}) needs a spatial feature map, which {label} does not give; "
            "use a ResNet backbone (e.g. backbone=resnet18_dilated)"
        )
    if features != "map":
        raise ConfigError(
            f"task {spec.name!r} ({spec.kind}) needs a feature map, but this architecture feeds pooled features"
        )
    if config["name"] == "psp":
        channels = config["channels"] or max(1, out_dim // len(config["bins"]))
        context: nn.Module = PSPContext(out_dim, out_channels, channels, config["bins"])
    else:
        context = ASPPContext(out_dim, out_channels, config["channels"], config["rates"], config["dropout"])
    activation = kind.activate if config["activation"] else None
    return DenseHead(context, stride, config["upsample"], activation)
