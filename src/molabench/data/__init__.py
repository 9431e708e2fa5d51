"""Datasets by name: ``build_data(cfg)`` turns a ``data`` config into a MultiTaskData."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from molabench.data.base import Batch, MultiTaskData, SplitSource, TaskSpec, TensorSplit
from molabench.errors import ConfigError
from molabench.registry import Registry

DATASETS: Registry[MultiTaskData] = Registry("dataset")

# Keys of a data config that describe protocols, budgets, method defaults and tables rather than how
# to load the data: ``protocol`` (the authors' recipe, trainer=paper), ``budget`` (trainer=default's
# epochs/batch size on this data), ``mola_stages`` (MoLA-Grad's default placement), ``paper`` (table).
_NON_LOADER_KEYS = {"name", "protocol", "paper", "budget", "mola_stages"}


def build_data(cfg: Mapping[str, Any]) -> MultiTaskData:
    _import_all()
    kwargs = {k: v for k, v in cfg.items() if k not in _NON_LOADER_KEYS}
    builder = DATASETS.get(cfg["name"])
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError:
        accepted = [p for p in inspect.signature(builder).parameters if p not in ("args", "kwargs")]
        unknown = sorted(set(kwargs) - set(accepted))
        raise ConfigError(
            f"data={cfg['name']} does not take {', '.join(f'data.{k}' for k in unknown) or 'these keys'}; "
            f"it accepts: {', '.join(accepted)}"
        ) from None
    return builder(**kwargs)


def _import_all() -> None:
    # Each module registers its datasets on import.
    import importlib
    import pkgutil

    import molabench.data as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in {"base", "loader"}:
            importlib.import_module(f"molabench.data.{info.name}")


__all__ = ["DATASETS", "Batch", "MultiTaskData", "SplitSource", "TaskSpec", "TensorSplit", "build_data"]
