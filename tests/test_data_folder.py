"""VLCS / OfficeHome / PACS on jpg folders and list files written by the tests, plus the shared PACS."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from molabench.data import build_data, cache, folder
from molabench.data.loader import BatchLoader
from molabench.errors import DataError

SHARED_PACS = Path(__file__).parents[1].parent / "shared" / "data" / "pacs"


def write_jpg(path: Path, seed: int, size=(20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def domainbed(root: Path, name: str, per_class: int = 4) -> list[Path]:
    """A DomainBed tree with the dataset's real domain folders and class count."""
    spec = folder.SPECS[name]
    files = []
    for d, dom in enumerate(spec.domains):
        for c in range(spec.num_classes):
            for i in range(per_class):
                p = root / dom.dirs[0] / f"class{c:02d}" / f"img{i}.jpg"
                write_jpg(p, seed=d * 1000 + c * 10 + i)
                files.append(p)
    return files


def cfg(name: str, root: Path, tmp_path: Path, **kw):
    return {"name": name, "root": str(root), "image_size": 16, "seed": 0, "cache_dir": str(tmp_path / "cache"), **kw}


@pytest.fixture()
def pacs_root(tmp_path):
    root = tmp_path / "pacs" / "PACS"
    domainbed(root, "pacs", per_class=10)
    return root


def test_pacs_folders(pacs_root, tmp_path):
    data = build_data(cfg("pacs", pacs_root, tmp_path))
    assert data.setting == "domain" and [t.name for t in data.tasks] == ["art_painting", "cartoon", "photo", "sketch"]
    assert all(t.num_classes == 7 for t in data.tasks)
    # 70 images per domain: 10% test (7), then 10% of the 63 left for val (7)
    assert data.split_sizes() == {"train": [56] * 4, "val": [7] * 4, "test": [7] * 4}
    x, y = data.splits["train"].load(torch.arange(3))
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 16, 16) and y.dtype == torch.long
    assert data.info["classes"] == [f"class{c:02d}" for c in range(7)]
    batch = next(iter(BatchLoader(data, "train", 32, train=True, seed=0)))
    assert batch.x.shape == (32, 3, 16, 16) and torch.isfinite(batch.x).all()


def test_parent_root_and_domain_subset(pacs_root, tmp_path):
    data = build_data(cfg("pacs", pacs_root.parent, tmp_path, domains=["photo", "Sketch"]))
    assert [t.name for t in data.tasks] == ["photo", "sketch"] and data.info["root"] == str(pacs_root)


def test_splits_disjoint_and_seeded(pacs_root, tmp_path):
    def split_images(seed):
        d = build_data(cfg("pacs", pacs_root, tmp_path, split_seed=seed))
        return {k: {tuple(im.flatten()[:32].tolist()) for im in s.images} for k, s in d.splits.items()}

    a, b, c = split_images(0), split_images(0), split_images(1)
    assert a == b and a != c
    assert not (a["train"] & a["test"]) and not (a["train"] & a["val"]) and not (a["val"] & a["test"])


