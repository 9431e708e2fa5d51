"""Entry point: ``python -m molabench.train method=<name> data=<name> [overrides]``.

Hydra composes ``data``, ``backbone``, ``method``, ``trainer`` and ``logger`` (see
``configs/``); ``-m`` sweeps any of them. Each run trains one algorithm and writes one
record (``molabench.report.records``). User errors end with one ``error:`` line and exit
code 2; the run's record then says ``failed``.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from molabench.config_path import config_dir

CONFIG_DIR = config_dir()  # the package's configs (installed package data, or the checkout's configs/)
GROUPS = ("data", "backbone", "head", "method", "trainer", "logger", "sweep")
EXIT_USER_ERROR = 2
_failures: list[str] = []


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)


def _resolve_device(name: str) -> Any:
    import torch

    from molabench.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_MAX_RECORDED_WARNINGS = 50


@contextmanager
def _warnings_into(record: dict[str, Any]) -> Iterator[None]:
    """Show each warning of a run (skipped images, an md5 mismatch, ...) as one ``warning:`` line
    and keep it in the record, so what a run silently worked around can be read back later."""
    kept: list[str] = record.setdefault("warnings", [])

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = str(message) if category is UserWarning else f"{category.__name__}: {message}"
        print(f"warning: {text}", file=sys.stderr)
        if len(kept) < _MAX_RECORDED_WARNINGS:
            kept.append(text)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def run(cfg: Mapping[str, Any], task_overrides: list[str], parallel_job: bool) -> dict[str, Any]:
    """Train one configuration and write its record; returns the record."""
    import torch

    from molabench.data import build_data
    from molabench.engine.algorithm import build_algorithm, build_architecture
    from molabench.engine.trainer import fit
    from molabench.loggers import build_logger
    from molabench.report.records import RECORD_NAME, environment, variant_overrides, write_json_atomic
    from molabench.report.summary import run_summary

    method, seed = cfg["method"]["name"], int(cfg["seed"])
    run_id = cfg.get("run_id") or f"{method}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    run_dir = Path(cfg["results_dir"]) / "runs" / str(cfg["experiment"]) / run_id
    record: dict[str, Any] = {
        "run_id": run_id,
        "experiment": cfg["experiment"],
        "method": method,
        "data": cfg["data"]["name"],
        "seed": seed,
        "overrides": variant_overrides(task_overrides),
        "status": "running",
        "config": dict(cfg),
    }
    started = time.time()
    with _warnings_into(record):
        try:
            if cfg["trainer"].get("threads"):
                torch.set_num_threads(int(cfg["trainer"]["threads"]))
            elif parallel_job:
                torch.set_num_threads(1)  # parallel jobs share the cores: one thread each
            device = _resolve_device(str(cfg.get("device", "auto")))
            _seed_everything(seed)
            data = build_data(cfg["data"])
            record["data"] = data.name
            record["tasks"] = [{"name": t.name, "column": t.display, "num_classes": t.num_classes, "kind": t.kind} for t in data.tasks]
            record["setting"] = data.setting
            _seed_everything(seed)
            head = cfg.get("head")
            algorithm = build_algorithm(cfg["method"], cfg["backbone"], data, head)
            hps_total = _count(build_architecture({"architecture": {"name": "hps"}}, cfg["backbone"], data, head).parameters())
            total = _count(algorithm.parameters())
            params = {"total": total, "trainable": _count(algorithm.trainable_parameters()), "added": total - hps_total, "hps_total": hps_total}
            params["penalties"] = _count(algorithm.penalties.parameters())
            params.update(algorithm.arch.param_counts())  # e.g. MoLA: adapter / router counts
            record["params"] = params
            logger = build_logger(cfg["logger"], cfg, run_id, str(run_dir))
            progress = cfg["trainer"].get("progress", "auto")
            show = sys.stderr.isatty() if progress == "auto" else bool(progress)
            result = fit(algorithm, data, cfg["trainer"], device, seed, logger, progress=show and not parallel_job)
            record.update(
                status="complete",
                metrics=result.metrics,
                history=result.history,
                selection={**result.selection, "epoch": result.selected_epoch},
                timing=result.timing,
            )
            if result.notes:
                record["notes"] = result.notes
            record["summary"] = run_summary(record, Path(cfg["results_dir"]) / "runs")
            final = result.metrics.get("test") or result.metrics.get("val") or {}
            logger.finish({**{f"final/{k}": v for k, v in _flat(final).items()}, "final/delta_m": record["summary"].get("delta_m")})
            if cfg["trainer"].get("checkpoint"):
                from molabench.atomic import atomic_write

                atomic_write(run_dir / "model.pt", lambda tmp: torch.save(algorithm.state_dict(), tmp))
        except BaseException as exc:  # user error, bug or Ctrl-C: the record says so; the caller reports it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            record["env"] = environment(locals().get("device", "unknown"))
            record["wall_s"] = time.time() - started
            write_json_atomic(run_dir / RECORD_NAME, record)
            record["path"] = str(run_dir / RECORD_NAME)
    return record


def _flat(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{task}/{name}": value for task, values in metrics.items() for name, value in values.items() if name != "n"}


def print_summary(record: Mapping[str, Any]) -> None:
    """Every task's metrics (its kind's, in table order) on the val and test splits, then Δm%."""
    from molabench.data.base import TaskSpec
    from molabench.tasks import kind_of

    metrics = record["metrics"]
    splits = [s for s in ("val", "test") if s in metrics]
    print(f"\n{record['method']} on {record['data']} (seed {record['seed']}), selection={record['selection']['protocol']} epoch {record['selection']['epoch']}")
    rows: list[tuple[str, str, str]] = []  # (task label, metric label, metric key)
    labels: dict[str, str] = {}
    for task in record["tasks"]:
        kind = kind_of(TaskSpec(task["name"], int(task.get("num_classes") or 0), task.get("kind", "classification")))
        labels.update(kind.labels())
        rows += [(task["name"] if i == 0 else "", m.label, f"{task['name']}/{m.name}") for i, m in enumerate(kind.metrics)]
    averaged = [k for k in metrics[splits[-1]].get("avg", {}) if k != "loss"]
    rows += [("avg" if i == 0 else "", labels.get(name, name), f"avg/{name}") for i, name in enumerate(averaged)]
    print(f"{'task':<16}{'metric':<10}" + "".join(f"{s:>12}" for s in splits))
    for task, label, key in rows:
        name, metric = key.split("/", 1)
        print(f"{task:<16}{label:<10}" + "".join(f"{_num(metrics[s].get(name, {}).get(metric)):>12}" for s in splits))
    summary = record.get("summary") or {}
    if summary.get("delta_m") is not None:
        print(f"Δm% vs {summary['baseline']} ({summary['baseline_runs']} run(s)): {summary['delta_m']:+.2f}  (lower is better)")
    for note in record.get("notes") or []:
        print(f"note: {note}")
    timing = record["timing"]
    print(f"train {timing['train_s']:.1f}s  step {timing['step_s_median'] * 1000:.1f} ms  {timing['samples_per_s']:.0f} samples/s")
    print(f"record: {record['path']}")


def _num(value: Any) -> str:
    return "nan" if not isinstance(value, (int, float)) or value != value else f"{value:.4g}" if abs(value) < 10 else f"{value:.2f}"


def _user_config_dirs(argv: list[str]) -> list[Path] | None:
    """The folders ``hydra.searchpath=[...]`` / ``--config-dir`` add, or ``None`` when one of them
    is not a local folder (a ``pkg://`` of a missing package, an interpolation, another scheme)
    or the override does not parse: then Hydra alone judges the config-group choices."""
    from molabench.config_path import user_config_dirs
    from molabench.errors import ConfigError

    try:
        folders = user_config_dirs(argv)
    except Exception:  # a malformed hydra.searchpath: _check_overrides reports it
        return None
    local = [folder for folder in folders if folder is not None]
    if len(local) < len(folders):
        return None
    for folder in local:
        if not folder.is_dir():
            raise ConfigError(f"config folder {folder} (hydra.searchpath / --config-dir) does not exist")
    return local


def _check_group_choices(argv: list[str]) -> None:
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


def _check_overrides(argv: list[str]) -> None:
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
            OmegaConf.to_container(compose(config_name="config", overrides=first), resolve=True)
    except Exception as exc:  # compose raises several unrelated exception types
        message = " ".join(line.strip() for line in str(exc).splitlines()[:2] if line.strip())
        raise ConfigError(f"invalid configuration: {message}") from None


def _task(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from molabench.errors import MolabenchError

    hydra_cfg = HydraConfig.get()
    parallel = "joblib" in str(hydra_cfg.launcher.get("_target_", ""))
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # omegaconf raises several unrelated types for bad interpolations
        print(f"error: invalid configuration: {exc}".splitlines()[0], file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    try:
        record = run(resolved, list(hydra_cfg.overrides.task), parallel)
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _failures.append(str(exc))
        if not multirun:
            raise SystemExit(EXIT_USER_ERROR) from None
        return
    if not parallel:
        print_summary(record)


def main() -> None:
    from molabench.errors import MolabenchError

    try:
        _check_group_choices(sys.argv[1:])
        if not any(arg in ("--help", "-h", "--hydra-help", "--info") or arg.startswith("--cfg") for arg in sys.argv[1:]):
            _check_overrides(sys.argv[1:])
    except MolabenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None

    import hydra

    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(_task)()
    if _failures:
        raise SystemExit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
