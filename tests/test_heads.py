"""Task heads: linear classifiers, PSP / ASPP dense heads (structure, parameter counts, errors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from molabench.data.base import TaskSpec
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder
from molabench.models.heads import DenseHead, PooledLinear, features_for, head_config, make_head

SEG, DEPTH, NORMAL = (
    TaskSpec("seg", 13, kind="segmentation"),
    TaskSpec("depth", 0, kind="depth"),
    TaskSpec("normal", 0, kind="normal"),
)
CLS = TaskSpec("cls", 7)


class FakeEncoder(Encoder):
    """Just what make_head reads from a backbone."""

    def __init__(self, out_dim: int = 2048, output_stride: int = 8, has_feature_maps: bool = True) -> None:
        super().__init__(out_dim, "fake")
        self.output_stride, self.has_feature_maps = output_stride, has_feature_maps


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_classification_heads_are_linear():
    torch.manual_seed(0)
    head = make_head(CLS, FakeEncoder(512))
    assert type(head) is nn.Linear and (head.in_features, head.out_features) == (512, 7)
    torch.manual_seed(0)
    assert torch.equal(make_head(CLS, 512).weight, head.weight)  # the older call (an int out_dim)
    torch.manual_seed(0)
    on_map = make_head(CLS, FakeEncoder(512), features="map")
    assert isinstance(on_map, PooledLinear) and torch.equal(on_map.weight, head.weight)
    x = torch.randn(2, 512, 3, 4)
    assert torch.allclose(on_map(x), head(x.mean((2, 3))))
    assert torch.equal(on_map(x.mean((2, 3))), head(x.mean((2, 3))))


def test_features_for():
    assert features_for([CLS, CLS]) == "pooled"
    assert features_for([CLS, DEPTH]) == "map"


@pytest.mark.parametrize(("spec", "classes"), [(SEG, 13), (DEPTH, 1), (NORMAL, 3)])
def test_parameter_counts_match_dense_md(spec, classes):
    encoder = FakeEncoder(2048)
    assert _count(make_head(spec, encoder)) == 23_073_792 + 513 * classes
    assert _count(make_head(spec, encoder, {"name": "aspp"})) == 16_125_440 + 257 * classes


@pytest.mark.parametrize("name", ["psp", "aspp"])
@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_dense_heads_give_input_size_outputs_with_the_activation(name, upsample):
    torch.manual_seed(0)
    encoder = FakeEncoder(16, output_stride=8)
    cfg = {"name": name, "channels": 8, "upsample": upsample, "activation": True}
    x = torch.randn(2, 16, 3, 4)  # smaller than psp's 6 bins and than aspp's rates: still fine
    seg, depth, normal = (make_head(s, encoder, cfg) for s in (SEG, DEPTH, NORMAL))
    for head in (seg, depth, normal):
        assert isinstance(head, DenseHead)
        head.train()(x)  # batch statistics work on tiny maps
        head.eval()
    with torch.no_grad():
        s, d, n = seg(x), depth(x), normal(x)
    assert s.shape == (2, 13, 24, 32) and d.shape == (2, 1, 24, 32) and n.shape == (2, 3, 24, 32)
    assert torch.allclose(s.exp().sum(1), torch.ones(2, 24, 32), atol=1e-5)
    assert torch.allclose(n.norm(dim=1), torch.ones(2, 24, 32), atol=1e-5)


def test_nearest_upsampling_equals_scale_factor_and_activation_off():
    torch.manual_seed(0)
    head = make_head(SEG, FakeEncoder(16, output_stride=4), {"name": "psp", "channels": 8, "activation": False}).eval()
    x = torch.randn(1, 16, 5, 3)
    with torch.no_grad():
        raw = head.context(x)
        assert torch.equal(head(x), nn.functional.interpolate(raw, scale_factor=4))
    aspp = make_head(SEG, FakeEncoder(16, output_stride=1), {"name": "aspp", "channels": 8}).eval()
    with torch.no_grad():
        assert aspp(x).shape == (1, 13, 5, 3)
        assert not torch.allclose(aspp(x).exp().sum(1), torch.ones(1, 5, 3))  # aspp default: no activation


def test_aspp_defaults_and_structure():
    cfg = head_config({"name": "aspp"})
    assert cfg == {
        "name": "aspp",
        "channels": 256,
        "rates": [12, 24, 36],
        "dropout": 0.5,
        "upsample": "bilinear",
        "activation": False,
    }
    head = make_head(DEPTH, FakeEncoder(32), {"name": "aspp", "channels": 4})
    dilations = [m.dilation[0] for m in head.context.branches.modules() if isinstance(m, nn.Conv2d)]
    assert dilations == [1, 12, 24, 36] and head.activation is None
    assert head_config(None)["name"] == "psp" and head_config(None)["bins"] == [1, 2, 3, 6]


def test_head_configs_on_disk_are_the_defaults():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "configs" / "head"
    for name in ("psp", "aspp"):
        on_disk = yaml.safe_load((root / f"{name}.yaml").read_text())
        assert head_config(on_disk) == head_config({"name": name}) == on_disk


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "fpn"}, "unknown head 'fpn'"),
        ({"name": "psp", "rates": [1]}, r"head=psp does not take head\.rates; it accepts: name, channels, bins"),
        ({"name": "aspp", "chanels": 8}, r"head=aspp does not take head\.chanels"),
        ({"channels": 0}, "head.channels must be a positive integer"),
        ({"bins": []}, "head.bins must be a non-empty list"),
        ({"name": "aspp", "rates": []}, "head.rates must be a non-empty list"),
        ({"upsample": "bicubic"}, "head.upsample must be one of"),
        ({"activation": "yes"}, "head.activation must be true or false"),
        ({"name": "aspp", "dropout": 1.5}, "head.dropout must be a probability"),
    ],
)
def test_bad_head_configs(cfg, message):
    with pytest.raises(ConfigError, match=message) as err:
        make_head(SEG, FakeEncoder(16), cfg)
    assert "\n" not in str(err.value)


def test_dense_task_needs_feature_maps():
    with pytest.raises(ConfigError, match="needs a spatial feature map") as err:
        make_head(DEPTH, FakeEncoder(192, has_feature_maps=False))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="needs a spatial feature map"):
        make_head(DEPTH, 512)
    with pytest.raises(ConfigError, match="feeds pooled features"):
        make_head(DEPTH, FakeEncoder(16), features="pooled")


def test_heads_on_real_backbones():
    from molabench.models.backbones import build_backbone

    torch.manual_seed(0)
    encoder = build_backbone("resnet18_dilated").eval()
    head = make_head(NORMAL, encoder, {"name": "psp", "channels": 8}).eval()
    with torch.no_grad():
        assert head(encoder.forward_features(torch.randn(1, 3, 32, 48))).shape == (1, 3, 32, 48)
    with pytest.raises(ConfigError, match="backbone vit_tiny"):
        make_head(SEG, build_backbone("vit_tiny", image_size=16, patch_size=8))
