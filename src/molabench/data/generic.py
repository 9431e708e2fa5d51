"""Your own data by configuration: three generic layouts, no code needed (see ``docs/own_data.md``).

Registered builders (``data=<name>``, configs in ``configs/data/``):

- ``folder_domains`` (setting ``domain``): ``<root>/<domain>/<class>/<image>``, the DomainBed
  layout. Every domain must have the same class folders; each domain is a task with its own head.
- ``folder_tasks`` (setting ``multi_input``): ``<root>/<task>/<class>/<image>``; each task has its
  own class folders (its own label set).
- ``npz_tasks`` (setting ``multi_input``): ``<root>/<task>.npz`` with MedMNIST's keys
  ``train_images``, ``train_labels``, ``test_images``, ``test_labels`` and optionally
  ``val_images``, ``val_labels``; images (N, H, W), (N, H, W, 1) or (N, H, W, 3), uint8 (or float
  in [0, 1]); labels (N,) or (N, 1) integers ``0 .. K-1``.

Names: domains and tasks are the sorted folder (file) names, classes the sorted class-folder
names (a class's label is its position); records and tables use these names as column names
unless ``columns`` renames them. Hidden entries (``.git``, ``__MACOSX``) are ignored.

Images: folder images are decoded once at ``image_size`` (shorter side resized, centre crop, RGB;
grayscale files tiled to three channels) into the uint8 disk cache of :mod:`molabench.data.cache`
and held in memory; npz arrays are held as uint8 at their own channel count and resized once at
load when ``image_size`` is set. Train-time augmentation runs batch-wise (``augment``).

Splits of the folder layouts (``split``), all fixed by ``split_seed`` (default: ``seed``):

- ``per_domain`` (``per_task`` is the same): a seeded ``test_fraction`` of every domain/task;
- ``pooled``: all images shuffled together, the last ``test_fraction`` is the test set;
- ``lists``: ``train.txt``, ``test.txt`` and optionally ``val.txt`` in ``list_dir`` (default:
  ``root``), one image path per line relative to ``root`` (``<domain>/<class>/<file>``); a trailing
  ``<label>`` as in the named datasets' list files is accepted and checked against the class
  folder. Unlisted images are left out.

``val`` is ``val.txt`` when given, else a seeded ``val_fraction`` of every domain/task's train
part (``val_fraction: 0`` drops it). npz files bring their own train/test (and val) arrays.

The machinery here (class-folder scan, cached decoding, seeded cuts) also serves the named folder
datasets (:mod:`molabench.data.folder`).
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from molabench.data import DATASETS
from molabench.data.augment import HorizontalFlip, RandomResizedCropFlip, domain_recipe
from molabench.data.base import BatchAugment, MultiTaskData, Setting, SplitSource, TaskSpec, TensorSplit
from molabench.data.cache import cached_decode
from molabench.data.images import IMAGE_EXTENSIONS, list_images, resize_uint8
from molabench.data.listfile import resolve_listed
from molabench.data.sources import PartsSplit
from molabench.data.splits import authors_split, check_fraction, holdout
from molabench.errors import ConfigError, DataError

AUGMENTS = ("none", "flip", "crop_flip", "domain_recipe")
SPLITS = ("train", "val", "test")
FOLDER_SPLITS = ("per_domain", "per_task", "pooled", "lists")
NPZ_REQUIRED = ("train_images", "train_labels", "test_images", "test_labels")
# Names a task may not have: the records keep the task average under "avg" beside the tasks.
RESERVED_NAMES = frozenset({"avg"})
HALF = (0.5, 0.5, 0.5)


# ----------------------------------------------------------------------------- shared helpers


def visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` sorted by name, without hidden ones (``.git``, ``__MACOSX``)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))), key=lambda p: p.name
    )


def require_root(root: str | os.PathLike | None, builder: str, layout: str) -> Path:
    """``root`` as a path; a one-line error when it is unset, missing or not a folder."""
    if root is None or not str(root).strip():
        raise ConfigError(f"data={builder} needs data.root: set data.root=DIR, the folder laid out as {layout}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data.root {path} does not exist; set data.root=DIR, the folder laid out as {layout}")
    if not path.is_dir():
        raise DataError(f"data.root {path} is not a folder; set data.root=DIR, the folder laid out as {layout}")
    return path


def check_image_size(image_size: int | None, allow_none: bool = False) -> int | None:
    """``data.image_size`` as an int >= 8 (or None, the data's own size, where allowed)."""
    if image_size is None and allow_none:
        return None
    try:
        size = int(image_size)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"data.image_size must be an integer >= 8, got {image_size!r}") from None
    if size < 8:
        raise ConfigError(f"data.image_size must be >= 8, got {size}")
    return size


