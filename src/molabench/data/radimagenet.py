"""RadImageNet (Mei et al., Radiology: AI 2022) as eleven multi-input tasks (paper Table 1).

Release format as the authors use it: image folders plus list files with one ``<path> <label>``
line per image, the path relative to ``root`` and the label global in 0..164. Global labels map
onto tasks by consecutive ranges of the class counts [6, 28, 2, 13, 18, 14, 9, 25, 26, 10, 14]
(the authors' ``class_label_to_task_label_dict``); a sample's target is its label minus its
task's first global label. Task order and paper columns follow Table 1 (Lung, Abdomen_1,
Thyroid, Abdomen_2, Knee, Shoulder, Spine, Ankle, Abdomen_3, Brain, Hip); the modality prefixes
of the task names (CT/US/MR) are inferred from the class counts of the RadImageNet release.

List files (``train_list``/``test_list``/``val_list``, relative to ``root`` or absolute): by
default the authors' ``radiology_ai/label/rad_train_shuffled.txt`` and ``rad_test.txt``, also
looked up directly in ``root``. Without ``val_list``, ``val`` is a seeded ``val_fraction`` of
every task's training images.

1.35M images do not fit in memory at 224 px: splits are :class:`~molabench.data.sources.FileSplit`
and decode on load (shorter side resized to ``image_size``, centre crop); the authors' train
transform (``RandomResizedCrop(224)`` + flip) runs batch-wise; ImageNet normalisation as theirs.
``check_files`` verifies at build time that every listed image exists (one ``stat`` per file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from molabench.data import DATASETS
from molabench.data.augment import radimagenet_recipe
from molabench.data.base import MultiTaskData, TaskSpec
from molabench.data.listfile import read_list_file
from molabench.data.sources import FileSplit
from molabench.data.splits import check_fraction, holdout
from molabench.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (task name, paper column, number of classes), in global-label order.
TASKS: tuple[tuple[str, str, int], ...] = (
    ("ct_lung", "Lung", 6),
    ("ct_abdomen", "Abdomen_1", 28),
    ("us_thyroid", "Thyroid", 2),
    ("us_abdomen", "Abdomen_2", 13),
    ("mr_knee", "Knee", 18),
    ("mr_shoulder", "Shoulder", 14),
    ("mr_spine", "Spine", 9),
    ("mr_ankle", "Ankle", 25),
    ("mr_abdomen", "Abdomen_3", 26),
    ("mr_brain", "Brain", 10),
    ("mr_hip", "Hip", 14),
)
NUM_CLASSES = sum(n for _, _, n in TASKS)  # 165
DEFAULT_LISTS = {
    "train": ("radiology_ai/label/rad_train_shuffled.txt", "rad_train_shuffled.txt", "train.txt"),
    "test": ("radiology_ai/label/rad_test.txt", "rad_test.txt", "test.txt"),
}


def task_of_label() -> tuple[torch.Tensor, torch.Tensor]:
    """For every global label 0..164: its task id and its label within the task."""
    counts = torch.tensor([n for _, _, n in TASKS])
    task = torch.repeat_interleave(torch.arange(len(TASKS)), counts)
    first = torch.cumsum(counts, 0) - counts
    return task, torch.arange(NUM_CLASSES) - first[task]


def _find_list(root: Path, given: str | os.PathLike | None, split: str) -> Path:
    if given:
        p = Path(given).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise DataError(f"RadImageNet {split} list {p} does not exist; fix data.{split}_list")
        return p
    for name in DEFAULT_LISTS[split]:
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"no RadImageNet {split} list in {root} (looked for {list(DEFAULT_LISTS[split])}); set data.{split}_list=FILE"
    )


def _select(tasks: Sequence[str] | None) -> list[int]:
    if not tasks:
        return list(range(len(TASKS)))
    out = []
    for want in tasks:
        key = str(want).lower()
        hit = [i for i, (name, col, _) in enumerate(TASKS) if key in (name, col.lower())]
        if not hit:
            raise ConfigError(f"unknown RadImageNet task {want!r}; data.tasks must name some of {[t[0] for t in TASKS]}")
        if hit[0] in out:
            raise ConfigError(f"data.tasks lists {want!r} twice")
        out.append(hit[0])
    return out


def _read_split(
    root: Path, list_file: Path, selected: list[int], check_files: bool
) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    task_of, local_of = task_of_label()
    new_id = {t: k for k, t in enumerate(selected)}
    paths, targets, tasks = [], [], []
    for n, text, label in read_list_file(list_file, NUM_CLASSES):
        t = int(task_of[label])
        if t not in new_id:
            continue
        p = Path(text) if Path(text).is_absolute() else root / text
        if check_files and not p.is_file():
            raise DataError(f"{list_file}:{n} names image {text!r}, not found under {root}; fix data.root or the list file")
        paths.append(p)
        targets.append(int(local_of[label]))
        tasks.append(new_id[t])
    if not paths:
        raise DataError(f"{list_file} holds no image of the selected tasks {[TASKS[t][0] for t in selected]}")
    return paths, torch.tensor(targets, dtype=torch.long), torch.tensor(tasks, dtype=torch.long)


@DATASETS.register("radimagenet")
def build_radimagenet(
    root: str | os.PathLike,
    tasks: Sequence[str] | None = None,
    image_size: int = 224,
    seed: int = 0,
    train_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    val_list: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    check_files: bool = True,
    workers: int | None = None,
    max_unreadable: int = 10,
    augment: bool = True,
) -> MultiTaskData:
    """RadImageNet tasks ``tasks`` (default all eleven) from ``root`` (see the module docstring)."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(f"RadImageNet root {root_path} does not exist; set data.root=DIR (the folder the list paths are relative to)")
    size = int(image_size)
    if size < 8:
        raise ConfigError(f"data.image_size must be >= 8, got {size}")
    val_fraction = check_fraction("val_fraction", val_fraction)
    selected = _select(tasks)
    lists = {"train": _find_list(root_path, train_list, "train"), "test": _find_list(root_path, test_list, "test")}
    if val_list:
        lists["val"] = _find_list(root_path, val_list, "val")
    raw = {name: _read_split(root_path, f, selected, check_files) for name, f in lists.items()}
    if "val" not in raw and val_fraction > 0:
        paths, targets, task_ids = raw["train"]
        kept, held = holdout(task_ids, val_fraction, seed)
        raw["val"] = ([paths[i] for i in held.tolist()], targets[held], task_ids[held])
        raw["train"] = ([paths[i] for i in kept.tolist()], targets[kept], task_ids[kept])
    splits = {
        name: FileSplit(p, y, t, size, workers=workers, max_unreadable=max_unreadable)
        for name, (p, y, t) in raw.items()
    }
    return MultiTaskData(
        name="radimagenet",
        setting="multi_input",
        tasks=[TaskSpec(TASKS[t][0], TASKS[t][2], column=TASKS[t][1]) for t in selected],
        splits=splits,  # type: ignore[arg-type]
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment=radimagenet_recipe() if augment else None,
        info={"root": str(root_path), "lists": {k: str(v) for k, v in lists.items()}, "image_size": size},
    )


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NUM_CLASSES", "TASKS", "build_radimagenet", "task_of_label"]
