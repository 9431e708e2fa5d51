"""Generic datasets (folder_domains, folder_tasks, npz_tasks) on tiny files written by the tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from molabench.data import build_data, cache
from molabench.data.loader import BatchLoader
from molabench.errors import ConfigError, DataError

DOMAINS = {"sketchy": ["cat", "dog"], "photo_2": ["cat", "dog"], "Ink": ["cat", "dog"]}  # sorted: Ink, photo_2, sketchy
TASKS = {"xray": ["normal", "pneumonia"], "skin": ["a", "b", "c"]}


def write_image(path: Path, seed: int, size: tuple[int, int] = (8, 8), gray: bool = False) -> None:
    """A small random image; the suffix picks PNG or JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def make_tree(root: Path, groups: dict[str, list[str]], per_class: int = 5) -> list[Path]:
    """``<root>/<group>/<class>/<image>``: PNG and JPEG, RGB and gray, two image sizes."""
    files = []
    for g, (group, classes) in enumerate(groups.items()):
        for c, cls in enumerate(classes):
            for i in range(per_class):
                p = root / group / cls / f"im{i}.{'png' if i % 2 else 'jpg'}"
                write_image(p, seed=g * 100 + c * 10 + i, size=(8, 8) if i % 3 else (12, 9), gray=i == 1)
                files.append(p)
    return files


def cfg(name: str, root: Path, tmp_path: Path, **kw):
    base = {"name": name, "root": str(root), "seed": 0}
    if name != "npz_tasks":
        base.update(image_size=16, cache_dir=str(tmp_path / "cache"))
    return {**base, **kw}


@pytest.fixture()
def domains_root(tmp_path):
    root = tmp_path / "mydomains"
    make_tree(root, DOMAINS)
    return root


# ----------------------------------------------------------------------------- folder_domains


def test_folder_domains_names_splits_and_batches(domains_root, tmp_path):
    data = build_data(cfg("folder_domains", domains_root, tmp_path, columns={"Ink": "I"}))
    assert data.setting == "domain" and data.name == "mydomains"
    assert [t.name for t in data.tasks] == ["Ink", "photo_2", "sketchy"]
    assert [t.display for t in data.tasks] == ["I", "photo_2", "sketchy"]
    assert all(t.num_classes == 2 for t in data.tasks) and data.info["classes"] == ["cat", "dog"]
    # 10 images per domain: int(10 * 0.9) = 9 kept, 1 test; then 8 train, 1 val
    assert data.split_sizes() == {"train": [8] * 3, "val": [1] * 3, "test": [1] * 3}
    x, y = data.splits["train"].load(torch.arange(4))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 0, 0]
    assert data.augment is not None and tuple(data.mean) == (0.5, 0.5, 0.5)
    batch = next(iter(BatchLoader(data, "train", 8, train=True, seed=0)))
    assert batch.x.shape == (8, 3, 16, 16) and torch.isfinite(batch.x).all()


def test_folder_domains_subset_pooled_and_options(domains_root, tmp_path):
    data = build_data(
        cfg("folder_domains", domains_root, tmp_path, domains=["sketchy", "Ink"], augment="none", title="mine")
    )
    assert [t.name for t in data.tasks] == ["sketchy", "Ink"] and data.augment is None and data.name == "mine"
    pooled = build_data(
        cfg("folder_domains", domains_root, tmp_path, split="pooled", val_fraction=0.0, test_fraction=0.2)
    )
    assert list(pooled.splits) == ["train", "test"] and [sum(v) for v in pooled.split_sizes().values()] == [24, 6]
    with pytest.raises(ConfigError, match=r"data\.domains names \['Photo'\].*choose from"):
        build_data(cfg("folder_domains", domains_root, tmp_path, domains=["Photo"]))
    with pytest.raises(ConfigError, match=r"data\.split must be one of"):
        build_data(cfg("folder_domains", domains_root, tmp_path, split="random"))
    with pytest.raises(ConfigError, match=r"data\.augment must be one of"):
        build_data(cfg("folder_domains", domains_root, tmp_path, augment="mixup"))


def test_splits_deterministic_from_seed_and_disjoint(domains_root, tmp_path):
    def members(**kw):
        d = build_data(cfg("folder_domains", domains_root, tmp_path, **kw))
        return {k: {tuple(im.flatten()[:24].tolist()) for im in s.images} for k, s in d.splits.items()}

    a, b, c = members(split_seed=0), members(split_seed=0), members(split_seed=1)
    assert a == b and a != c
    assert members(split_seed=None, seed=1) == c  # split_seed null: the run's seed
    assert not (a["train"] & a["test"]) and not (a["train"] & a["val"]) and not (a["val"] & a["test"])


