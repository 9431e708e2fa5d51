"""NYUv2 on .npy files written in the MTAN release layout {train,val}/{image,label,depth,normal}/{i}.npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molabench.data import build_data
from molabench.data.loader import BatchLoader
from molabench.errors import DataError

H, W = 12, 16


def write_release(root: Path, n_train: int = 5, n_val: int = 3) -> dict:
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            normal = rng.normal(size=(H, W, 3)).astype(np.float32)
            arrays = {
                "image": rng.random((H, W, 3)).astype(np.float32),
                "label": rng.integers(-1, 13, (H, W)).astype(np.float32),  # MTAN stores labels as floats
                "depth": (rng.random((H, W, 1)) * 5).astype(np.float32),
                "normal": normal / np.linalg.norm(normal, axis=-1, keepdims=True),
            }
            for kind, arr in arrays.items():
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                np.save(root / split / kind / f"{i}.npy", arr)
            written[(split, i)] = arrays
    return written


def cfg(root: Path, **kw):
    return {"name": "nyuv2", "root": str(root), "seed": 0, "workers": 2, **kw}


def test_build(tmp_path):
    written = write_release(tmp_path)
    data = build_data(cfg(tmp_path, val_fraction=0.0))
    assert data.setting == "single_input" and [t.kind for t in data.tasks] == ["segmentation", "depth", "normal"]
    assert [t.num_classes for t in data.tasks] == [13, 0, 0]
    assert data.split_sizes() == {"train": [5, 0, 0], "test": [3, 0, 0]}
    x, y = data.splits["test"].load(torch.tensor([1]))
    ref = written[("val", 1)]
    assert x.dtype == torch.uint8 and x.shape == (1, 3, H, W)
    # uint8 storage: round(255 * image), error <= 0.5/255
    assert (x[0].permute(1, 2, 0).float() / 255 - torch.from_numpy(ref["image"])).abs().max() <= 0.5 / 255 + 1e-6
    assert y["segmentation"].dtype == torch.long and torch.equal(y["segmentation"][0], torch.from_numpy(ref["label"]).long())
    assert y["depth"].shape == (1, 1, H, W) and torch.equal(y["depth"][0, 0], torch.from_numpy(ref["depth"][..., 0]))
    assert y["normal"].shape == (1, 3, H, W) and torch.equal(y["normal"][0], torch.from_numpy(ref["normal"]).permute(2, 0, 1))
    assert tuple(data.std) == (1.0, 1.0, 1.0)


def test_val_split_and_loader_augments_targets(tmp_path):
    write_release(tmp_path, n_train=10)
    data = build_data(cfg(tmp_path))
    assert data.split_sizes()["val"][0] == 1 and data.split_sizes()["train"][0] == 9
    batch = next(iter(BatchLoader(data, "train", 4, train=True, seed=0)))
    assert batch.x.shape == (4, 3, H, W) and set(batch.y) == {"segmentation", "depth", "normal"}
    assert batch.y["segmentation"].dtype == torch.long and batch.y["segmentation"].min() >= -1
    again = next(iter(BatchLoader(data, "train", 4, train=True, seed=0)))
    assert torch.equal(batch.x, again.x) and torch.equal(batch.y["normal"], again.y["normal"])


def test_bad_release(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_data(cfg(tmp_path / "nope"))
    write_release(tmp_path)
    np.save(tmp_path / "train" / "depth" / "2.npy", np.zeros((H, W), np.float32))
    with pytest.raises(DataError, match=r"depth/2\.npy has shape \(12, 16\)"):
        build_data(cfg(tmp_path))
    np.save(tmp_path / "train" / "depth" / "2.npy", np.zeros((H, W, 1), np.float32))
    with pytest.raises(DataError, match=r"depth/2\.npy: depth must be finite with at least one valid"):
        build_data(cfg(tmp_path))
    np.save(tmp_path / "train" / "depth" / "2.npy", np.ones((H, W, 1), np.float32))
    np.save(tmp_path / "train" / "label" / "0.npy", np.full((H, W), 13, np.float32))
    with pytest.raises(DataError, match=r"labels must be integers in -1\.\.12"):
        build_data(cfg(tmp_path))
    (tmp_path / "train" / "label" / "0.npy").unlink()
    with pytest.raises(DataError, match=r"lacks 0\.npy"):
        build_data(cfg(tmp_path))
    np.save(tmp_path / "train" / "label" / "0.npy", np.zeros((H, W), np.float32))
    np.save(tmp_path / "val" / "image" / "0.npy", np.full((H, W, 3), 255.0, np.float32))
    with pytest.raises(DataError, match=r"image values must lie in \[0, 1\]"):
        build_data(cfg(tmp_path))
