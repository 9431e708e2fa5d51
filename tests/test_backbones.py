import pytest
import torch

from molabench.errors import ConfigError
from molabench.models.backbones import BACKBONES, build_backbone


@pytest.mark.parametrize(
    ("name", "kwargs", "dim"),
    [
        ("resnet18", {}, 512),
        ("resnet18", {"small_input": True}, 512),
        ("resnet18", {"in_channels": 1}, 512),
        ("resnet50", {"small_input": True}, 2048),
        ("vit_tiny", {"image_size": 28}, 192),
    ],
)
def test_backbones_by_name_produce_features(name, kwargs, dim):
    torch.manual_seed(0)
    net = build_backbone(name, **kwargs).eval()
    x = torch.randn(2, kwargs.get("in_channels", 3), 28, 28)
    with torch.no_grad():
        assert net(x).shape == (2, dim) and net.out_dim == dim


def test_small_input_stem_keeps_the_resolution():
    net = build_backbone("resnet18", small_input=True)
    assert net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)


def test_pretrained_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    source = build_backbone("resnet18")
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = build_backbone("resnet18", pretrained=str(path))
    assert torch.equal(loaded.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("resnet18", pretrained=str(tmp_path / "missing.pth"))
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="no tensor"):
        build_backbone("resnet18", pretrained=str(tmp_path / "other.pth"))


def test_every_registered_backbone_has_a_config():
    from pathlib import Path

    configs = {p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "backbone").glob("*.yaml")}
    assert set(BACKBONES.names()) <= configs


