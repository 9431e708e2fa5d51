"""Feature extractors by name.

Every backbone is an :class:`~molabench.models.encoder.Encoder` (the contract: pooled ``forward``,
``out_dim``, ``has_feature_maps`` and the per-stage API). ResNets keep torchvision's module names
(``conv1``, ``layer1`` .. ``layer4``) so that adapters can be injected by stage, and implement the
per-stage API for dense heads and stage-wise architectures (Cross-Stitch, MTAN, LTB, FPN-like heads)::

    forward_stem(x)            conv1 -> bn1 -> relu -> maxpool
    forward_stage(name, x)     one of stage_names = ["layer1", "layer2", "layer3", "layer4"]
    forward_stage_body(name, x)  the stage's blocks except the last (MTAN's u_i; identity if it has one block)
    forward_stage_last(name, x)  the stage's last block (MTAN's p_i = last(body(x)) = forward_stage(name, x))
    stage_blocks(name)         the stage's residual blocks (an ``nn.Sequential``)
    block_type, block_expansion  the residual block class (torchvision BasicBlock | Bottleneck) and its
                               expansion (1 | 4): stage i has (64, 128, 256, 512)[i] * expansion channels
    forward_stages(x)          [layer1 out, layer2 out, layer3 out, layer4 out]
    forward_features(x)        layer4 out, the final map (B, D, H / output_stride, W / output_stride)
    forward(x)                 flatten(adaptive_avg_pool(forward_features(x), 1))   -> (B, D)
    feature_info               [{"module": "layer1", "num_chs": 64|256, "reduction": 4}, ...]

``small_input=True`` swaps the 7x7/stride-2 stem and max-pool for a 3x3 stride-1 stem, the usual
choice for 28x28 or 32x32 inputs (stem reduction 1 instead of 4).

Dilated variants (``resnet18_dilated``, ``resnet50_dilated``) follow torchvision's
``replace_stride_with_dilation=[False, True, True]``: layer3 and layer4 keep their resolution
(output stride 8) and their 3x3 convs are dilated instead (layer3: block 1 dilation 1, later
blocks 2; layer4: block 1 dilation 2, later blocks 4; padding = dilation).

Pretrained weights are optional: ``pretrained`` is ``None``, a path to a local state dict, or
``"hub"`` (torchvision/timm download; needs a network).

Builders take only the keywords they declare; :func:`build_backbone` turns any other key into a
one-line :class:`ConfigError` naming ``backbone.<key>`` and the accepted keys.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from molabench.errors import ConfigError
from molabench.models.encoder import Encoder
from molabench.registry import Registry

BACKBONES: Registry[Encoder] = Registry("backbone")

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


def _pair_first(value: int | tuple[int, ...]) -> int:
    return int(value[0]) if isinstance(value, tuple) else int(value)


def _stage_stride(stage: nn.Module) -> int:
    """Stride of a ResNet stage: the product of the main-path conv strides of each block."""
    stride = 1
    for block in stage.children():
        for name, module in block.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("downsample"):
                stride *= _pair_first(module.stride)
    return stride


def _stem_stride(conv1: nn.Module, maxpool: nn.Module) -> int:
    stride = _pair_first(conv1.stride)
    if isinstance(maxpool, nn.MaxPool2d):
        stride *= _pair_first(maxpool.stride)
    return stride


def dilate_resnet(net: nn.Module, replace_stride_with_dilation: Sequence[bool] = (False, True, True)) -> nn.Module:
    """Turn the strides of ``layer2``/``layer3``/``layer4`` into dilation, in place.

    Torchvision's scheme (``ResNet._make_layer``), written for any block type: with a running
    dilation ``d`` (1 at layer1), for each of layer2..layer4 with stride ``s`` whose flag is set,
    every strided conv of the stage (the strided 3x3 conv and the 1x1 ``downsample`` conv) gets
    stride 1 and ``d <- d * s``. Block 1 of a stage keeps the dilation in force *before* the
    stage, later blocks use the new ``d``; every 3x3 conv of the main path gets
    ``dilation = padding = d`` (k x k convs: padding = d * (k - 1) / 2). No parameter changes,
    so weights (and the random initialisation) are those of the plain network.

    Applied to a plain torchvision ``resnet50`` it reproduces
    ``resnet50(replace_stride_with_dilation=[False, True, True])`` conv by conv; applied to a
    ``resnet18`` (whose ``BasicBlock`` torchvision refuses to dilate) it gives ``resnet18_dilated``.
    """
    flags = list(replace_stride_with_dilation)
    if len(flags) != 3:
        raise ConfigError(f"replace_stride_with_dilation needs 3 flags (layer2, layer3, layer4), got {flags}")
    dilation = 1
    for stage_name, dilate in zip(STAGE_NAMES[1:], flags, strict=True):
        stage = getattr(net, stage_name)
        stride = _stage_stride(stage)
        previous = dilation
        if dilate:
            dilation *= stride
            for module in stage.modules():
                if isinstance(module, nn.Conv2d) and _pair_first(module.stride) > 1:
                    module.stride = (1, 1)
        for index, block in enumerate(stage.children()):
            d = previous if index == 0 else dilation
            for name, module in block.named_modules():
                if isinstance(module, nn.Conv2d) and not name.startswith("downsample") and module.kernel_size[0] > 1:
                    module.dilation = (d, d)
                    module.padding = (d * (module.kernel_size[0] - 1) // 2, d * (module.kernel_size[1] - 1) // 2)
    return net


class ResNetFeatures(Encoder):
    """A torchvision ResNet without its classifier.

    ``forward`` returns pooled features (B, D); the per-stage API (module docstring) returns
    maps. ``feature_info[i]["reduction"]`` is the stride of stage ``i``'s output relative to the
    input (stem stride x the strides of stages 1..i); ``output_stride`` that of layer4.
    """

    has_feature_maps = True

    def __init__(self, net: nn.Module, in_channels: int, small_input: bool, name: str = "resnet") -> None:
        super().__init__(net.fc.in_features, name)
        if small_input:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_names = list(STAGE_NAMES)
        reduction = _stem_stride(self.conv1, self.maxpool)
        info = []
        for name in self.stage_names:
            stage = getattr(self, name)
            reduction *= _stage_stride(stage)
            channels = [m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d)][-1]
            info.append({"module": name, "num_chs": int(channels), "reduction": reduction})
        self.feature_info = info
        self.output_stride = reduction

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``maxpool(relu(bn1(conv1(x))))``: (B, 64, H / s, W / s), s = 4 (1 with ``small_input``)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``name`` (one of ``stage_names``) on the previous stage's (or the stem's) output."""
        return self.stage_blocks(name)(x)

    def stage_blocks(self, name: str) -> nn.Sequential:
        """The residual blocks of stage ``name`` (one of ``stage_names``), in order."""
        if name not in self.stage_names:
            raise ConfigError(f"ResNet stage {name!r} unknown; choose from {', '.join(self.stage_names)}")
        return getattr(self, name)

    def forward_stage_body(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Every block of stage ``name`` but the last (the identity for a one-block stage)."""
        blocks = self.stage_blocks(name)
        for block in list(blocks)[:-1]:
            x = block(x)
        return x

    def forward_stage_last(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The last block of stage ``name``: ``forward_stage_last(n, forward_stage_body(n, x)) == forward_stage(n, x)``."""
        return self.stage_blocks(name)[-1](x)

    @property
    def block_type(self) -> type[nn.Module]:
        """The residual block class of the stages (torchvision ``BasicBlock`` or ``Bottleneck``)."""
        return type(self.layer1[0])

    @property
    def block_expansion(self) -> int:
        """Output channels of a block per ``planes`` (1 for ``BasicBlock``, 4 for ``Bottleneck``)."""
        return int(getattr(self.block_type, "expansion", 1))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs, shapes ``(B, num_chs_i, H / reduction_i, W / reduction_i)``."""
        x = self.forward_stem(x)
        outputs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final map (B, ``out_dim``, H / ``output_stride``, W / ``output_stride``)."""
        x = self.forward_stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1)


