"""Batch-wise augmentations: shapes, determinism, agreement with torchvision, dense-target rules."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from molabench.data.augment import (
    ColorJitter,
    HorizontalFlip,
    RandomGrayscale,
    RandomResizedCropFlip,
    ScaleCropFlip,
    domain_recipe,
    radimagenet_recipe,
    shift_hue,
)

torch.set_num_threads(1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 6, c: int = 3, h: int = 12, w: int = 16) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(123))


@pytest.mark.parametrize("aug", [HorizontalFlip(), RandomResizedCropFlip(), ColorJitter(), RandomGrayscale(), domain_recipe(), radimagenet_recipe()])
def test_shape_range_and_determinism(aug):
    x, y = batch(), torch.arange(6)
    a, ya = aug(x.clone(), y, gen(1))
    b, _ = aug(x.clone(), y, gen(1))
    c, _ = aug(x.clone(), y, gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b), "same generator seed must give the same batch"
    assert not torch.equal(a, c), "another seed must give another batch"
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(ya, y)


def test_flip_is_per_sample():
    x = batch(b=64)
    out, _ = HorizontalFlip()(x, torch.zeros(64), gen())
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


def test_full_crop_without_flip_is_identity():
    x = batch()
    out, _ = RandomResizedCropFlip(scale=(1.0, 1.0), ratio=(16 / 12, 16 / 12), flip_p=0.0)(x, None, gen())
    assert torch.allclose(out, x, atol=1e-5)


def test_full_crop_with_flip_mirrors():
    x = batch()
    out, _ = RandomResizedCropFlip(scale=(1.0, 1.0), ratio=(16 / 12, 16 / 12), flip_p=1.0)(x, None, gen())
    assert torch.allclose(out, x.flip(-1), atol=1e-5)


@pytest.mark.parametrize("shift", [-0.4, -0.1, 0.0, 0.25, 0.4])
def test_hue_matches_torchvision(shift):
    x = batch()
    x[0] = 0.5  # gray pixels: hue undefined, must stay gray
    x[1, 0] = x[1, 1]  # ties between channels
    ref = torch.stack([TF.adjust_hue(im, shift) for im in x])
    assert torch.allclose(shift_hue(x, torch.full((6,), shift)), ref, atol=1e-5)


def test_grayscale_always():
    out, _ = RandomGrayscale(p=1.0)(batch(), None, gen())
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def dense(b: int = 4, h: int = 12, w: int = 16):
    g = gen(7)
    x = torch.rand(b, 3, h, w, generator=g)
    n = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
    y = {
        "segmentation": torch.randint(-1, 13, (b, h, w), generator=g),
        "depth": torch.rand(b, 1, h, w, generator=g) + 0.5,
        "normal": n,
    }
    return x, y


def test_scale_one_flip_negates_normal_x():
    x, y = dense()
    out, t = ScaleCropFlip(scales=(1.0,), flip_p=1.0)(x, y, gen())
    assert torch.allclose(out, x.flip(-1), atol=1e-5)
    assert torch.equal(t["segmentation"], y["segmentation"].flip(-1))
    assert torch.allclose(t["depth"], y["depth"].flip(-1), atol=1e-6)
    assert torch.allclose(t["normal"][:, 0], -y["normal"][:, 0].flip(-1), atol=1e-5)
    assert torch.allclose(t["normal"][:, 1:], y["normal"][:, 1:].flip(-1), atol=1e-5)


def test_scale_one_no_flip_is_identity():
    x, y = dense()
    out, t = ScaleCropFlip(scales=(1.0,), flip_p=0.0)(x, y, gen())
    assert torch.allclose(out, x, atol=1e-5)
    assert all(torch.allclose(t[k].float(), y[k].float(), atol=1e-5) for k in y)


def test_scale_crop_divides_depth_and_keeps_labels():
    x, y = dense(h=24, w=32)
    y["depth"] = torch.full_like(y["depth"], 3.0)
    out, t = ScaleCropFlip(scales=(1.5,))(x, y, gen())
    assert out.shape == x.shape and t["segmentation"].shape == y["segmentation"].shape
    assert t["segmentation"].dtype == torch.long
    assert torch.allclose(t["depth"], torch.full_like(t["depth"], 2.0))
    assert set(t["segmentation"].unique().tolist()) <= set(y["segmentation"].unique().tolist())
    assert t["normal"].shape == y["normal"].shape


def test_scale_crop_is_deterministic():
    x, y = dense()
    a = ScaleCropFlip()(x, y, gen(3))
    b = ScaleCropFlip()(x, y, gen(3))
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in y)


def test_scale_crop_needs_dense_targets():
    with pytest.raises(TypeError):
        ScaleCropFlip()(batch(), torch.zeros(6), gen())
