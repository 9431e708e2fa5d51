import pytest

from molabench.errors import ConfigError
from molabench.loggers import ConsoleLogger, build_logger


def test_console_logger_prints_epoch_lines(capsys):
    logger = build_logger({"name": "console"}, {}, "run", "/tmp")
    assert isinstance(logger, ConsoleLogger)
    logger.log({"epoch": 1, "train/loss": 0.5, "val/avg/acc": 90.0, "val/shape/acc": 80.0}, step=10)
    logger.log({"loss": 1.0}, step=11)  # per-step values stay off the console
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["epoch=1  train/loss=0.5  val/avg/acc=90"]


def test_wandb_logger_writes_offline_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = build_logger({"name": "wandb", "mode": "offline", "project": "t", "dir": str(tmp_path)}, {"seed": 0}, "run", str(tmp_path))
    logger.log({"epoch": 1, "train/loss": 0.5}, step=1)
    logger.finish({"test/avg/acc": 50.0})
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    # the same run folder again (a resumed run): the same wandb run id
    again = build_logger({"name": "wandb", "mode": "offline", "project": "t", "dir": str(tmp_path)}, {"seed": 0}, "run", str(tmp_path))
    assert again.run.id == logger.run.id
    again.finish({})
    other = build_logger({"name": "wandb", "mode": "offline", "project": "t", "dir": str(tmp_path)}, {"seed": 0}, "run", str(tmp_path / "x"))
    assert other.run.id != logger.run.id
    other.finish({})


def test_unknown_logger_and_mode():
    with pytest.raises(ConfigError, match="logger=console or logger=wandb"):
        build_logger({"name": "tensorboard"}, {}, "run", "/tmp")
    with pytest.raises(ConfigError, match="offline, online or disabled"):
        build_logger({"name": "wandb", "mode": "sometimes"}, {}, "run", "/tmp")
