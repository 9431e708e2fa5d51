"""Domain-heterogeneity image datasets: VLCS, OfficeHome (paper Tables 2, 3) and PACS.

Each domain is a task (setting ``domain``) with its own head over the same classes.

Layouts read (``layout: auto`` picks the list files when they are all present):

- ``folders`` (DomainBed): ``<root>/<domain>/<class>/<image>``; classes are the sorted class
  folder names and must be the same in every domain. VLCS domain folders ``V, L, C, S``;
  OfficeHome ``Product, Art, Clipart, Real World`` (or ``Real_World``); PACS ``art_painting,
  cartoon, photo, sketch``.
- ``lists`` (the authors' files, in ``<root>`` or ``list_dir``): one ``<path> <label>`` line per
  image. VLCS ``{PASCAL,LABELME,CALTECH,SUN}_{train,crossval}.txt`` (path relative to root);
  OfficeHome ``{Product,Art,Clipart,Real_World}_img_label_list.txt`` (the authors' paths are
  absolute on their machine: a path is tried as given, relative to root, then by its trailing
  components under root).

``root`` may be the dataset folder itself or a folder containing it (e.g. ``.../pacs`` or
``.../pacs/PACS``).

Splits (``split``; ``auto`` = the dataset's protocol):

- ``lists`` (VLCS): train = ``_train``, test = ``_crossval`` (what the authors report).
- ``pooled`` (OfficeHome): all domains' images concatenated in P, A, C, R order and cut 90/10 by
  the authors' ``random.seed(split_seed); random.shuffle`` (:func:`~molabench.data.splits.authors_split`);
  with the authors' list files this is their split exactly.
- ``per_domain`` (PACS; VLCS/OfficeHome folders): a seeded ``test_fraction`` of every domain.

``val`` is always a seeded ``val_fraction`` of every domain's train part (clean model
selection); ``val_fraction: 0`` drops it. ``split_seed`` (default: ``seed``) fixes the splits.

Images are decoded once at ``image_size`` (shorter side resized, centre crop; the authors' test
transform) into a uint8 cache (:mod:`molabench.data.cache`) and held in memory; the authors'
train recipe runs batch-wise (:func:`~molabench.data.augment.domain_recipe`).

These are presets over the generic folder machinery of :mod:`molabench.data.generic` (class-folder
scan, cached decoding, seeded cuts): a spec adds the dataset's domain names, paper columns, list
files and split protocol. Data in the same layout under other names: ``data=folder_domains``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from molabench.data import DATASETS
from molabench.data.augment import domain_recipe
from molabench.data.base import MultiTaskData, TaskSpec
from molabench.data.generic import GroupFiles, decode_groups, finish_splits, scan_class_folders, seeded_train_test
from molabench.data.listfile import read_list_file, resolve_listed
from molabench.data.splits import check_fraction
from molabench.errors import ConfigError, DataError

# The authors normalise with CLIP's statistics in their VLCS/OfficeHome transforms.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Domain:
    name: str  # task name
    column: str  # paper column
    dirs: tuple[str, ...]  # folder names in the DomainBed layout (first found wins)
    list_stem: str | None = None  # prefix of the authors' list files


@dataclass(frozen=True)
class FolderSpec:
    name: str
    domains: tuple[Domain, ...]
    subdirs: tuple[str, ...]  # names the dataset folder has inside a parent root
    num_classes: int
    split: str  # protocol for split=auto
    test_fraction: float
    list_style: str | None = None  # "vlcs" | "officehome"


SPECS: dict[str, FolderSpec] = {
    "vlcs": FolderSpec(
        "vlcs",
        (
            Domain("VOC2007", "V", ("V", "VOC2007", "PASCAL"), "PASCAL"),
            Domain("LabelMe", "L", ("L", "LabelMe", "LABELME"), "LABELME"),
            Domain("Caltech101", "C", ("C", "Caltech101", "CALTECH"), "CALTECH"),
            Domain("SUN09", "S", ("S", "SUN09", "SUN"), "SUN"),
        ),
        ("VLCS", "vlcs"),
        5,
        "lists",
        0.3,
        "vlcs",
    ),
    "officehome": FolderSpec(
        "officehome",
        (
            Domain("Product", "P", ("Product",), "Product"),
            Domain("Art", "A", ("Art",), "Art"),
            Domain("Clipart", "C", ("Clipart",), "Clipart"),
            Domain("Real_World", "R", ("Real World", "Real_World", "RealWorld"), "Real_World"),
        ),
        ("office_home", "OfficeHome", "officehome", "OfficeHomeDataset_10072016"),
        65,
        "pooled",
        0.1,
        "officehome",
    ),
    "pacs": FolderSpec(
        "pacs",
        (
            Domain("art_painting", "Art", ("art_painting",)),
            Domain("cartoon", "Cartoon", ("cartoon",)),
            Domain("photo", "Photo", ("photo",)),
            Domain("sketch", "Sketch", ("sketch",)),
        ),
        ("PACS", "pacs"),
        7,
        "per_domain",
        0.1,
    ),
}


def _list_files(spec: FolderSpec, domain: Domain, list_dir: Path) -> dict[str, Path]:
    if spec.list_style == "vlcs":
        return {s: list_dir / f"{domain.list_stem}_{s}.txt" for s in ("train", "crossval")}
    if spec.list_style == "officehome":
        return {"all": list_dir / f"{domain.list_stem}_img_label_list.txt"}
    return {}


def _has_lists(spec: FolderSpec, domains: Sequence[Domain], list_dir: Path) -> bool:
    files = [f for d in domains for f in _list_files(spec, d, list_dir).values()]
    return bool(files) and all(f.is_file() for f in files)


def _domain_dir(root: Path, domain: Domain) -> Path | None:
    return next((root / d for d in domain.dirs if (root / d).is_dir()), None)


def _resolve_root(spec: FolderSpec, root: Path, list_dir: Path | None) -> Path:
    """The dataset folder: ``root`` itself, or one of the dataset's usual names inside it."""
    if not root.is_dir():
        raise DataError(f"{spec.name} root {root} does not exist; set data.root=DIR (the folder holding the domains)")

    def looks_right(p: Path) -> bool:
        return any(_domain_dir(p, d) for d in spec.domains) or _has_lists(spec, spec.domains, list_dir or p)

    for candidate in (root, *(root / s for s in spec.subdirs)):
        if candidate.is_dir() and looks_right(candidate):
            return candidate
    expected = ", ".join(d.dirs[0] for d in spec.domains)
    raise DataError(
        f"{root} does not hold {spec.name}: expected domain folders ({expected}) in it or in one of its "
        f"subfolders {list(spec.subdirs)}; set data.root to that folder"
    )