# ------------------------------------------------------------------ per-stage API, dilation


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "chs", "reductions"),
    [
        ("resnet18", {}, [64, 128, 256, 512], [4, 8, 16, 32]),
        ("resnet18", {"small_input": True}, [64, 128, 256, 512], [1, 2, 4, 8]),
        ("resnet18_dilated", {}, [64, 128, 256, 512], [4, 8, 8, 8]),
    ],
)
def test_stages_shapes_and_feature_info(name, kwargs, chs, reductions):
    torch.manual_seed(0)
    net = build_backbone(name, **kwargs).eval()
    assert net.has_feature_maps and net.stage_names == ["layer1", "layer2", "layer3", "layer4"]
    assert [i["module"] for i in net.feature_info] == net.stage_names
    assert [i["num_chs"] for i in net.feature_info] == chs
    assert [i["reduction"] for i in net.feature_info] == reductions
    assert net.output_stride == reductions[-1] and net.out_dim == chs[-1]
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        stages = net.forward_stages(x)
        assert [tuple(s.shape) for s in stages] == [
            (2, c, 32 // r, 64 // r) for c, r in zip(chs, reductions, strict=True)
        ]
        features = net.forward_features(x)
        assert torch.equal(features, stages[-1])
        step = net.forward_stem(x)
        for stage in net.stage_names:
            step = net.forward_stage(stage, step)
        assert torch.equal(step, features)
        # forward is pool(forward_features), bit for bit
        assert torch.equal(net(x), torch.flatten(torch.nn.functional.adaptive_avg_pool2d(features, 1), 1))
    with pytest.raises(ConfigError, match="stage 'layer5'"):
        net.forward_stage("layer5", x)


def test_forward_unchanged_for_a_fixed_seed():
    """The pooled forward and the parameters are those of the torchvision net (construction order kept)."""
    import torchvision

    torch.manual_seed(0)
    net = build_backbone("resnet18").eval()
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    reference.fc = torch.nn.Identity()
    own = net.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in reference.state_dict().items() if not k.startswith("fc"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


def test_resnet50_dilated_is_torchvisions_with_output_stride_8():
    torch.manual_seed(0)
    net = build_backbone("resnet50_dilated").eval()
    assert _count(net) == 23_508_032
    assert net.output_stride == 8 and net.out_dim == 2048
    assert [i["reduction"] for i in net.feature_info] == [4, 8, 8, 8]
    assert [i["num_chs"] for i in net.feature_info] == [256, 512, 1024, 2048]
    with torch.no_grad():
        assert net.forward_features(torch.randn(2, 3, 64, 96)).shape == (2, 2048, 8, 12)


def test_dilation_conversion_reproduces_torchvision():
    """dilate_resnet on a plain resnet50 == torchvision's replace_stride_with_dilation, conv by conv;
    this validates the same conversion applied to resnet18 (whose BasicBlock torchvision won't dilate)."""
    import torchvision

    from molabench.models.backbones import dilate_resnet

    converted = dilate_resnet(torchvision.models.resnet50(), (False, True, True))
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    ours = {n: m for n, m in converted.named_modules() if isinstance(m, torch.nn.Conv2d)}
    theirs = {n: m for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert ours.keys() == theirs.keys() and len(ours) == 53
    for name, conv in theirs.items():
        got = ours[name]
        assert (tuple(got.stride), tuple(got.dilation), tuple(got.padding)) == (
            tuple(conv.stride),
            tuple(conv.dilation),
            tuple(conv.padding),
        ), name
    assert any(tuple(c.dilation) == (4, 4) for c in theirs.values())


def test_resnet18_dilated_dilations_and_parameters():
    torch.manual_seed(0)
    net = build_backbone("resnet18_dilated")
    assert _count(net) == _count(build_backbone("resnet18"))
    dil = {
        n: (m.stride[0], m.dilation[0], m.padding[0]) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)
    }
    assert dil["layer3.0.conv1"] == (1, 1, 1) and dil["layer3.0.conv2"] == (1, 1, 1)
    assert dil["layer3.0.downsample.0"] == (1, 1, 0)
    assert dil["layer3.1.conv1"] == (1, 2, 2) and dil["layer3.1.conv2"] == (1, 2, 2)
    assert dil["layer4.0.conv1"] == (1, 2, 2) and dil["layer4.0.downsample.0"] == (1, 1, 0)
    assert dil["layer4.1.conv2"] == (1, 4, 4)
    assert dil["layer2.0.conv1"] == (2, 1, 1)
    small = build_backbone("resnet18_dilated", small_input=True, in_channels=1)
    assert small.output_stride == 2 and small.conv1.in_channels == 1


def test_unknown_backbone_keys_are_rejected():
    with pytest.raises(
        ConfigError, match=r"backbone=resnet18 does not take backbone\.image_size; it accepts: in_channels"
    ):
        build_backbone("resnet18", image_size=28)
    with pytest.raises(ConfigError, match=r"backbone\.smal_input"):
        build_backbone("resnet50_dilated", smal_input=True)
    with pytest.raises(ConfigError, match=r"backbone=vit_tiny does not take backbone\.small_input"):
        build_backbone("vit_tiny", small_input=True)


def test_vit_has_no_feature_maps():
    net = build_backbone("vit_tiny", image_size=16, patch_size=8)
    assert net.has_feature_maps is False
    x = torch.randn(1, 3, 16, 16)
    for call in (net.forward_features, net.forward_stem, net.forward_stages, lambda t: net.forward_stage("layer1", t)):
        with pytest.raises(ConfigError, match="backbone vit_tiny has no spatial feature maps") as err:
            call(x)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_keeps_the_encoder_contract(name):
    """Every registered backbone is an Encoder: pooled features of ``out_dim`` and, when it has maps,
    a final map of ``out_dim`` channels at ``output_stride`` equal to the last stage's ``feature_info``."""
    from molabench.models.encoder import Encoder

    kwargs = {"image_size": 16, "patch_size": 8} if name.startswith("vit") else {"small_input": True}
    net = build_backbone(name, **kwargs).eval()
    assert isinstance(net, Encoder) and net.backbone_name == name
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert net(x).shape == (2, net.out_dim)
        if net.has_feature_maps:
            final = net.forward_features(x)
            assert final.shape == (2, net.out_dim, 16 // net.output_stride, 16 // net.output_stride)
            assert net.feature_info[-1]["reduction"] == net.output_stride and net.stage_names
            assert torch.equal(net.forward_stages(x)[-1], final)
        else:
            assert net.stage_names == [] and net.output_stride is None
