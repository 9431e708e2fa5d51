"""Experiment loggers: the console always, Weights & Biases on request (``logger=wandb``).

W&B defaults to offline mode: without a network, online mode hangs for minutes before
failing. Set ``logger.mode=online`` explicitly to sync.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from molabench.errors import ConfigError


class Logger(Protocol):
    def set_headline(self, keys: Sequence[str]) -> None:
        """The keys worth a glance each epoch (the console prints these; others may ignore it)."""
        ...

    def log(self, values: Mapping[str, float], step: int) -> None: ...

    def finish(self, summary: Mapping[str, Any]) -> None: ...


class ConsoleLogger:
    """Prints one line per epoch (the progress bar shows the steps)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.headline: tuple[str, ...] | None = None  # None: train loss and average accuracies

    def set_headline(self, keys: Sequence[str]) -> None:
        self.headline = tuple(keys)

    def log(self, values: Mapping[str, float], step: int) -> None:
        if self.quiet or "epoch" not in values:
            return
        if self.headline is None:
            shown = {k: v for k, v in values.items() if k in ("epoch", "train/loss") or k.endswith("/avg/acc")}
        else:
            shown = {k: v for k, v in values.items() if k == "epoch" or k in self.headline}
        text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        print(text, flush=True)

    def finish(self, summary: Mapping[str, Any]) -> None:
        pass


class WandbLogger(ConsoleLogger):
    def __init__(
        self, project: str, mode: str, config: Mapping[str, Any], name: str, directory: str, quiet: bool = False, run_key: str | None = None
    ) -> None:
        super().__init__(quiet)
        if mode not in {"offline", "online", "disabled"}:
            raise ConfigError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        import wandb

        os.makedirs(directory, exist_ok=True)
        # A stable wandb id per molabench run: a resumed run continues the same wandb run (online, or
        # when offline runs are synced) instead of starting a second one.
        self.run = wandb.init(
            project=project, mode=mode, config=dict(config), name=name, dir=directory, reinit=True, id=run_key, resume="allow" if run_key else None
        )

    def log(self, values: Mapping[str, float], step: int) -> None:
        super().log(values, step)
        self.run.log(dict(values), step=step)

    def finish(self, summary: Mapping[str, Any]) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value
        self.run.finish()


def build_logger(cfg: Mapping[str, Any], run_config: Mapping[str, Any], run_name: str, run_dir: str) -> Logger:
    """The logger ``cfg`` names for run ``run_name`` in folder ``run_dir`` (whose path gives wandb a stable run id)."""
    import hashlib

    name = cfg.get("name", "console")
    if name == "console":
        return ConsoleLogger(quiet=bool(cfg.get("quiet", False)))
    if name == "wandb":
        return WandbLogger(
            project=cfg.get("project", "molabench"),
            mode=cfg.get("mode", "offline"),
            config=run_config,
            name=run_name,
            directory=cfg.get("dir") or run_dir,
            quiet=bool(cfg.get("quiet", False)),
            run_key=hashlib.sha256(str(os.path.abspath(run_dir)).encode()).hexdigest()[:16],
        )
    raise ConfigError(f"unknown logger {name!r}; use logger=console or logger=wandb")