def _select(spec: FolderSpec, domains: Sequence[str] | None) -> list[Domain]:
    if not domains:
        return list(spec.domains)
    chosen = []
    for want in domains:
        key = str(want).lower()
        match = [d for d in spec.domains if key in {d.name.lower(), d.column.lower(), *(x.lower() for x in d.dirs)}]
        if not match:
            names = [f"{d.name} ({d.column})" for d in spec.domains]
            raise ConfigError(f"unknown {spec.name} domain {want!r}; data.domains must be a subset of {names}")
        if match[0] in chosen:
            raise ConfigError(f"data.domains lists {want!r} twice")
        chosen.append(match[0])
    return chosen


def _scan_folders(spec: FolderSpec, root: Path, domains: Sequence[Domain]) -> tuple[list[str], list[GroupFiles]]:
    groups = []
    for d in domains:
        ddir = _domain_dir(root, d)
        if ddir is None:
            raise DataError(f"{spec.name}: domain folder {d.dirs[0]!r} missing in {root}; check data.root or data.domains")
        groups.append((d.name, ddir))
    classes_of, out = scan_class_folders(spec.name, groups, word="domain", same_classes=True)
    classes = classes_of[0]
    if len(classes) != spec.num_classes:
        warnings.warn(f"{spec.name}: found {len(classes)} classes in {root}, the release has {spec.num_classes}", stacklevel=3)
    return classes, out


def _read_list(root: Path, list_file: Path, num_classes: int) -> tuple[list[Path], list[int]]:
    rows = read_list_file(list_file, num_classes)
    return [resolve_listed(root, text, list_file, n) for n, text, _ in rows], [y for _, _, y in rows]


def _scan_lists(spec: FolderSpec, root: Path, list_dir: Path, domains: Sequence[Domain]) -> list[GroupFiles]:
    out = []
    for d in domains:
        paths: list[Path] = []
        labels: list[int] = []
        index: dict[Path, int] = {}
        subsets: dict[str, list[int]] = {}
        for subset, f in _list_files(spec, d, list_dir).items():
            if not f.is_file():
                raise DataError(f"{spec.name}: list file {f} missing; add it or use data.layout=folders")
            pos = []
            for p, y in zip(*_read_list(root, f, spec.num_classes), strict=True):
                if p not in index:  # an image listed in two files is decoded once
                    index[p] = len(paths)
                    paths.append(p)
                    labels.append(y)
                pos.append(index[p])
            subsets[subset] = pos
        out.append(GroupFiles(paths, labels, subsets))
    return out