def _load_local(module: nn.Module, path: str) -> None:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"pretrained weights file {str(file)!r} not found; set backbone.pretrained=null or a valid path"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about a damaged file's "pickle protocol" before it fails
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (and multi-line, multi-sentence messages) for a damaged file
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        reason = first.split(". ")[0][:200] or type(exc).__name__
        raise ConfigError(
            f"pretrained weights file {str(file)!r} does not load as a torch state dict ({reason}); "
            "set backbone.pretrained to a state dict saved with torch.save, or null"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ConfigError(
            f"pretrained weights file {str(file)!r} holds a {type(state).__name__}, not a state dict; "
            "save model.state_dict() with torch.save, or set backbone.pretrained=null"
        )
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"no tensor of {str(file)!r} matches backbone parameters; is it the right architecture?")
    module.load_state_dict(usable, strict=False)


def _torchvision_resnet(
    name: str,
    in_channels: int,
    small_input: bool,
    pretrained: str | None,
    dilation: str | None = None,
) -> ResNetFeatures:
    """``dilation``: None (plain), ``"torchvision"`` (torchvision's own flag; Bottleneck nets) or
    ``"convert"`` (:func:`dilate_resnet` after construction; any block type)."""
    import torchvision

    weights = "DEFAULT" if pretrained == "hub" else None
    extra = {"replace_stride_with_dilation": [False, True, True]} if dilation == "torchvision" else {}
    net = getattr(torchvision.models, name)(weights=weights, **extra)
    if dilation == "convert":
        dilate_resnet(net, (False, True, True))
    features = ResNetFeatures(net, in_channels, small_input, name + ("_dilated" if dilation else ""))
    if pretrained not in (None, "hub"):
        _load_local(features, pretrained)
    return features


