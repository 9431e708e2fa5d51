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
