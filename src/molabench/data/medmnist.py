"""MedMNIST v2 (Yang et al., Sci. Data 2023) as nine multi-input tasks (paper Table 4).

Release format: one ``{task}.npz`` per task (28x28) with keys ``train_images``, ``train_labels``,
``val_images``, ``val_labels``, ``test_images``, ``test_labels``; images uint8 (N, 28, 28) for
gray tasks or (N, 28, 28, 3) for RGB, labels uint8 (N, 1). MedMNIST+ also ships
``{task}_{64,128,224}.npz``: with ``image_size`` 64/128/224 such a file is used when present,
otherwise the 28x28 file is resized once at load (bilinear, as the authors' ``Resize(224)``).

Authors' recipe: gray tiled to three channels, ``Normalize(.5, .5)``, ``RandomHorizontalFlip``
for training; the official train/val/test splits (so ``seed`` plays no role here).
Images stay uint8 in memory at their native channel count (see
:class:`~molabench.data.sources.PartsSplit`).

A preset over the generic npz reader of :mod:`molabench.data.generic` (``data=npz_tasks`` reads
any folder of such files): this module adds the nine tasks' names, class counts, paper columns,
the MedMNIST+ size variants and the download.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from molabench.atomic import atomic_write
from molabench.data import DATASETS
from molabench.data.augment import HorizontalFlip
from molabench.data.base import MultiTaskData, TaskSpec
from molabench.data.generic import read_npz_task
from molabench.data.images import resize_uint8
from molabench.data.sources import PartsSplit
from molabench.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
ZENODO = "https://zenodo.org/records/10519652/files"
PREPARE = "python scripts/prepare_data.py medmnist --root {root}"


@dataclass(frozen=True)
class MedMNISTTask:
    name: str
    num_classes: int
    column: str  # the paper's Table 4 column
    md5: dict[int, str]  # image size -> md5 of the official file


def _task(name: str, n: int, column: str, m28: str, m64: str, m128: str, m224: str) -> MedMNISTTask:
    return MedMNISTTask(name, n, column, {28: m28, 64: m64, 128: m128, 224: m224})


# Class counts, URLs and md5 sums as in the `medmnist` package's INFO (v3.0.2, Zenodo record 10519652).
TASKS: dict[str, MedMNISTTask] = {
    t.name: t
    for t in (
        _task("pathmnist", 9, "Colon", "a8b06965200029087d5bd730944a56c1", "55aa9c1e0525abe5a6b9d8343a507616",
              "ac42d08fb904d92c244187169d1fd1d9", "2c51a510bcdc9cf8ddb2af93af1eadec"),
        _task("octmnist", 4, "Retinal", "c68d92d5b585d8d81f7112f81e2d0842", "e229e9440236b774d9f0dfef9d07bdaf",
              "0a97e76651ace45c5d943ee3f65b63ae", "abc493b6d529d5de7569faaef2773ba3"),
        _task("organcmnist", 11, "OrganC", "b9ceb9546e10131b32923c5bbeaea2b1", "3ce34a8724ea6f548e6db4744d03b6a9",
              "773c1f009daa3fe5d9a2a201b2a7ed94", "050f5e875dc056f6768abf94ec9995d1"),
        _task("bloodmnist", 8, "Cell", "7053d0359d879ad8a5505303e11de1dc", "2b94928a2ae4916078ca51e05b6b800b",
              "adace1e0ed228fccda1f39692059dd4c", "b718ff6835fcbdb22ba9eacccd7b2601"),
        _task("breastmnist", 2, "Breast", "750601b1f35ba3300ea97c75c52ff8f6", "742edef2a1fd1524b2efff4bd7ba9364",
              "363e4b3f8d712e9b5de15470a2aaadf1", "b56378a6eefa9fed602bb16d192d4c8b"),
        _task("dermamnist", 7, "Skin", "0744692d530f8e62ec473284d019b0c7", "b70a2f5635c6199aeaa28c31d7202e1f",
              "2defd784463fa5243564e855ed717de1", "8974907d8e169bef5f5b96bc506ae45d"),
        _task("organamnist", 11, "OrganA", "68e3f8846a6bd62f0c9bf841c0d9eacc", "2dcccc29b88e6da5a01161ef20cda288",
              "eeae80d0a227a8d099027e1b3cfd3b60", "50747347e05c87dd3aaf92c49f9f3170"),
        _task("organsmnist", 11, "OrganS", "9ab87b696fb54e2a387ebe992d6ed5f1", "53a6d115339d874c25e309a994ff46d3",
              "ded0c5fa01a95dc4978b956f613e9b8e", "b354719e553fbbb2513d5533f52a4cb1"),
        _task("pneumoniamnist", 2, "Chest", "28209eda62fecd6e6a2d98b1501bb15f", "8f4eceb4ccffa70c672198ea285246c6",
              "05b46931834c231683c68f40c47b2971", "d6a3c71de1b945ea11211b03746c1fe1"),
    )
}  # fmt: skip
DEFAULT_TASKS = tuple(TASKS)


def npz_name(task: str, size: int = 28) -> str:
    return f"{task}.npz" if size == 28 else f"{task}_{size}.npz"


def npz_url(task: str, size: int = 28) -> str:
    return f"{ZENODO}/{npz_name(task, size)}?download=1"


def _check_tasks(tasks: Sequence[str] | None) -> list[str]:
    names = list(tasks) if tasks else list(DEFAULT_TASKS)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown MedMNIST task(s) {unknown}; data.tasks must be a subset of {list(TASKS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"data.tasks lists a task twice: {names}")
    return names


def _find_file(root: Path, task: str, size: int) -> Path | None:
    """The official file at ``size`` when present, else the 28x28 file (resized later)."""
    for candidate in (npz_name(task, size), npz_name(task)):
        if (root / candidate).is_file():
            return root / candidate
    return None


@DATASETS.register("medmnist")
def build_medmnist(
    root: str | os.PathLike,
    tasks: Sequence[str] | None = None,
    image_size: int = 28,
    seed: int = 0,
    flip: bool = True,
) -> MultiTaskData:
    """MedMNIST tasks ``tasks`` (default: the paper's nine, in Table 4 order) from ``root``.

    ``seed`` is accepted for a uniform data config and unused: MedMNIST has official splits.
    """
    del seed
    root_path = Path(root).expanduser()
    names = _check_tasks(tasks)
    size = int(image_size)
    if size < 8:
        raise ConfigError(f"data.image_size must be >= 8, got {size}")
    if not root_path.is_dir():
        raise DataError(f"MedMNIST root {root_path} does not exist; set data.root=DIR or run {PREPARE.format(root=root_path)}")
    files = {t: _find_file(root_path, t, size) for t in names}
    missing = [npz_name(t) for t, f in files.items() if f is None]
    if missing:
        raise DataError(
            f"missing MedMNIST file(s) in {root_path}: {', '.join(missing)}; run {PREPARE.format(root=root_path)} "
            f"(needs internet) or pick present tasks with data.tasks=[...]"
        )
    # every split of every task (official keys, uint8, labels within the task's classes), read once per file
    arrays = {
        t: read_npz_task(
            files[t],  # type: ignore[arg-type]
            TASKS[t].num_classes,
            required=[f"{s}_{k}" for s in SPLITS for k in ("images", "labels")],
            hint=f"it is not an official MedMNIST {t} file: delete it and run {PREPARE.format(root=root_path)}",
        )[0]
        for t in names
    }
    splits = {
        split: PartsSplit([resize_uint8(arrays[t][split][0], size) for t in names], [arrays[t][split][1] for t in names], channels=3)
        for split in SPLITS
    }
    return MultiTaskData(
        name="medmnist",
        setting="multi_input",
        tasks=[TaskSpec(t, TASKS[t].num_classes, column=TASKS[t].column) for t in names],
        splits=splits,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        augment=HorizontalFlip() if flip else None,
        info={"root": str(root_path), "files": {t: str(f) for t, f in files.items()}, "image_size": size},
    )


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(
    root: str | os.PathLike, tasks: Sequence[str] | None = None, size: int = 28, *, force: bool = False
) -> list[Path]:
    """Download the official npz files missing from ``root`` (md5-checked, atomic). Returns all files.

    A present file whose md5 differs from the official one is kept with a warning (it may be a
    deliberate rebuild) unless ``force``, which replaces it.
    """
    root_path = Path(root).expanduser()
    root_path.mkdir(parents=True, exist_ok=True)
    if size not in (28, 64, 128, 224):
        raise ConfigError(f"MedMNIST is released at 28, 64, 128 or 224 px, not {size}")
    out = []
    for t in _check_tasks(tasks):
        target, expected = root_path / npz_name(t, size), TASKS[t].md5[size]
        if target.is_file():
            got = md5sum(target)
            if got == expected or not force:
                if got != expected:
                    warnings.warn(f"{target} md5 {got} differs from the official {expected}; kept (use --force to replace)", stacklevel=2)
                out.append(target)
                continue
        def download(tmp: Path, url: str = npz_url(t, size), expected: str = expected, name: str = target.name) -> None:
            print(f"downloading {url}")
            urllib.request.urlretrieve(url, tmp)
            got = md5sum(tmp)
            if got != expected:
                raise DataError(f"md5 mismatch for {name}: got {got}, expected {expected}; retry the download")

        try:
            atomic_write(target, download)
        except OSError as e:
            raise DataError(f"cannot download {npz_url(t, size)} ({e}); check the network or fetch it by hand into {root_path}") from None
        out.append(target)
    return out


__all__ = ["DEFAULT_TASKS", "TASKS", "build_medmnist", "download", "md5sum", "npz_name", "npz_url"]
