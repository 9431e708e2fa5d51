"""data=scenes: the procedurally rendered NYUv2 stand-in (molabench/data/scenes.py, scripts/make_scenes.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from molabench.data import build_data, nyuv2
from molabench.data.augment import ScaleCropFlip
from molabench.data.scenes import CLASSES, camera_rays, generate, intrinsics
from molabench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 64
SMALL = {"n_train": 8, "n_val": 4, "n_test": 8, "height": H, "width": W}


def scenes(**kw):
    return build_data({"name": "scenes", **SMALL, **kw})


def load_script():
    spec = importlib.util.spec_from_file_location("make_scenes", ROOT / "scripts" / "make_scenes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small():
    return scenes()


@pytest.fixture(scope="module")
def raw():
    """16 test scenes at 48x64 as numpy arrays, with the hit surface ids."""
    return generate("test", 16, H, W, 0)


@pytest.fixture(scope="module")
def default_test():
    """The test split at the default size and count (128 scenes of 96x128)."""
    return generate("test", 128)


def back_project(depth: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) camera-frame points of an (N, H, W) depth map."""
    h, w = depth.shape[1:]
    fx, fy, cx, cy = intrinsics(h, w)
    v, u = np.mgrid[0:h, 0:w]
    return np.stack([depth * (u - cx) / fx, depth * (v - cy) / fy, depth], axis=-1)


def normals_from_depth(depth: np.ndarray) -> np.ndarray:
    """normalise(P_v x P_u) from central differences, on the (N, H-2, W-2) interior."""
    p = back_project(depth)
    pu = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    pv = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    c = np.cross(pv, pu)
    return c / np.maximum(np.linalg.norm(c, axis=-1, keepdims=True), 1e-12)


