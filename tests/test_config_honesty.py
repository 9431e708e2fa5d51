"""Every key of every shipped configuration does something: composed, run, and read.

A run reads its configuration through :class:`molabench.config_reads.ReadTracker` and records the
set keys it never read (``config_unread``). Strict builders reject keys they do not take; this
checks the rest (keys read by hand). The every-method smoke test (test_cli.py) covers the method
group; the real-data, folder and npz data configs are covered by their own end-to-end tests.
trainer=smoke is in every run below; resnet18_dilated (the dense data's default) stands for
resnet50_dilated, which has the same keys.
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tests.cli import SMOKE, records, train

from molabench.config_path import config_dir
from molabench.config_reads import ReadTracker, interpolation_sources

GROUPS = ("backbone", "data", "head", "logger", "method", "trainer", "sweep")
ONE_STEP = [*SMOKE, "trainer.epochs=1", "trainer.max_steps_per_epoch=1"]
DENSE = ["data=scenes", "data.n_train=4", "data.n_val=4", "data.n_test=4", "data.height=32", "data.width=48", "trainer=smoke",
         "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.batch_size=4"]  # fmt: skip


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_shipped_config_composes_and_resolves(group):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        for option in _options(group):
            override = f"+sweep={option}" if group == "sweep" else f"{group}={option}"
            cfg = compose("config", overrides=[override])
            OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
            for target, sources in interpolation_sources(cfg).items():
                parent, _, key = target.rpartition(".")
                if "oc.select" in str((OmegaConf.select(cfg, parent) if parent else cfg)._get_node(key)._value()):
                    continue  # a default for when the source is absent
                for source in sources:  # every interpolation points at a key that exists
                    assert OmegaConf.select(cfg, source, default="<missing>") != "<missing>", (option, target, source)


RUNS = {
    "trainer=default": [*SMOKE, "trainer=default", "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.batch_size=16"],
    "trainer=cpu": [*SMOKE, "trainer=cpu", "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.batch_size=16"],
    "trainer=paper": [*SMOKE, "trainer=paper", "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.follow_protocol=false"],
    "backbone=resnet18_small": [*ONE_STEP, "backbone=resnet18_small"],
    "backbone=vit_tiny": [*ONE_STEP, "backbone=vit_tiny", "method=mmoe"],
    "data=shapes_domains": [*ONE_STEP, "data=shapes_domains", "method=dann"],
    "data=scenes head=psp": [*DENSE, "head=psp"],
    "data=scenes head=aspp": [*DENSE, "head=aspp", "method=mola_grad"],
    "logger=wandb": [*ONE_STEP, "logger=wandb", "logger.quiet=true"],
}


@pytest.mark.slow
def test_no_shipped_config_key_is_ignored_by_a_run(tmp_path):
    for name, args in RUNS.items():
        results = tmp_path / name.replace(" ", "_").replace("=", "-")
        proc = train(*args, results=results)
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        (record,) = records(results)
        assert record["config_unread"] == [], (name, record["config_unread"])
        assert "never read" not in proc.stderr


def test_a_key_set_but_never_read_is_recorded_and_warned(tmp_path, monkeypatch):
    real = ReadTracker._value

    def forgetting_grad_clip(self, key):  # as if the trainer never looked at trainer.grad_clip
        return None if self._key(key) == "trainer.grad_clip" else real(self, key)

    monkeypatch.setattr(ReadTracker, "_value", forgetting_grad_clip)
    proc = train(*ONE_STEP, "trainer.grad_clip=1.0", results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (record,) = records(tmp_path)
    assert record["config_unread"] == ["trainer.grad_clip"]
    assert "warning: this run never read trainer.grad_clip: these keys had no effect" in proc.stderr


def test_the_tracker_counts_reads_through_unpacking_and_interpolation_sources():
    cfg = ReadTracker(
        {"method": {"rank": 4, "architecture": {"rank": 4, "width": None}}, "trainer": {"lr": 1.0, "epochs": 2}, "data": {"paper": {"table": "t"}}},
        sources={"method.architecture.rank": ["method.rank"]},
    )

    def builder(rank: int, width: int | None) -> int:
        return rank

    assert builder(**cfg["method"]["architecture"]) == 4
    assert cfg["trainer"]["lr"] == 1.0
    assert cfg.unread() == ["trainer.epochs"]  # method.rank via its target; null and data.paper exempt
