"""RadImageNet on png folders and 'path label' list files written by the tests (global labels 0..164)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from molabench.data import build_data, radimagenet
from molabench.data.loader import BatchLoader
from molabench.errors import ConfigError, DataError

# one global label per task boundary: first and last label of a few tasks
LABELS = [0, 5, 6, 33, 34, 35, 49, 164, 151, 100]


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (18, 24), dtype=np.uint8)  # gray, like the release
    Image.fromarray(arr).save(path)


def make_release(root: Path, repeats: int = 3) -> None:
    label_dir = root / "radiology_ai" / "label"
    label_dir.mkdir(parents=True)
    for split in ("train", "test"):
        lines = []
        for r in range(repeats):
            for g in LABELS:
                rel = f"radiology_ai/img/{split}/{g}_{r}.png"
                write_png(root / rel, seed=g * 10 + r)
                lines.append(f"{rel} {g}")
        name = "rad_train_shuffled.txt" if split == "train" else "rad_test.txt"
        (label_dir / name).write_text("\n".join(lines) + "\n")


def cfg(root: Path, **kw):
    return {"name": "radimagenet", "root": str(root), "image_size": 16, "seed": 0, "workers": 2, **kw}


def test_label_mapping():
    task, local = radimagenet.task_of_label()
    assert radimagenet.NUM_CLASSES == 165 and [n for *_, n in radimagenet.TASKS] == [6, 28, 2, 13, 18, 14, 9, 25, 26, 10, 14]
    assert (task[0], local[0]) == (0, 0) and (task[5], local[5]) == (0, 5) and (task[6], local[6]) == (1, 0)
    assert (task[34], local[34]) == (2, 0) and (task[164], local[164]) == (10, 13)


def test_build_and_load(tmp_path):
    make_release(tmp_path)
    data = build_data(cfg(tmp_path, val_fraction=0.0))
    assert data.setting == "multi_input" and data.num_tasks == 11
    assert [t.column for t in data.tasks][:3] == ["Lung", "Abdomen_1", "Thyroid"]
    test = data.splits["test"]
    assert len(test) == 30
    x, y = test.load(torch.arange(len(LABELS)))
    assert x.dtype == torch.uint8 and x.shape == (10, 3, 16, 16) and torch.equal(x[:, 0], x[:, 1])
    task, local = radimagenet.task_of_label()
    assert test.tasks[: len(LABELS)].tolist() == task[LABELS].tolist() and y.tolist() == local[LABELS].tolist()
    batch = next(iter(BatchLoader(data, "train", 8, train=True, seed=0)))
    assert batch.x.shape == (8, 3, 16, 16) and torch.isfinite(batch.x).all()


def test_val_held_out_and_task_subset(tmp_path):
    make_release(tmp_path)
    data = build_data(cfg(tmp_path, tasks=["ct_lung", "Hip"]))
    assert [t.name for t in data.tasks] == ["ct_lung", "mr_hip"]
    sizes = data.split_sizes()
    assert sizes["test"] == [6, 6] and [a + b for a, b in zip(sizes["train"], sizes["val"], strict=True)] == [6, 6]
    assert sum(sizes["val"]) > 0
    with pytest.raises(ConfigError, match="unknown RadImageNet task"):
        build_data(cfg(tmp_path, tasks=["liver"]))


def test_missing_listed_image(tmp_path):
    make_release(tmp_path)
    (tmp_path / "radiology_ai/img/test/0_0.png").unlink()
    with pytest.raises(DataError, match=r"rad_test\.txt:1 names image 'radiology_ai/img/test/0_0\.png'"):
        build_data(cfg(tmp_path))


def test_label_out_of_range_and_missing_list(tmp_path):
    make_release(tmp_path)
    (tmp_path / "radiology_ai/label/rad_test.txt").write_text("radiology_ai/img/test/0_0.png 165\n")
    with pytest.raises(DataError, match="label 165 out of range"):
        build_data(cfg(tmp_path))
    (tmp_path / "radiology_ai/label/rad_test.txt").unlink()
    with pytest.raises(DataError, match="no RadImageNet test list"):
        build_data(cfg(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        build_data(cfg(tmp_path / "nope"))


def test_unreadable_image_at_load(tmp_path):
    make_release(tmp_path)
    data = build_data(cfg(tmp_path, val_fraction=0.0, max_unreadable=1))
    (tmp_path / "radiology_ai/img/test/0_0.png").write_bytes(b"broken")
    (tmp_path / "radiology_ai/img/test/5_0.png").write_bytes(b"broken")
    with pytest.warns(UserWarning, match=r"unreadable image replaced .*0_0\.png \(1 so far\)"):
        x, _ = data.splits["test"].load(torch.tensor([0]))
    assert int(x.sum()) == 0
    with pytest.raises(DataError, match=r"more than data\.max_unreadable=1"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.splits["test"].load(torch.tensor([1]))


def test_loader_prefetches_file_splits_in_order(tmp_path):
    make_release(tmp_path)
    data = build_data(cfg(tmp_path, val_fraction=0.0))
    test = data.splits["test"]
    assert getattr(test, "prefetch", False)
    batches = list(BatchLoader(data, "test", 7, train=False))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    images = torch.cat([b.x for b in batches]) * std + mean
    expected, targets = test.load(torch.arange(len(test)))
    assert torch.allclose(images * 255, expected.float(), atol=1e-3)
    assert torch.equal(torch.cat([b.y for b in batches]), targets)
    (tmp_path / "radiology_ai/label/rad_test.txt").unlink()  # files vanish mid-run: errors reach the caller
    for p in (tmp_path / "radiology_ai/img/test").iterdir():
        p.write_bytes(b"broken")
    with pytest.raises(DataError, match="unreadable"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(BatchLoader(data, "test", 7, train=False))