def test_list_files_give_the_split(domains_root, tmp_path):
    lines = {s: [] for s in ("train", "val", "test")}
    for d in DOMAINS:
        for c in ("cat", "dog"):
            for i in range(5):
                lines["test" if i == 4 else "val" if i == 3 else "train"].append(
                    f"{d}/{c}/im{i}.{'png' if i % 2 else 'jpg'}"
                )
    lines["train"][0] += " 0"  # the named datasets' '<path> <label>' lines are accepted
    for s, ls in lines.items():
        (domains_root / f"{s}.txt").write_text("\n".join(ls) + "\n")
    data = build_data(cfg("folder_domains", domains_root, tmp_path, split="lists"))
    assert data.info["split"] == "lists"
    assert data.split_sizes() == {"train": [6] * 3, "val": [2] * 3, "test": [2] * 3}
    subset = build_data(cfg("folder_domains", domains_root, tmp_path, split="lists", domains=["photo_2"]))
    assert subset.split_sizes() == {"train": [6], "val": [2], "test": [2]}
    (domains_root / "val.txt").unlink()  # no val.txt: a seeded val_fraction of train
    assert (
        build_data(cfg("folder_domains", domains_root, tmp_path, split="lists", val_fraction=0.5)).split_sizes()["val"]
        == [3] * 3
    )

    (domains_root / "test.txt").write_text("Ink/cat/im0.jpg\n")
    with pytest.raises(DataError, match=r"test\.txt:1: 'Ink/cat/im0\.jpg' is listed in train\.txt already"):
        build_data(cfg("folder_domains", domains_root, tmp_path, split="lists"))
    (domains_root / "test.txt").write_text("Ink/dog/im4.jpg 0\n")
    with pytest.raises(DataError, match=r"test\.txt:1: label 0 .* disagrees with its class folder"):
        build_data(cfg("folder_domains", domains_root, tmp_path, split="lists"))
    (domains_root / "test.txt").write_text("Ink/dog/nothere.jpg\n")
    with pytest.raises(DataError, match=r"test\.txt:1 names image 'Ink/dog/nothere\.jpg'"):
        build_data(cfg("folder_domains", domains_root, tmp_path, split="lists"))
    (domains_root / "test.txt").unlink()
    with pytest.raises(DataError, match=r"split=lists needs train\.txt and test\.txt"):
        build_data(cfg("folder_domains", domains_root, tmp_path, split="lists"))


def test_domains_with_different_classes_name_them(domains_root, tmp_path):
    (domains_root / "photo_2" / "dog").rename(domains_root / "photo_2" / "wolf")
    with pytest.raises(DataError, match=r"class folders of .*photo_2 differ .*missing \['dog'\], extra \['wolf'\]"):
        build_data(cfg("folder_domains", domains_root, tmp_path))


def test_root_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"needs data\.root"):
        build_data({"name": "folder_domains", "root": None})
    with pytest.raises(DataError, match="does not exist"):
        build_data(cfg("folder_domains", tmp_path / "missing", tmp_path))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        build_data(cfg("folder_tasks", tmp_path / "file.txt", tmp_path))
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no domain folders"):
        build_data(cfg("folder_domains", tmp_path / "empty", tmp_path))
    with pytest.raises(DataError, match=r"holds no \.npz files"):
        build_data(cfg("npz_tasks", tmp_path / "empty", tmp_path))


def test_folder_layout_errors(tmp_path):
    flat = tmp_path / "flat"  # <root>/<class>/<image>: one level short
    make_tree(flat, {"cat": [], "dog": []})
    write_image(flat / "cat" / "a.png", 0)
    with pytest.raises(
        DataError, match=r"domain folder .*cat has no class folders \(its 1 image\(s\) lie directly in it\)"
    ):
        build_data(cfg("folder_domains", flat, tmp_path))
    root = tmp_path / "r"
    make_tree(root, {"a": ["x"], "b": ["x"]}, per_class=3)
    (root / "b" / "x" / "notes.txt").write_text("not an image")
    (root / "a" / "y").mkdir()
    (root / "b" / "y").mkdir()
    with pytest.raises(DataError, match=r"class folder .*a/y holds no images"):
        build_data(cfg("folder_domains", root, tmp_path))
    avg = tmp_path / "avg_root"
    make_tree(avg, {"avg": ["x", "y"]}, per_class=3)
    with pytest.raises(DataError, match=r"'avg' .* clashes"):
        build_data(cfg("folder_tasks", avg, tmp_path))


