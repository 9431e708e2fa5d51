"""MedMNIST loader on npz files written in the official format, plus the shared real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molabench.data import build_data, medmnist
from molabench.data.loader import BatchLoader
from molabench.errors import ConfigError, DataError

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "medmnist"
SIZES = {"train": 10, "val": 4, "test": 6}


def write_npz(root: Path, task: str, rgb: bool, size: int = 28, drop: str | None = None, label_max: int | None = None):
    """An npz with the official keys, dtypes (uint8) and shapes ((N,H,W[,3]), labels (N,1))."""
    rng = np.random.default_rng(0)
    n_cls = medmnist.TASKS[task].num_classes
    arrays = {}
    for split, n in SIZES.items():
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = np.arange(n) % n_cls
        if label_max is not None:
            labels[0] = label_max
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(n, 1)
    if drop:
        del arrays[drop]
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / medmnist.npz_name(task, size), **arrays)
    return arrays


def cfg(root: Path, **kw):
    return {"name": "medmnist", "root": str(root), "tasks": ["breastmnist", "dermamnist"], "seed": 0, **kw}


def test_builds_two_tasks(tmp_path):
    gray = write_npz(tmp_path, "breastmnist", rgb=False)
    rgb = write_npz(tmp_path, "dermamnist", rgb=True)
    data = build_data(cfg(tmp_path))
    assert data.setting == "multi_input" and data.num_tasks == 2
    assert [t.column for t in data.tasks] == ["Breast", "Skin"] and [t.num_classes for t in data.tasks] == [2, 7]
    assert data.split_sizes() == {s: [n, n] for s, n in SIZES.items()}
    assert data.in_channels == 3 and data.image_size == (28, 28)
    x, y = data.splits["train"].load(torch.tensor([0, 10, 11]))
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 28, 28)
    # gray tiled to three channels; RGB transposed to CHW; labels local to each task
    assert torch.equal(x[0, 0], torch.from_numpy(gray["train_images"][0])) and torch.equal(x[0, 0], x[0, 2])
    assert torch.equal(x[2], torch.from_numpy(rgb["train_images"][1]).permute(2, 0, 1))
    assert y.tolist() == [0, 0, 1] and data.splits["train"].tasks[[0, 10]].tolist() == [0, 1]
    assert tuple(data.mean) == (0.5, 0.5, 0.5) and data.augment is not None


def test_batches_through_loader(tmp_path):
    write_npz(tmp_path, "breastmnist", rgb=False)
    write_npz(tmp_path, "dermamnist", rgb=True)
    data = build_data(cfg(tmp_path))
    batches = list(BatchLoader(data, "train", 8, train=True, batching="per_task", seed=0))
    assert len(batches) == 2 and batches[0].x.shape == (8, 3, 28, 28) and batches[0].x.dtype == torch.float32
    assert batches[0].task.tolist().count(0) == 4
    assert float(batches[0].x.min()) >= -1.0 and float(batches[0].x.max()) <= 1.0


def test_resize_at_load_and_official_size_file(tmp_path):
    write_npz(tmp_path, "breastmnist", rgb=False)
    write_npz(tmp_path, "dermamnist", rgb=True)
    data = build_data(cfg(tmp_path, image_size=64))
    assert data.image_size == (64, 64) and data.splits["train"].load(torch.arange(2))[0].dtype == torch.uint8
    official = write_npz(tmp_path, "breastmnist", rgb=False, size=64)  # MedMNIST+ file wins when present
    data = build_data(cfg(tmp_path, image_size=64))
    assert torch.equal(data.splits["val"].load(torch.tensor([0]))[0][0, 0], torch.from_numpy(official["val_images"][0]))
    assert data.info["files"]["breastmnist"].endswith("breastmnist_64.npz")


def test_all_nine_by_default(tmp_path):
    for t in medmnist.TASKS:
        write_npz(tmp_path, t, rgb=t in {"pathmnist", "bloodmnist", "dermamnist"})
    data = build_data({"name": "medmnist", "root": str(tmp_path), "seed": 0})
    assert [t.column for t in data.tasks] == ["Colon", "Retinal", "OrganC", "Cell", "Breast", "Skin", "OrganA", "OrganS", "Chest"]
    assert [t.num_classes for t in data.tasks] == [9, 4, 11, 8, 2, 7, 11, 11, 2]


def test_missing_files_name_them_and_the_command(tmp_path):
    write_npz(tmp_path, "breastmnist", rgb=False)
    with pytest.raises(DataError, match=r"dermamnist\.npz.*prepare_data\.py medmnist --root"):
        build_data(cfg(tmp_path))


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_data(cfg(tmp_path / "nope"))


def test_missing_key(tmp_path):
    write_npz(tmp_path, "breastmnist", rgb=False, drop="val_labels")
    with pytest.raises(DataError, match="val_labels"):
        build_data(cfg(tmp_path, tasks=["breastmnist"]))


def test_label_out_of_range(tmp_path):
    write_npz(tmp_path, "breastmnist", rgb=False, label_max=2)
    with pytest.raises(DataError, match="out of range"):
        build_data(cfg(tmp_path, tasks=["breastmnist"]))


def test_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="chestmnist"):
        build_data(cfg(tmp_path, tasks=["chestmnist"]))


def test_download_checks_md5(tmp_path, monkeypatch):
    def fake_retrieve(url, filename):
        assert url == medmnist.npz_url("breastmnist")
        Path(filename).write_bytes(b"not the official file")

    monkeypatch.setattr(medmnist.urllib.request, "urlretrieve", fake_retrieve)
    with pytest.raises(DataError, match="md5 mismatch"):
        medmnist.download(tmp_path, ["breastmnist"])
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared MedMNIST data not found at {SHARED}")
def test_shared_files():
    data = build_data({"name": "medmnist", "root": str(SHARED), "tasks": ["breastmnist", "pneumoniamnist", "dermamnist"], "seed": 0})
    assert data.split_sizes() == {"train": [546, 4708, 7007], "val": [78, 524, 1003], "test": [156, 624, 2005]}
    assert medmnist.md5sum(SHARED / "breastmnist.npz") == medmnist.TASKS["breastmnist"].md5[28]
    batch = next(iter(BatchLoader(data, "train", 128, train=True, seed=0)))
    assert batch.x.shape == (128, 3, 28, 28)
