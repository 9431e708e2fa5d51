"""Datasets by name: ``build_data(cfg)`` turns a ``data`` config into a MultiTaskData."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from molabench.data.base import Batch, MultiTaskData, SplitSource, TaskSpec, TensorSplit
from molabench.registry import Registry

DATASETS: Registry[MultiTaskData] = Registry("dataset")

# Keys of a data config that describe protocols and tables rather than how to load the data.
_NON_LOADER_KEYS = {"name", "protocol", "paper"}


def build_data(cfg: Mapping[str, Any]) -> MultiTaskData:
    _import_all()
    kwargs = {k: v for k, v in cfg.items() if k not in _NON_LOADER_KEYS}
    return DATASETS.build(cfg["name"], **kwargs)


def _import_all() -> None:
    # Each module registers its datasets on import.
    import importlib
    import pkgutil

    import molabench.data as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in {"base", "loader"}:
            importlib.import_module(f"molabench.data.{info.name}")


__all__ = ["DATASETS", "Batch", "MultiTaskData", "SplitSource", "TaskSpec", "TensorSplit", "build_data"]