def test_unreadable_image_is_skipped_with_a_warning(domains_root, tmp_path):
    (domains_root / "Ink" / "dog" / "im2.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_data(cfg("folder_domains", domains_root, tmp_path))
    assert any("skipped 1 unreadable" in str(w.message) for w in caught)
    assert len(data.info["skipped_images"]) == 1 and sum(sum(v) for v in data.split_sizes().values()) == 29
    with pytest.raises(DataError, match=r"more than data\.max_unreadable=0"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_data(cfg("folder_domains", domains_root, tmp_path, max_unreadable=0))


def test_second_build_reads_the_cache(domains_root, tmp_path, monkeypatch):
    first = build_data(cfg("folder_domains", domains_root, tmp_path))
    assert list((tmp_path / "cache").glob("mydomains-*-16px-*.npy"))
    monkeypatch.setattr(cache, "decode_files", lambda *a, **k: pytest.fail("decoded although cached"))
    again = build_data(cfg("folder_domains", domains_root, tmp_path))
    assert torch.equal(first.splits["train"].images, again.splits["train"].images)


# ----------------------------------------------------------------------------- folder_tasks


def test_folder_tasks_each_task_its_own_classes(tmp_path):
    root = tmp_path / "mytasks"
    make_tree(root, TASKS, per_class=4)
    data = build_data(cfg("folder_tasks", root, tmp_path))
    assert data.setting == "multi_input" and [t.name for t in data.tasks] == ["skin", "xray"]
    assert [t.num_classes for t in data.tasks] == [3, 2]
    assert data.info["classes"] == {"skin": ["a", "b", "c"], "xray": ["normal", "pneumonia"]}
    # skin 12 images: 10 kept, 2 test; 9 train, 1 val. xray 8: 7 kept, 1 test; 6 train, 1 val
    assert data.split_sizes() == {"train": [9, 6], "val": [1, 1], "test": [2, 1]}
    _, y = data.splits["train"].load(torch.arange(len(data.splits["train"])))
    tasks = data.splits["train"].tasks
    assert int(y[tasks == 0].max()) == 2 and int(y[tasks == 1].max()) == 1
    with pytest.raises(ConfigError, match=r"data\.tasks names \['eye'\]"):
        build_data(cfg("folder_tasks", root, tmp_path, tasks=["eye"]))


# ----------------------------------------------------------------------------- npz_tasks


def write_npz(
    root: Path, task: str, classes: int, *, rgb: bool = False, hw: int = 8, val: bool = True, **override
) -> dict:
    """A task file with MedMNIST's keys: uint8 images, (N, 1) labels."""
    rng = np.random.default_rng(len(task))
    arrays = {}
    for split, n in (("train", 20), ("val", 4), ("test", 6)):
        if split == "val" and not val:
            continue
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, hw, hw, 3) if rgb else (n, hw, hw), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).astype(np.uint8).reshape(n, 1)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / f"{task}.npz", **arrays)
    return arrays


def test_npz_tasks_splits_channels_and_val_holdout(tmp_path):
    root = tmp_path / "arrays"
    gray = write_npz(root, "lungs", 2)
    rgb = write_npz(root, "cells", 5, rgb=True, val=False)
    data = build_data(cfg("npz_tasks", root, tmp_path))
    assert data.setting == "multi_input" and data.name == "arrays"
    assert [t.name for t in data.tasks] == ["cells", "lungs"] and [t.num_classes for t in data.tasks] == [5, 2]
    # cells has no val arrays: int(20 * 0.9) = 18 train, 2 val held out by split_seed
    assert data.split_sizes() == {"train": [18, 20], "val": [2, 4], "test": [6, 6]}
    assert (
        data.in_channels == 3
        and data.image_size == (8, 8)
        and data.info["val_from_file"] == {"cells": False, "lungs": True}
    )
    x, y = data.splits["test"].load(torch.tensor([0, 6]))
    assert torch.equal(x[0], torch.from_numpy(rgb["test_images"][0]).permute(2, 0, 1))
    assert torch.equal(x[1, 0], torch.from_numpy(gray["test_images"][0])) and torch.equal(x[1, 0], x[1, 2])
    assert y.tolist() == [0, 0]
    again = build_data(cfg("npz_tasks", root, tmp_path))
    assert torch.equal(again.splits["val"].load(torch.arange(2))[0], data.splits["val"].load(torch.arange(2))[0])
    resized = build_data(cfg("npz_tasks", root, tmp_path, image_size=16, tasks=["lungs"], val_fraction=0.0))
    assert resized.image_size == (16, 16) and resized.split_sizes() == {"train": [20], "val": [4], "test": [6]}
    batch = next(iter(BatchLoader(data, "train", 8, train=True, batching="per_task", seed=0)))
    assert batch.x.shape == (8, 3, 8, 8) and batch.x.dtype == torch.float32


