"""Where the Hydra configs are: the package's own folder and the folders a user adds.

The configs live in the repository's top-level ``configs/`` folder; ``pyproject.toml`` ships
that folder inside the package as ``molabench.configs`` (``package-dir``), so

* a wheel or a non-editable install has them at ``<site-packages>/molabench/configs``;
* an editable install (and a bare checkout on ``PYTHONPATH=src``) runs the package from
  ``src/molabench`` and reads the checkout's live ``configs/`` next to ``src/`` (edits are
  visible without a reinstall).

:func:`config_dir` gives that one answer. A user's own configs (datasets, methods, sweeps) stay
in their own folder, added on the command line with ``hydra.searchpath=[file:///abs/folder]``
or ``--config-dir /abs/folder``; :func:`user_config_dirs` reads those folders from the command
line so that the early checks in :mod:`molabench.train` see the same options Hydra will.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

PACKAGE = "molabench.configs"
PRIMARY = "config.yaml"
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def _has_primary(folder: Path) -> bool:
    return (folder / PRIMARY).is_file()


@lru_cache(maxsize=1)
def config_dir() -> Path:
    """The absolute folder holding ``config.yaml`` and the config groups of this installation.

    Installed package data first (``molabench/configs`` of a wheel or non-editable install), then
    wherever the import system puts ``molabench.configs``, then the source tree's ``configs/``
    next to ``src/`` (editable installs: setuptools' editable finder does not import the mapped,
    ``__init__``-less ``molabench.configs``, but the package itself runs from the checkout).
    Hydra needs a real folder, so a zipped install is an error.
    """
    here = Path(__file__).resolve().parent
    candidates = [here / "configs"]
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except ImportError:  # no such package here: the source tree decides
        spec = None
    if spec is not None:
        candidates += [Path(location) for location in spec.submodule_search_locations or []]
    candidates.append(here.parents[1] / "configs")
    for folder in candidates:
        if _has_primary(folder):
            return folder.resolve()
    raise FileNotFoundError(
        f"molabench cannot find its configs: no {PRIMARY} in {', '.join(map(str, dict.fromkeys(candidates)))}; "
        "reinstall molabench (pip install molabench-*.whl, or pip install -e . in a checkout)"
    )


def _flag_values(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """The values of ``--flag value`` / ``--flag=value`` options in ``argv``."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        if name in flags:
            if sep:
                values.append(value)
            elif i + 1 < len(argv):
                values.append(argv[i + 1])
    return values


def strip_config_dir_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` without Hydra's ``--config-dir``/``-cd`` options and their values."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name, sep, _ = arg.partition("=")
        if name in CONFIG_DIR_FLAGS:
            skip = not sep
            continue
        kept.append(arg)
    return kept


def search_path_entries(argv: Sequence[str]) -> list[str]:
    """The config search path a command line adds, as Hydra URIs (``file://...``, ``pkg://...``).

    ``--config-dir DIR`` comes first (Hydra puts it before the primary config folder), then the
    entries of a ``hydra.searchpath=[...]`` override. Raises ``ValueError`` for an override that
    does not parse.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entries = [f"file://{Path(value).expanduser().resolve()}" for value in _flag_values(argv, CONFIG_DIR_FLAGS)]
    candidates = [a for a in argv if a.partition("=")[0] == "hydra.searchpath"]  # Hydra reads the first, unprefixed
    if candidates:
        (override,) = OverridesParser.create().parse_overrides(candidates[:1])
        value = override.value()
        entries += [str(v) for v in (value if isinstance(value, list) else [value]) if v is not None]
    return entries


def entry_dir(entry: str) -> Path | None:
    """The local folder of one search-path entry, or ``None`` when it is not a plain folder
    (an unknown scheme, an interpolation, a package that is not installed)."""
    if "${" in entry:
        return None
    scheme, sep, rest = entry.partition("://")
    if not sep:
        scheme, rest = "file", entry
    if scheme == "file":
        return Path(rest).expanduser().resolve()
    if scheme == "pkg":
        module, _, sub = rest.partition("/")
        try:
            spec = importlib.util.find_spec(module)
        except ImportError:
            return None
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            return (Path(location) / sub).resolve()
    return None


def user_config_dirs(argv: Sequence[str]) -> list[Path | None]:
    """The folders of the search path a command line adds (``None`` for entries that are not
    local folders: the caller cannot list their options)."""
    return [entry_dir(entry) for entry in search_path_entries(argv)]