def _assign_splits(
    spec: FolderSpec, split: str, files: list[GroupFiles], test_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Global sample indices (train, test) over the concatenation of all domains' images."""
    sizes = [len(f.paths) for f in files]
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    if split == "lists":
        if not all("train" in f.subsets for f in files):
            raise ConfigError(f"data.split=lists needs the authors' list files of {spec.name}; use data.split=per_domain")
        train = [o + i for f, o in zip(files, offsets, strict=True) for i in f.subsets["train"]]
        test = [o + i for f, o in zip(files, offsets, strict=True) for i in f.subsets["crossval"]]
        return torch.tensor(train, dtype=torch.long), torch.tensor(test, dtype=torch.long)
    if split in ("pooled", "per_domain"):
        return seeded_train_test(split, sizes, test_fraction, seed)
    raise ConfigError(f"data.split must be auto, lists, pooled or per_domain, got {split!r}")


def build_folder_dataset(
    spec: FolderSpec,
    root: str | os.PathLike,
    *,
    domains: Sequence[str] | None = None,
    image_size: int = 224,
    seed: int = 0,
    split_seed: int | None = None,
    split: str = "auto",
    layout: str = "auto",
    list_dir: str | os.PathLike | None = None,
    test_fraction: float | None = None,
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    max_unreadable: int = 10,
    augment: bool = True,
    crop_scale: Sequence[float] = (0.7, 1.0),
) -> MultiTaskData:
    """Build a domain dataset described by ``spec`` (see the module docstring for every option)."""
    size = int(image_size)
    if size < 8:
        raise ConfigError(f"data.image_size must be >= 8, got {size}")
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", spec.test_fraction if test_fraction is None else test_fraction, False)
    seed = int(seed if split_seed is None else split_seed)
    chosen = _select(spec, domains)
    base = _resolve_root(spec, Path(root).expanduser(), Path(list_dir).expanduser() if list_dir else None)
    ldir = Path(list_dir).expanduser() if list_dir else base
    if layout == "auto":
        layout = "lists" if _has_lists(spec, chosen, ldir) else "folders"
    if layout == "lists":
        if spec.list_style is None:
            raise ConfigError(f"{spec.name} has no list-file layout; use data.layout=folders")
        files = _scan_lists(spec, base, ldir, chosen)
        classes = [str(c) for c in range(spec.num_classes)]
    elif layout == "folders":
        classes, files = _scan_folders(spec, base, chosen)
    else:
        raise ConfigError(f"data.layout must be auto, folders or lists, got {layout!r}")
    if split == "auto":
        split = spec.split if (spec.split != "lists" or layout == "lists") else "per_domain"

    names = [d.name for d in chosen]
    # cache entries "<dataset>-<domain>"; an unreadable image keeps a black slot (list positions stay valid)
    decoded = decode_groups(spec.name, names, files, size, cache_dir, use_cache, max_unreadable)
    train, test = _assign_splits(spec, split, files, test_fraction, seed)
    splits = finish_splits(
        spec.name, decoded, {"train": train, "test": test}, val_fraction=val_fraction, seed=seed, names=names,
        classes_of=[classes] * len(chosen), word="domain",
    )  # fmt: skip
    return MultiTaskData(
        name=spec.name,
        setting="domain",
        tasks=[TaskSpec(d.name, len(classes), column=d.column) for d in chosen],
        splits=splits,  # type: ignore[arg-type]
        mean=CLIP_MEAN,
        std=CLIP_STD,
        augment=domain_recipe(scale=crop_scale) if augment else None,
        info={"root": str(base), "layout": layout, "split": split, "split_seed": seed, "classes": classes,
              "image_size": size, "skipped_images": decoded.skipped},
    )  # fmt: skip


def _register(name: str) -> None:
    # A partial keeps build_folder_dataset's signature, so misspelled config keys are caught.
    DATASETS.register(name)(functools.partial(build_folder_dataset, SPECS[name]))


for _name in SPECS:
    _register(_name)


__all__ = ["CLIP_MEAN", "CLIP_STD", "SPECS", "Domain", "FolderSpec", "build_folder_dataset"]