def select_names(available: Sequence[str], wanted: Sequence[str] | None, key: str, where: Path) -> list[str]:
    """``wanted`` (in its order) checked against ``available``; all of ``available`` when empty."""
    if not wanted:
        return list(available)
    if isinstance(wanted, str):
        wanted = [wanted]
    chosen = [str(w) for w in wanted]
    unknown = [w for w in chosen if w not in available]
    if unknown:
        raise ConfigError(f"data.{key} names {unknown}, not found in {where}; choose from {list(available)}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"data.{key} lists a name twice: {chosen}")
    return chosen


def check_task_names(names: Sequence[str], word: str, where: Path) -> None:
    """Reject task names the records use for something else (the ``avg`` column)."""
    clash = [n for n in names if n.lower() in RESERVED_NAMES]
    if clash:
        raise DataError(f"{word} name {clash[0]!r} in {where} clashes with the records' average column; rename it")


def build_augment(choice: str | bool | None, crop_scale: Sequence[float] = (0.7, 1.0)) -> BatchAugment | None:
    """The batch-wise train augmentation named by ``data.augment``."""
    if choice is None or choice is False or choice == "none":
        return None
    scale = (float(crop_scale[0]), float(crop_scale[1]))
    if choice == "flip":
        return HorizontalFlip()
    if choice == "crop_flip":
        return RandomResizedCropFlip(scale=scale)
    if choice == "domain_recipe":
        return domain_recipe(scale=scale)
    raise ConfigError(f"data.augment must be one of {', '.join(AUGMENTS)}, got {choice!r}")


def check_stats(name: str, value: Sequence[float] | float) -> tuple[float, float, float]:
    """``data.mean`` / ``data.std``: one value for every channel or one per channel (R, G, B)."""
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or (name == "std" and min(values) <= 0):
        raise ConfigError(
            f"data.{name} must be one number or three (R, G, B){', all > 0' if name == 'std' else ''}, got {value!r}"
        )
    return values[0], values[1], values[2]


def task_specs(names: Sequence[str], num_classes: Sequence[int], columns: Mapping[str, str] | None) -> list[TaskSpec]:
    """One TaskSpec per name; ``columns`` optionally renames some for the tables."""
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise ConfigError(f"data.columns renames {unknown}, which are not among the selected {list(names)}")
    return [
        TaskSpec(n, int(k), column=str(columns[n]) if n in columns else None)
        for n, k in zip(names, num_classes, strict=True)
    ]


# ----------------------------------------------------------------------------- folders


@dataclass
class GroupFiles:
    """The images of one domain or task: file paths, class labels, and named subsets (list files)."""

    paths: list[Path]
    labels: list[int]
    subsets: dict[str, list[int]] = field(default_factory=dict)  # split name -> positions in paths


def scan_class_folders(
    dataset: str, groups: Sequence[tuple[str, Path]], *, word: str = "domain", same_classes: bool = True
) -> tuple[list[list[str]], list[GroupFiles]]:
    """Class names and image files of every ``(name, folder)`` in ``groups`` (``<folder>/<class>/<image>``).

    With ``same_classes`` every group must have the class folders of the first one.
    """
    classes_of: list[list[str]] = []
    out: list[GroupFiles] = []
    for _, gdir in groups:
        class_dirs = visible_dirs(gdir)
        if not class_dirs:
            loose = list_images(gdir)
            what = f"its {len(loose)} image(s) lie directly in it" if loose else "it is empty"
            raise DataError(
                f"{dataset}: {word} folder {gdir} has no class folders ({what}); expected <root>/<{word}>/<class>/<image>"
            )
        names = [p.name for p in class_dirs]
        if same_classes and classes_of and names != classes_of[0]:
            missing, extra = sorted(set(classes_of[0]) - set(names)), sorted(set(names) - set(classes_of[0]))
            raise DataError(
                f"{dataset}: class folders of {gdir} differ from those of {groups[0][1]} (missing {missing}, extra {extra}); "
                f"every {word} needs the same class folders (data=folder_tasks gives each folder its own classes)"
            )
        paths: list[Path] = []
        labels: list[int] = []
        for label, cdir in enumerate(class_dirs):
            files = list_images(cdir)
            if not files:
                raise DataError(
                    f"{dataset}: class folder {cdir} holds no images ({' '.join(IMAGE_EXTENSIONS)}); "
                    "remove it or restore its files"
                )
            paths += files
            labels += [label] * len(files)
        classes_of.append(names)
        out.append(GroupFiles(paths, labels))
    return classes_of, out


@dataclass
class DecodedGroups:
    """All groups' images decoded and concatenated, with a mask of the ones that decoded."""

    images: Tensor  # uint8 (N, 3, S, S); unreadable images keep a black slot
    labels: Tensor  # int64 (N,)
    groups: Tensor  # int64 (N,) task id
    valid: Tensor  # bool (N,)
    skipped: list[str]


def decode_groups(
    dataset: str,
    names: Sequence[str],
    files: Sequence[GroupFiles],
    size: int,
    cache_dir: str | os.PathLike | None,
    use_cache: bool,
    max_unreadable: int,
) -> DecodedGroups:
    """Decode every group's files at ``size`` through the uint8 cache (entry ``<dataset>-<name>``).

    An unreadable image keeps a black slot (list positions stay valid) and is marked invalid; more
    than ``max_unreadable`` of them stop with a DataError, fewer are warned about.
    """
    images, labels, groups, keeps, skipped = [], [], [], [], []
    for t, (name, f) in enumerate(zip(names, files, strict=True)):
        x, failed = cached_decode(f.paths, size, cache_dir, f"{dataset}-{name}", use_cache=use_cache)
        keep = torch.ones(len(f.paths), dtype=torch.bool)
        keep[failed] = False
        full = torch.zeros((len(f.paths), 3, size, size), dtype=torch.uint8)
        full[keep] = x
        images.append(full)
        labels.append(torch.tensor(f.labels, dtype=torch.long))
        groups.append(torch.full((len(f.paths),), t, dtype=torch.long))
        keeps.append(keep)
        skipped += [str(f.paths[i]) for i in failed]
    if skipped:
        if len(skipped) > max_unreadable:
            raise DataError(
                f"{dataset}: {len(skipped)} unreadable images (first: {skipped[0]}), more than "
                f"data.max_unreadable={max_unreadable}; re-extract the dataset or raise data.max_unreadable"
            )
        for path in skipped:  # tolerated: name each file (too many: the one error above, not a line per file)
            warnings.warn(f"unreadable image skipped: {path}", stacklevel=3)
        warnings.warn(f"{dataset}: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}", stacklevel=3)
    return DecodedGroups(torch.cat(images), torch.cat(labels), torch.cat(groups), torch.cat(keeps), skipped)


def seeded_train_test(split: str, sizes: Sequence[int], test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Global indices (train, test) over the concatenated groups: ``pooled`` or per group."""
    if split == "pooled":
        return authors_split(sum(sizes), 1.0 - test_fraction, seed)
    if split in ("per_domain", "per_task"):
        groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))
        return holdout(groups, test_fraction, seed)
    raise ConfigError(f"data.split must be one of {', '.join(FOLDER_SPLITS)}, got {split!r}")


def finish_splits(
    dataset: str,
    decoded: DecodedGroups,
    parts: Mapping[str, Tensor],
    *,
    val_fraction: float,
    seed: int,
    names: Sequence[str],
    classes_of: Sequence[Sequence[str]],
    word: str = "domain",
) -> dict[str, TensorSplit]:
    """In-memory splits from global indices ``parts`` (``train``, ``test``, maybe ``val``).

    Unreadable images are dropped; without a ``val`` part, a seeded ``val_fraction`` of every
    group's train part becomes ``val``. A class without a training image is warned about.
    """
    valid = decoded.valid
    parts = {k: v[valid[v]] for k, v in parts.items()}
    train = parts["train"]
    if "val" not in parts and val_fraction > 0:
        kept, held = holdout(decoded.groups[train], val_fraction, seed)
        parts = {"train": train[kept], "val": train[held], "test": parts["test"]}
    else:
        parts = {k: parts[k] for k in SPLITS if k in parts}
    train = parts["train"]
    counts = torch.tensor([len(c) for c in classes_of], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    present = torch.bincount(decoded.labels[train] + offsets[decoded.groups[train]], minlength=int(offsets[-1]))
    if bool((present == 0).any()):
        flat = int(torch.nonzero(present == 0)[0])
        t = int(torch.searchsorted(offsets, flat, right=True)) - 1
        c = flat - int(offsets[t])
        warnings.warn(f"{dataset}: class {classes_of[t][c]!r} of {word} {names[t]} has no training image", stacklevel=3)
    return {
        name: TensorSplit(decoded.images[idx], decoded.labels[idx], decoded.groups[idx]) for name, idx in parts.items()
    }


def _read_split_list(
    list_file: Path, base: Path, index: Mapping[str, tuple[int, int]], chosen: set[str], seen: dict[int, str]
) -> list[int]:
    """Global indices of the images a split list names (images of unselected groups are skipped)."""
    try:
        lines = list_file.read_text().splitlines()
    except OSError as e:
        raise DataError(f"cannot read list file {list_file} ({e.strerror}); check data.list_dir") from None
    out = []
    for n, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        label = None
        fields = text.rsplit(maxsplit=1)
        if len(fields) == 2 and fields[1].lstrip("-").isdigit() and not (base / text).is_file():
            text, label = fields[0], int(fields[1])
        path = os.path.abspath(resolve_listed(base, text, list_file, n, search_tails=False))
        rel = Path(os.path.relpath(path, base)).parts
        if rel and rel[0] not in chosen and rel[0] != "..":
            continue  # a domain/task left out by data.domains / data.tasks
        if path not in index:
            raise DataError(
                f"{list_file}:{n}: {text!r} is not an image in a <name>/<class>/ folder of {base}; fix the line"
            )
        pos, y = index[path]
        if label is not None and label != y:
            raise DataError(
                f"{list_file}:{n}: label {label} of {text!r} disagrees with its class folder (label {y}: classes are "
                "numbered by sorted folder name); fix or drop the label"
            )
        if pos in seen:
            raise DataError(
                f"{list_file}:{n}: {text!r} is listed in {seen[pos]} already; an image belongs to one split"
            )
        seen[pos] = list_file.name
        out.append(pos)
    return sorted(out)


def _list_splits(base: Path, list_dir: Path, chosen: Sequence[str], files: Sequence[GroupFiles]) -> dict[str, Tensor]:
    present = {s: list_dir / f"{s}.txt" for s in SPLITS if (list_dir / f"{s}.txt").is_file()}
    if "train" not in present or "test" not in present:
        raise DataError(
            f"data.split=lists needs train.txt and test.txt (val.txt optional) in {list_dir}, one image path per line "
            f"relative to {base}; write them, set data.list_dir, or use data.split=per_domain"
        )
    index: dict[str, tuple[int, int]] = {}
    offset = 0
    for f in files:
        for i, (p, y) in enumerate(zip(f.paths, f.labels, strict=True)):
            index[os.path.abspath(p)] = (offset + i, y)
        offset += len(f.paths)
    seen: dict[int, str] = {}
    return {
        s: torch.tensor(_read_split_list(present[s], base, index, set(chosen), seen), dtype=torch.long)
        for s in SPLITS
        if s in present
    }


def _check_group_counts(dataset: str, splits: Mapping[str, SplitSource], names: Sequence[str], word: str) -> None:
    for split, source in splits.items():
        counts = torch.bincount(source.tasks, minlength=len(names)).tolist()
        empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
        if empty and split == "train":
            raise DataError(
                f"{dataset}: {word} {empty[0]!r} has no training image after the split; add images or lower "
                "data.test_fraction / data.val_fraction"
            )
        if empty:
            warnings.warn(
                f"{dataset}: {word} {empty[0]!r} has no {split} image; its {split} metrics will be missing",
                stacklevel=3,
            )


def build_image_folders(
    builder: str,
    setting: Setting,
    *,
    root: str | os.PathLike | None,
    subset: Sequence[str] | None,
    image_size: int,
    seed: int,
    split_seed: int | None,
    split: str,
    list_dir: str | os.PathLike | None,
    test_fraction: float,
    val_fraction: float,
    cache_dir: str | os.PathLike | None,
    use_cache: bool,
    max_unreadable: int,
    augment: str | bool | None,
    crop_scale: Sequence[float],
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    columns: Mapping[str, str] | None,
    title: str | None,
) -> MultiTaskData:
    """``<root>/<group>/<class>/<image>`` as a ``domain`` (shared classes) or ``multi_input`` dataset."""
    word = "domain" if setting == "domain" else "task"
    key = f"{word}s"
    layout = f"<root>/<{word}>/<class>/<image>"
    size = check_image_size(image_size)
    assert size is not None
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction, False)
    if split not in FOLDER_SPLITS:
        raise ConfigError(f"data.split must be one of {', '.join(FOLDER_SPLITS)}, got {split!r}")
    seed = int(seed if split_seed is None else split_seed)
    augmentation = build_augment(augment, crop_scale)
    mean3, std3 = check_stats("mean", mean), check_stats("std", std)
    base = require_root(root, builder, layout)
    available = [p.name for p in visible_dirs(base)]
    if not available:
        raise DataError(f"{builder}: {base} holds no {word} folders; expected {layout}")
    chosen = select_names(available, subset, key, base)
    check_task_names(chosen, word, base)
    classes_of, files = scan_class_folders(
        builder, [(n, base / n) for n in chosen], word=word, same_classes=setting == "domain"
    )
    name = str(title) if title else (base.resolve().name or builder)
    decoded = decode_groups(name, chosen, files, size, cache_dir, use_cache, max_unreadable)
    if split == "lists":
        parts = _list_splits(base, Path(list_dir).expanduser() if list_dir else base, chosen, files)
    else:
        parts = dict(
            zip(
                ("train", "test"),
                seeded_train_test(split, [len(f.paths) for f in files], test_fraction, seed),
                strict=True,
            )
        )
    splits = finish_splits(
        builder, decoded, parts, val_fraction=val_fraction, seed=seed, names=chosen, classes_of=classes_of, word=word
    )
    _check_group_counts(builder, splits, chosen, word)
    classes: object = classes_of[0] if setting == "domain" else dict(zip(chosen, classes_of, strict=True))
    return MultiTaskData(
        name=name,
        setting=setting,
        tasks=task_specs(chosen, [len(c) for c in classes_of], columns),
        splits=splits,  # type: ignore[arg-type]
        mean=mean3,
        std=std3,
        augment=augmentation,
        info={"root": str(base), "layout": layout, "split": split, "split_seed": seed, "classes": classes,
              "image_size": size, "skipped_images": decoded.skipped, "listed": split == "lists"},
    )  # fmt: skip


@DATASETS.register("folder_domains")
def build_folder_domains(
    root: str | os.PathLike | None = None,
    domains: Sequence[str] | None = None,
    image_size: int = 64,
    seed: int = 0,
    split_seed: int | None = 0,
    split: str = "per_domain",
    list_dir: str | os.PathLike | None = None,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    max_unreadable: int = 10,
    augment: str | bool | None = "domain_recipe",
    crop_scale: Sequence[float] = (0.7, 1.0),
    mean: Sequence[float] | float = HALF,
    std: Sequence[float] | float = HALF,
    columns: Mapping[str, str] | None = None,
    title: str | None = None,
) -> MultiTaskData:
    """Domains from ``<root>/<domain>/<class>/<image>`` (setting ``domain``; see the module docstring)."""
    return build_image_folders(
        "folder_domains", "domain", root=root, subset=domains, image_size=image_size, seed=seed,
        split_seed=split_seed, split=split, list_dir=list_dir, test_fraction=test_fraction,
        val_fraction=val_fraction, cache_dir=cache_dir, use_cache=use_cache, max_unreadable=max_unreadable,
        augment=augment, crop_scale=crop_scale, mean=mean, std=std, columns=columns, title=title,
    )  # fmt: skip


@DATASETS.register("folder_tasks")
def build_folder_tasks(
    root: str | os.PathLike | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int = 64,
    seed: int = 0,
    split_seed: int | None = 0,
    split: str = "per_task",
    list_dir: str | os.PathLike | None = None,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    max_unreadable: int = 10,
    augment: str | bool | None = "crop_flip",
    crop_scale: Sequence[float] = (0.7, 1.0),
    mean: Sequence[float] | float = HALF,
    std: Sequence[float] | float = HALF,
    columns: Mapping[str, str] | None = None,
    title: str | None = None,
) -> MultiTaskData:
    """Tasks from ``<root>/<task>/<class>/<image>`` (setting ``multi_input``; see the module docstring)."""
    return build_image_folders(
        "folder_tasks", "multi_input", root=root, subset=tasks, image_size=image_size, seed=seed,
        split_seed=split_seed, split=split, list_dir=list_dir, test_fraction=test_fraction,
        val_fraction=val_fraction, cache_dir=cache_dir, use_cache=use_cache, max_unreadable=max_unreadable,
        augment=augment, crop_scale=crop_scale, mean=mean, std=std, columns=columns, title=title,
    )  # fmt: skip


# ----------------------------------------------------------------------------- npz arrays


def npz_images(array: np.ndarray, where: str) -> Tensor:
    """uint8 (N, C, H, W) from (N, H, W) or (N, H, W, C), C in {1, 3}; uint8, 0..255 integers or floats in [0, 1]."""
    if array.ndim == 3:
        array = array[:, :, :, None]
    if array.ndim != 4 or array.shape[3] not in (1, 3):
        raise DataError(f"{where} must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.integer) and (array.size == 0 or (array.min() >= 0 and array.max() <= 255)):
            array = array.astype(np.uint8)
        elif np.issubdtype(array.dtype, np.floating) and (
            array.size == 0 or (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1)
        ):
            array = np.rint(array * 255.0).astype(np.uint8)
        else:
            raise DataError(
                f"{where} must be uint8 0..255 (or float in [0, 1]), got {array.dtype}; convert it with .astype(np.uint8)"
            )
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


def npz_labels(array: np.ndarray, n: int, where: str) -> Tensor:
    """int64 (N,) from integer labels of shape (N,) or (N, 1)."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(f"{where} must have shape (N,) or (N, 1), one class per image, got {array.shape}")
    if len(array) != n:
        raise DataError(f"{where} has {len(array)} labels for {n} images; images and labels must match one to one")
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise DataError(f"{where} holds non-integer labels; labels are class indices 0..K-1")
        array = array.astype(np.int64)
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise DataError(f"{where} must hold integer class indices 0..K-1, got dtype {array.dtype}")
    labels = torch.from_numpy(array.astype(np.int64))
    if labels.numel() and int(labels.min()) < 0:
        raise DataError(f"{where}: label {int(labels.min())} out of range; labels are class indices 0..K-1")
    return labels


def read_npz_task(
    path: Path, num_classes: int | None = None, *, required: Sequence[str] = NPZ_REQUIRED, hint: str = ""
) -> tuple[dict[str, tuple[Tensor, Tensor]], int]:
    """Validated arrays of one task file: ``{split: (uint8 (N, C, H, W), int64 (N,))}`` and its class count.

    ``val`` is present only when the file has both ``val_images`` and ``val_labels``. Without
    ``num_classes`` the class count is the largest label + 1. ``hint`` ends every error message.
    """
    tail = f"; {hint}" if hint else ""
    damaged = tail or "; rewrite it with numpy.savez"
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a truncated file: BadZipFile or EOFError
        raise DataError(f"{path} is not a readable .npz file ({str(e) or type(e).__name__}){damaged}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds one .npy array, not an .npz archive of named arrays{damaged}")
    out: dict[str, tuple[Tensor, Tensor]] = {}
    with npz:
        keys = set(npz.files)
        missing = [k for k in required if k not in keys]
        if ("val_images" in keys) != ("val_labels" in keys):
            missing.append("val_labels" if "val_images" in keys else "val_images")
        missing = list(dict.fromkeys(missing))
        if missing:
            raise DataError(
                f"{path} lacks key(s) {missing} (has {sorted(keys)}){tail or '; save train_images, train_labels, test_images, test_labels (val_* optional)'}"
            )
        for split in SPLITS:
            if f"{split}_images" not in keys:
                continue
            try:
                images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
            except ValueError as e:
                if "pickle" not in str(e):  # a damaged array header
                    raise DataError(f"{path}: {split}_images/{split}_labels is damaged (its header does not parse){damaged}") from None
                # object arrays (images of different sizes) need pickle
                raise DataError(
                    f"{path}: {split}_images/{split}_labels is an object array (images of different sizes?); "
                    f"save one numeric array of equal-sized images{tail}"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # damaged or truncated member data
                raise DataError(f"{path}: {split}_images/{split}_labels is damaged ({str(e) or type(e).__name__}){damaged}") from None
            x = npz_images(images, f"{path}: {split}_images")
            out[split] = (x, npz_labels(labels, len(x), f"{path}: {split}_labels"))
    sizes = {s: tuple(x.shape[2:]) for s, (x, _) in out.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(
            f"{path}: images of different sizes across splits {sizes}; resize them to one size before saving{tail}"
        )
    top = max((int(y.max()) for _, y in out.values() if y.numel()), default=-1)
    if num_classes is None:
        num_classes = top + 1
        if num_classes < 2:
            raise DataError(
                f"{path}: labels hold fewer than two classes (largest label {top}); a task needs classes 0..K-1, K >= 2{tail}"
            )
    elif top >= num_classes:
        raise DataError(
            f"{path}: label {top} out of range [0, {num_classes}){tail or '; fix the labels or data.num_classes'}"
        )
    if out["train"][0].shape[0] == 0:
        raise DataError(f"{path}: train_images is empty; a task needs training images{tail}")
    return out, int(num_classes)


def _class_count(num_classes: int | Mapping[str, int] | None, task: str) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, Mapping):
        value = num_classes.get(task)
        return None if value is None else int(value)
    return int(num_classes)


@DATASETS.register("npz_tasks")
def build_npz_tasks(
    root: str | os.PathLike | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int | None = None,
    seed: int = 0,
    split_seed: int | None = 0,
    val_fraction: float = 0.1,
    num_classes: int | Mapping[str, int] | None = None,
    augment: str | bool | None = "flip",
    crop_scale: Sequence[float] = (0.7, 1.0),
    mean: Sequence[float] | float = HALF,
    std: Sequence[float] | float = HALF,
    columns: Mapping[str, str] | None = None,
    title: str | None = None,
) -> MultiTaskData:
    """Tasks from ``<root>/<task>.npz`` files in MedMNIST's format (setting ``multi_input``).

    Each file's own train/test (and val) arrays are the splits; without val arrays a seeded
    ``val_fraction`` of its train arrays is held out (``split_seed``, default ``seed``).
    ``image_size: null`` keeps the files' size (all tasks must share it).
    """
    layout = "<root>/<task>.npz"
    size = check_image_size(image_size, allow_none=True)
    val_fraction = check_fraction("val_fraction", val_fraction)
    seed = int(seed if split_seed is None else split_seed)
    augmentation = build_augment(augment, crop_scale)
    mean3, std3 = check_stats("mean", mean), check_stats("std", std)
    base = require_root(root, "npz_tasks", layout)
    files = {p.stem: p for p in sorted(base.glob("*.npz")) if p.is_file() and not p.name.startswith(".")}
    if not files:
        raise DataError(f"npz_tasks: {base} holds no .npz files; expected {layout}")
    chosen = select_names(list(files), tasks, "tasks", base)
    check_task_names(chosen, "task", base)
    if isinstance(num_classes, Mapping) and (unknown := sorted(set(num_classes) - set(chosen))):
        raise ConfigError(f"data.num_classes names {unknown}, which are not among the selected tasks {chosen}")
    arrays, counts = {}, []
    for t in chosen:
        arrays[t], k = read_npz_task(files[t], _class_count(num_classes, t))
        counts.append(k)
    if size is None:
        native = {t: tuple(a["train"][0].shape[2:]) for t, a in arrays.items()}
        if len(set(native.values())) > 1:
            raise DataError(
                f"npz_tasks: tasks have different image sizes {native}; set data.image_size=N to resize them all to N x N"
            )
    has_val = {t: "val" in a for t, a in arrays.items()}
    parts: dict[str, tuple[list[Tensor], list[Tensor]]] = {s: ([], []) for s in SPLITS}
    for t in chosen:
        a = dict(arrays[t])
        if "val" not in a and val_fraction > 0:
            x, y = a["train"]
            kept, held = holdout(torch.zeros(len(y), dtype=torch.long), val_fraction, seed)
            a["train"], a["val"] = (x[kept], y[kept]), (x[held], y[held])
        for s in SPLITS:
            x, y = a.get(s, (a["train"][0][:0], a["train"][1][:0]))
            parts[s][0].append(resize_uint8(x, size) if size else x)
            parts[s][1].append(y)
    splits = {s: PartsSplit(xs, ys, channels=3) for s, (xs, ys) in parts.items() if any(len(y) for y in ys)}
    _check_group_counts("npz_tasks", splits, chosen, "task")
    return MultiTaskData(
        name=str(title) if title else (base.resolve().name or "npz_tasks"),
        setting="multi_input",
        tasks=task_specs(chosen, counts, columns),
        splits=splits,  # type: ignore[arg-type]
        mean=mean3,
        std=std3,
        augment=augmentation,
        info={"root": str(base), "layout": layout, "files": {t: str(files[t]) for t in chosen},
              "val_from_file": has_val, "split_seed": seed, "image_size": size},
    )  # fmt: skip


__all__ = [
    "AUGMENTS",
    "DecodedGroups",
    "GroupFiles",
    "build_augment",
    "build_folder_domains",
    "build_folder_tasks",
    "build_image_folders",
    "build_npz_tasks",
    "decode_groups",
    "finish_splits",
    "read_npz_task",
    "scan_class_folders",
    "seeded_train_test",
    "visible_dirs",
]