def test_bad_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="does not hold pacs"):
        build_data(cfg("pacs", tmp_path / "empty", tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        build_data(cfg("pacs", tmp_path / "missing", tmp_path))


def test_empty_class_folder(pacs_root, tmp_path):
    (pacs_root / "photo" / "class99").mkdir()
    with pytest.raises(DataError, match=r"class folders .* differ"):
        build_data(cfg("pacs", pacs_root, tmp_path))
    for d in ("art_painting", "cartoon", "sketch"):
        (pacs_root / d / "class99").mkdir()
    with pytest.raises(DataError, match=r"class99 holds no images"):
        build_data(cfg("pacs", pacs_root, tmp_path))


def test_unreadable_image_skipped_with_warning(pacs_root, tmp_path):
    (pacs_root / "cartoon" / "class03" / "img0.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_data(cfg("pacs", pacs_root, tmp_path))
    messages = [str(w.message) for w in caught]
    assert any("unreadable image skipped" in m and "img0.jpg" in m for m in messages)
    assert any("skipped 1 unreadable" in m for m in messages)
    assert len(data.info["skipped_images"]) == 1
    assert sum(sum(v) for v in data.split_sizes().values()) == 4 * 70 - 1
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):  # warned again when read from the cache
        build_data(cfg("pacs", pacs_root, tmp_path))
    with pytest.raises(DataError, match="unreadable"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_data(cfg("pacs", pacs_root, tmp_path, max_unreadable=0))


def test_cache_is_reused_and_invalidated(pacs_root, tmp_path, monkeypatch):
    first = build_data(cfg("pacs", pacs_root, tmp_path))
    monkeypatch.setattr(cache, "decode_files", lambda *a, **k: pytest.fail("decoded although cached"))
    again = build_data(cfg("pacs", pacs_root, tmp_path))
    assert torch.equal(first.splits["train"].images, again.splits["train"].images)
    write_jpg(pacs_root / "photo" / "class00" / "img0.jpg", seed=99999)  # changed file -> new entry
    with pytest.raises(pytest.fail.Exception, match="decoded although cached"):
        build_data(cfg("pacs", pacs_root, tmp_path))


def vlcs_lists(root: Path) -> None:
    """The authors' VLCS list files: 'relpath label' lines, train and crossval per domain."""
    spec = folder.SPECS["vlcs"]
    for dom in spec.domains:
        for subset, idx in (("train", range(0, 3)), ("crossval", range(3, 4))):
            lines = [f"{dom.dirs[0]}/class{c:02d}/img{i}.jpg {c}" for c in range(5) for i in idx]
            (root / f"{dom.list_stem}_{subset}.txt").write_text("\n".join(lines) + "\n")


def test_vlcs_list_files(tmp_path):
    root = tmp_path / "VLCS"
    domainbed(root, "vlcs", per_class=4)
    vlcs_lists(root)
    data = build_data(cfg("vlcs", root, tmp_path, val_fraction=0.0))
    assert data.info["layout"] == "lists" and data.info["split"] == "lists"
    assert [t.column for t in data.tasks] == ["V", "L", "C", "S"]
    assert data.split_sizes() == {"train": [15] * 4, "test": [5] * 4}
    folders = build_data(cfg("vlcs", root, tmp_path, layout="folders"))
    assert folders.info["split"] == "per_domain" and sum(folders.split_sizes()["test"]) == 4 * 6


def test_list_naming_missing_image(tmp_path):
    root = tmp_path / "VLCS"
    domainbed(root, "vlcs", per_class=4)
    vlcs_lists(root)
    (root / "SUN_crossval.txt").write_text("S/class00/nothere.jpg 0\n")
    with pytest.raises(DataError, match=r"SUN_crossval\.txt:1 names image 'S/class00/nothere\.jpg'"):
        build_data(cfg("vlcs", root, tmp_path))


def test_list_label_out_of_range(tmp_path):
    root = tmp_path / "VLCS"
    domainbed(root, "vlcs", per_class=4)
    vlcs_lists(root)
    (root / "SUN_train.txt").write_text("S/class00/img0.jpg 5\n")
    with pytest.raises(DataError, match="label 5 out of range"):
        build_data(cfg("vlcs", root, tmp_path))


def test_officehome_authors_lists_and_pooled_split(tmp_path):
    root = tmp_path / "office_home"
    domainbed(root, "officehome", per_class=1)  # 65 classes x 4 domains
    lines_per_domain = []
    for dom in folder.SPECS["officehome"].domains:
        # the authors' lists carry absolute paths of their machine, with Real_World for "Real World"
        lines = [f"/mnt/data/OfficeHome_compress/{dom.list_stem}/class{c:02d}/img0.jpg {c}" for c in range(65)]
        (root / f"{dom.list_stem}_img_label_list.txt").write_text("\n".join(lines) + "\n")
        lines_per_domain.append(lines)
    with pytest.warns(UserWarning, match="has no training image"):  # one image per class and domain
        data = build_data(cfg("officehome", root, tmp_path, val_fraction=0.0))
    assert data.info["layout"] == "lists" and data.info["split"] == "pooled" and data.info["split_seed"] == 0
    assert [t.column for t in data.tasks] == ["P", "A", "C", "R"]
    # the authors: concatenate P, A, C, R; random.seed(0); random.shuffle; first int(0.9 N) train
    pooled = [line for lines in lines_per_domain for line in lines]
    random.seed(0)
    random.shuffle(pooled)
    expected_test = pooled[int(len(pooled) * 0.9) :]
    test = data.splits["test"]
    got = [(int(t), int(y)) for t, y in zip(test.tasks, test.targets, strict=True)]
    stems = [d.list_stem for d in folder.SPECS["officehome"].domains]
    want = [(next(k for k, s in enumerate(stems) if f"/{s}/" in line), int(line.rsplit(maxsplit=1)[1])) for line in expected_test]
    assert got == want


@pytest.mark.skipif(not SHARED_PACS.is_dir(), reason=f"shared PACS data not found at {SHARED_PACS}")
@pytest.mark.parametrize("root", [SHARED_PACS / "PACS", SHARED_PACS])
def test_shared_pacs_registry(root, tmp_path):
    data = build_data({"name": "pacs", "root": str(root), "image_size": 32, "seed": 0, "domains": ["photo"], "cache_dir": str(tmp_path)})
    assert sum(sum(v) for v in data.split_sizes().values()) == 1670
    assert data.info["classes"] == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert data.image_size == (32, 32)