def one_surface(surface: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, H-2, W-2): the 3x3 neighbourhood is one surface, every pixel of it valid."""
    h, w = surface.shape[1:]
    centre = surface[:, 1:-1, 1:-1]
    ok = np.ones_like(centre, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ok &= (surface[:, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] == centre) & valid[
                :, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx
            ]
    return ok


def test_layout_dtypes_and_ranges(small):
    assert small.name == "scenes" and small.setting == "single_input"
    assert small.tasks == list(nyuv2.TASKS)
    assert small.split_sizes() == {"train": [8, 0, 0], "val": [4, 0, 0], "test": [8, 0, 0]}
    assert tuple(small.mean) == (0.0, 0.0, 0.0) and tuple(small.std) == (1.0, 1.0, 1.0)
    assert small.augment == ScaleCropFlip(scales=(1.0, 1.2, 1.5))
    assert scenes(augment=False).augment is None
    split = small.splits["test"]
    assert isinstance(split, nyuv2.DenseSplit)
    assert split.images.dtype == torch.uint8 and split.images.shape == (8, 3, H, W)
    assert split.label.dtype == torch.int8 and split.label.shape == (8, H, W)
    assert split.depth.dtype == torch.float32 and split.depth.shape == (8, 1, H, W)
    assert split.normal.dtype == torch.float32 and split.normal.shape == (8, 3, H, W)
    assert int(split.label.min()) == -1 and int(split.label.max()) == 12
    _, y = split.load(torch.tensor([0, 3]))
    assert y["segmentation"].dtype == torch.long and set(y) == {"segmentation", "depth", "normal"}
    assert small.image_size == (H, W) and small.in_channels == 3


def test_deterministic_from_the_data_seed(small):
    again, other = scenes(), scenes(data_seed=1)
    for name in ("train", "val", "test"):
        a, b = small.splits[name], again.splits[name]
        for t in ("images", "label", "depth", "normal"):
            assert torch.equal(getattr(a, t), getattr(b, t)), (name, t)
    assert not torch.equal(small.splits["train"].images, other.splits["train"].images)
    assert not torch.equal(small.splits["test"].depth, other.splits["test"].depth)
    # a scene does not depend on the split sizes; the splits differ from each other
    fewer = scenes(n_train=3, n_test=5)
    assert torch.equal(fewer.splits["test"].images, small.splits["test"].images[:5])
    assert not torch.equal(small.splits["train"].images[:4], small.splits["val"].images)


def test_every_class_in_the_test_split(small, default_test):
    assert set(torch.unique(small.splits["test"].label).tolist()) == set(range(-1, 13))
    counts = np.bincount(default_test["label"].ravel() + 1, minlength=14)[1:]
    assert len(CLASSES) == 13 and (counts > 0).all()
    assert counts.min() / counts.sum() > 0.002  # every class has a measurable share of the pixels


def test_ignore_and_invalid_fractions(default_test):
    ignore = (default_test["label"] == -1).mean()
    invalid = default_test["depth"][..., 0] == 0
    assert 0.01 < ignore < 0.08
    assert 0.01 < invalid.mean() < 0.08
    # the same pixels miss depth and normal
    assert np.array_equal(invalid, (default_test["normal"] == 0).all(-1))
    assert not (default_test["normal"][~invalid] == 0).all(-1).any()


def test_depth_and_normal_values(raw, default_test):
    for d in (raw, default_test):
        depth, normal = d["depth"][..., 0], d["normal"]
        valid = depth > 0
        assert depth[valid].min() > 0.5 and depth[valid].max() <= 10.0
        assert np.abs(np.linalg.norm(normal[valid], axis=-1) - 1).max() < 1e-5
        # facing the camera: normal . viewing ray < 0 (camera frame x right, y down, z forward)
        rays = camera_rays(*depth.shape[1:]).T.reshape(1, *depth.shape[1:], 3)
        assert ((normal * rays).sum(-1)[valid] < 0).all()
        # no valid normal is taken for a missing one by the NYUv2 losses (components summing to 0)
        assert (torch.from_numpy(normal).sum(-1)[torch.from_numpy(valid)] != 0).all()
        img = d["image"]
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1


def test_normals_agree_with_depth(raw):
    valid = raw["depth"][..., 0] > 0
    from_depth = normals_from_depth(raw["depth"][..., 0])
    cos = (from_depth * raw["normal"][:, 1:-1, 1:-1]).sum(-1)
    inside = one_surface(raw["surface"], valid)
    assert inside.mean() > 0.5
    assert (cos[inside] > 0.99).mean() > 0.95
    room = inside & (raw["surface"][:, 1:-1, 1:-1] < 6)  # floor, ceiling, walls: exact planes
    assert (cos[room] > 0.999).mean() > 0.999


def test_horizontal_flip_negates_normal_x(raw):
    depth = torch.from_numpy(raw["depth"]).permute(0, 3, 1, 2)
    normal = torch.from_numpy(raw["normal"]).permute(0, 3, 1, 2)
    label = torch.from_numpy(raw["label"]).long()
    x = torch.rand(depth.shape[0], 3, H, W)
    flip = ScaleCropFlip(scales=(1.0,), flip_p=1.0)
    _, y = flip(x, {"segmentation": label, "depth": depth, "normal": normal}, torch.Generator().manual_seed(0))
    assert torch.equal(y["depth"], depth.flip(-1)) and torch.equal(y["segmentation"], label.flip(-1))
    flipped_depth = y["depth"][:, 0].numpy()
    flipped_normal = y["normal"].permute(0, 2, 3, 1).numpy()
    inside = one_surface(raw["surface"][:, :, ::-1], flipped_depth > 0)
    cos = (normals_from_depth(flipped_depth) * flipped_normal[:, 1:-1, 1:-1]).sum(-1)
    assert (cos[inside] > 0.99).mean() > 0.95
    # without negating n_x the flipped normals would disagree wherever n_x matters
    unflipped = flipped_normal * np.array([-1.0, 1.0, 1.0])
    slanted = inside & (np.abs(flipped_normal[:, 1:-1, 1:-1, 0]) > 0.3)
    assert slanted.sum() > 100
    assert ((normals_from_depth(flipped_depth) * unflipped[:, 1:-1, 1:-1]).sum(-1)[slanted] > 0.99).mean() < 0.05


def test_mtan_round_trip(tmp_path):
    script = load_script()
    out = tmp_path / "mtan"
    args = ["--out", str(out), "--n-train", "6", "--n-test", "4", "--height", str(H), "--width", str(W), "--seed", "3"]
    assert script.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mtan"]  # no temporary folder left behind
    image, label = np.load(out / "train" / "image" / "0.npy"), np.load(out / "val" / "label" / "3.npy")
    assert image.dtype == np.float32 and image.shape == (H, W, 3) and image.min() >= 0 and image.max() <= 1
    assert label.dtype == np.float32 and label.shape == (H, W)
    assert np.load(out / "train" / "depth" / "5.npy").shape == (H, W, 1)
    assert np.load(out / "val" / "normal" / "0.npy").shape == (H, W, 3)
    loaded = build_data({"name": "nyuv2", "root": str(out), "val_fraction": 0.0, "workers": 1})
    memory = scenes(n_train=6, n_val=1, n_test=4, data_seed=3)
    for mine, theirs in (("train", "train"), ("test", "test")):
        a, b = memory.splits[mine], loaded.splits[theirs]
        for t in ("images", "label", "depth", "normal"):  # images: uint8 round(255 x) on both sides
            assert torch.equal(getattr(a, t), getattr(b, t)), (mine, t)
    floats = torch.from_numpy(np.load(out / "val" / "image" / "2.npy")).permute(2, 0, 1)
    assert (memory.splits["test"].images[2].float() / 255 - floats).abs().max() <= 0.5 / 255 + 1e-6


def test_make_scenes_refuses_to_overwrite(tmp_path, capsys):
    script = load_script()
    out = tmp_path / "mtan"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    small = ["--out", str(out), "--n-train", "1", "--n-test", "1", "--height", "16", "--width", "16"]
    assert script.main(small) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert (out / "keep.txt").exists()
    assert script.main([*small, "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mtan"]
    assert script.main(["--out", str(tmp_path / "b"), "--height", "50"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "multiple of 8" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_config_file_builds():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        full = OmegaConf.to_container(compose(config_name="config", overrides=["data=scenes"]), resolve=True)
    cfg = full["data"]
    assert cfg["name"] == "scenes" and cfg["paper"] == {"table": "table5_nyuv2"}
    assert full["backbone"]["name"] == "resnet18_dilated"  # the data's default backbone
    assert full["trainer"]["batch_size"] == cfg["budget"]["batch_size"]
    assert full["method"]["name"] == "hps"
    cfg.update(n_train=2, n_val=1, n_test=1, height=16, width=16)
    data = build_data(cfg)
    assert data.split_sizes() == {"train": [2, 0, 0], "val": [1, 0, 0], "test": [1, 0, 0]}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"height": 50}, "data.height must be a multiple of 8"),
        ({"width": 8}, "data.width must be a multiple of 8 and at least 16"),
        ({"n_train": 0}, r"data.n_train must be an integer >= 1"),
        ({"n_test": 2.5}, r"data.n_test must be an integer >= 1"),
        ({"data_seed": -1}, "data.data_seed must be a non-negative integer"),
        ({"scales": [0.5, 1.0]}, "data.scales must be a non-empty list of zoom factors >= 1"),
        ({"root": "x"}, r"data=scenes does not take data.root"),
    ],
)
def test_bad_parameters(kw, match):
    with pytest.raises(ConfigError, match=match) as info:
        scenes(**kw)
    assert "\n" not in str(info.value)