def test_npz_tasks_float_images_and_flat_labels(tmp_path):
    write_npz(
        tmp_path / "a", "t", 3, train_images=np.full((20, 8, 8, 1), 0.5, np.float32), train_labels=np.arange(20) % 3
    )
    data = build_data(cfg("npz_tasks", tmp_path / "a", tmp_path, val_fraction=0.0))
    assert int(data.splits["train"].load(torch.tensor([0]))[0][0, 0, 0, 0]) == 128


@pytest.mark.parametrize(
    ("override", "kw", "message"),
    [
        ({"test_labels": None}, {}, r"lacks key\(s\) \['test_labels'\]"),
        ({"val_images": None}, {}, r"lacks key\(s\) \['val_images'\]"),
        ({"train_labels": np.full(20, -1)}, {}, r"train_labels: label -1 out of range"),
        ({}, {"num_classes": {"t": 2}}, r"label 3 out of range \[0, 2\)"),
        ({"train_labels": np.linspace(0, 1, 20)}, {}, "non-integer labels"),
        ({"train_labels": np.zeros((20, 2), np.int64)}, {}, r"shape \(N,\) or \(N, 1\)"),
        ({"train_labels": np.zeros(19, np.int64)}, {}, "has 19 labels for 20 images"),
        ({"test_images": np.zeros((6, 9, 9), np.uint8)}, {}, "images of different sizes across splits"),
        ({"train_images": np.zeros((20, 8, 8, 2), np.uint8)}, {}, r"\(N, H, W, 3\), got \(20, 8, 8, 2\)"),
        ({"train_images": np.full((20, 8, 8), 300.0)}, {}, "must be uint8 0..255"),
        ({}, {"tasks": ["u"]}, r"data\.tasks names \['u'\]"),
    ],
)
def test_npz_errors(tmp_path, override, kw, message):
    write_npz(tmp_path / "a", "t", 4, **override)
    with pytest.raises((DataError, ConfigError), match=message):
        build_data(cfg("npz_tasks", tmp_path / "a", tmp_path, **kw))


def test_npz_object_array_and_task_sizes(tmp_path):
    ragged = np.empty(20, dtype=object)
    ragged[:] = [np.zeros((8, 8), np.uint8)] * 10 + [np.zeros((9, 9), np.uint8)] * 10
    write_npz(tmp_path / "a", "t", 2, train_images=ragged)
    with pytest.raises(DataError, match="object array"):
        build_data(cfg("npz_tasks", tmp_path / "a", tmp_path))
    write_npz(tmp_path / "b", "small", 2, hw=8)
    write_npz(tmp_path / "b", "large", 2, hw=12)
    with pytest.raises(DataError, match=r"different image sizes .*set data\.image_size"):
        build_data(cfg("npz_tasks", tmp_path / "b", tmp_path))
    assert build_data(cfg("npz_tasks", tmp_path / "b", tmp_path, image_size=10)).image_size == (10, 10)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_through_configuration_alone(tmp_path):
    from tests.cli import records, train

    folders = tmp_path / "newdomains"
    make_tree(folders, {"d1": ["u", "v", "w"], "d2": ["u", "v", "w"]}, per_class=6)
    arrays = tmp_path / "newarrays"
    write_npz(arrays, "first", 3)
    write_npz(arrays, "second", 4, rgb=True, val=False)
    runs = {
        "folder_domains": [
            "data=folder_domains",
            f"data.root={folders}",
            "data.image_size=16",
            f"data.cache_dir={tmp_path / 'c'}",
        ],
        "npz_tasks": ["data=npz_tasks", f"data.root={arrays}", "data.image_size=16"],
    }
    for name, args in runs.items():
        results = tmp_path / f"results_{name}"
        proc = train(*args, "trainer=smoke", "method=hps", results=results)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (record,) = records(results)
        assert record["status"] == "complete" and record["experiment"] == name and record["config_unread"] == []
        assert record["data"] == (folders.name if name == "folder_domains" else arrays.name)
        tasks = ["d1", "d2"] if name == "folder_domains" else ["first", "second"]
        assert [t["column"] for t in record["tasks"]] == tasks
        assert set(record["metrics"]["test"]) == {*tasks, "avg"} and set(record["metrics"]) == {"train", "val", "test"}
