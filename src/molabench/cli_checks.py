"""The command line's early checks, before Hydra starts: config group choices, malformed or
unknown overrides, broken interpolations, each one ``error:`` line (``molabench.train.main``)."""

from __future__ import annotations

import re
from pathlib import Path

from molabench.config_path import config_dir

CONFIG_DIR = config_dir()  # the package's configs (installed package data, or the checkout's configs/)
GROUPS = ("data", "backbone", "head", "method", "trainer", "logger", "sweep")

def _user_config_dirs(argv: list[str]) -> list[Path] | None:
    """The folders ``hydra.searchpath=[...]`` / ``--config-dir`` add, or ``None`` when one of them
    is not a local folder (a ``pkg://`` of a missing package, an interpolation, another scheme)
    or the override does not parse: then Hydra alone judges the config-group choices."""
    from molabench.config_path import user_config_dirs
    from molabench.errors import ConfigError

    try:
        folders = user_config_dirs(argv)
    except Exception:  # a malformed hydra.searchpath: check_overrides reports it
        return None
    local = [folder for folder in folders if folder is not None]
    if len(local) < len(folders):
        return None
    for folder in local:
        if not folder.is_dir():
            raise ConfigError(f"config folder {folder} (hydra.searchpath / --config-dir) does not exist")
    return local

def check_group_choices(argv: list[str]) -> None:
    """Unknown config-group options get one line here instead of Hydra's multi-line report.
    The options are the package's configs plus those of the user's folders on the search path."""
    from molabench.errors import ConfigError

    extra = _user_config_dirs(argv)
    if extra is None:
        return
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+~") not in GROUPS:
            continue
        group = key.lstrip("+~")
        available = sorted({p.stem for folder in (CONFIG_DIR, *extra) for p in (folder / group).glob("*.yaml")})
        where = ", ".join([f"configs/{group}/", *(str(folder / group) + "/" for folder in extra)])
        for choice in value.split(","):
            if choice and choice not in available:
                raise ConfigError(f"unknown {group} {choice!r}; choose one of: {', '.join(available)} ({where})")

def _quote(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar (only quotes need escaping)."""
    return "'" + value.replace("'", "\\'") + "'"

def check_overrides(argv: list[str]) -> str | None:
    """Compose the first configuration of the command line once, so that malformed overrides,
    unknown keys and broken interpolations fail with one line before Hydra starts. The user's
    config folders (``hydra.searchpath=[...]``, ``--config-dir``) are on the search path as in
    the run itself."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from molabench.config_path import search_path_entries, strip_config_dir_flags
    from molabench.errors import ConfigError

    overrides = [a for a in strip_config_dir_flags(argv) if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        search_path = search_path_entries(argv)
    except Exception as exc:  # Hydra's grammar errors have no common public base class
        raise ConfigError(f"cannot parse the overrides {' '.join(overrides)!r}: {str(exc).splitlines()[0]}") from None
    first = [f"hydra.searchpath=[{','.join(_quote(entry) for entry in search_path)}]"] if search_path else []
    for override in parsed:
        if override.key_or_group.startswith("hydra"):
            continue
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()), None)
            first.append(f"{override.get_key_element()}={value}")
        else:
            first.append(override.input_line)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            resolved = OmegaConf.to_container(compose(config_name="config", overrides=first), resolve=True)
    except Exception as exc:  # compose raises several unrelated exception types
        unknown = re.search(r"Could not override '([^']+)'", str(exc))
        if unknown:
            raise ConfigError(_unknown_key_message(unknown.group(1), [o for o in first if not o.startswith(unknown.group(1) + "=")])) from None
        message = " ".join(line.strip() for line in str(exc).splitlines()[:2] if line.strip())
        raise ConfigError(f"invalid configuration: {message}") from None
    results_dir = resolved.get("results_dir") if isinstance(resolved, dict) else None
    return str(results_dir) if results_dir else None

def _unknown_key_message(key: str, other_overrides: list[str]) -> str:
    """``trainer.epoch`` is not a key: say so, with the closest existing key, rather than Hydra's
    advice to append it with ``+`` (which would only add the typo as a new, ignored key)."""
    import difflib

    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    parent, _, name = key.rpartition(".")
    choices: list[str] = []
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            node = compose(config_name="config", overrides=other_overrides)
        node = OmegaConf.select(node, parent) if parent else node
        if isinstance(node, DictConfig):
            choices = [str(k) for k in node]
    except Exception:  # the other overrides fail too: they get their own line on the next try
        pass
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    where = f"{parent} has: {', '.join(choices)}" if choices and not close else ""
    return f"invalid configuration: {key} is not a configuration key ({hint or where or 'check its spelling'}); fix the spelling (a leading + would add it as a new key that nothing reads)"

NO_JOB_OPTIONS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc", "--version")

VALUE_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--package", "-p", "--experimental-rerun")

def add_override(argv: list[str], override: str) -> None:
    """Add ``override`` to a Hydra command line beside the user's overrides: argparse takes the
    overrides only as one run of positional arguments (before the first one, else at the end)."""
    for i in range(1, len(argv)):
        if not argv[i].startswith("-") and argv[i - 1] not in VALUE_OPTIONS:
            argv.insert(i, override)
            return
    argv.append(override)