@BACKBONES.register("resnet18")
def resnet18(in_channels: int = 3, small_input: bool = False, pretrained: str | None = None) -> Encoder:
    """ResNet-18 (11.18 M parameters without fc), output stride 32 (8 with ``small_input``)."""
    return _torchvision_resnet("resnet18", in_channels, small_input, pretrained)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int = 3, small_input: bool = False, pretrained: str | None = None) -> Encoder:
    """ResNet-50 (23.51 M parameters without fc), output stride 32 (8 with ``small_input``)."""
    return _torchvision_resnet("resnet50", in_channels, small_input, pretrained)


@BACKBONES.register("resnet18_dilated")
def resnet18_dilated(in_channels: int = 3, small_input: bool = False, pretrained: str | None = None) -> Encoder:
    """ResNet-18 with layer3/layer4 dilated (:func:`dilate_resnet`): output stride 8 (2 with
    ``small_input``); same parameters as ``resnet18``."""
    return _torchvision_resnet("resnet18", in_channels, small_input, pretrained, dilation="convert")


@BACKBONES.register("resnet50_dilated")
def resnet50_dilated(in_channels: int = 3, small_input: bool = False, pretrained: str | None = None) -> Encoder:
    """Torchvision ``resnet50(replace_stride_with_dilation=[False, True, True])``: output stride 8
    (2 with ``small_input``), 23,508,032 parameters without fc (the NYUv2 encoder of dense.md)."""
    return _torchvision_resnet("resnet50", in_channels, small_input, pretrained, dilation="torchvision")


class TimmFeatures(Encoder):
    """A timm model with its classifier removed (``num_classes=0``): pooled features only, no
    stages (the :class:`Encoder` defaults raise on every map method)."""

    def __init__(self, net: nn.Module, name: str = "vit") -> None:
        super().__init__(net.num_features, name)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@BACKBONES.register("vit_tiny")
def vit_tiny(
    in_channels: int = 3,
    image_size: int = 224,
    patch_size: int | None = None,
    pretrained: str | None = None,
) -> Encoder:
    """ViT-Tiny (192-d, 12 blocks, 3 heads). Patch 16 at 224px; patch size defaults to image_size // 7."""
    import timm

    patch = patch_size or max(2, image_size // 7 if image_size < 224 else 16)
    if isinstance(patch, bool) or not isinstance(patch, int) or not 1 <= patch <= image_size:
        raise ConfigError(
            f"backbone.patch_size must be an integer from 1 to the image size ({image_size}, data.image_size), got {patch!r}; "
            "set it smaller or null (image_size // 7)"
        )
    net = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=pretrained == "hub",
        num_classes=0,
        img_size=image_size,
        patch_size=patch,
        in_chans=in_channels,
    )
    features = TimmFeatures(net, "vit_tiny")
    if pretrained not in (None, "hub"):
        _load_local(features.net, pretrained)
    return features


def build_backbone(name: str, **kwargs: object) -> Encoder:
    """The backbone ``name`` built with ``kwargs``; a key its builder does not declare raises a
    one-line :class:`ConfigError` (``backbone=<name> does not take backbone.<key>; it accepts: ...``)."""
    builder = BACKBONES.get(name)
    signature = inspect.signature(builder)
    try:
        signature.bind(**kwargs)
    except TypeError:
        accepted = [p for p in signature.parameters if p not in ("args", "kwargs")]
        unknown = sorted(set(kwargs) - set(accepted))
        raise ConfigError(
            f"backbone={name} does not take {', '.join(f'backbone.{k}' for k in unknown) or 'these keys'}; "
            f"it accepts: {', '.join(accepted)}"
        ) from None
    return builder(**kwargs)
