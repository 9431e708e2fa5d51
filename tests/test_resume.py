"""Crash-safe, resumable runs: checkpoints hold the whole training state, a resumed run is the
same run bit for bit, records exist from the start, sweeps report every job."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.cli import train

from molabench.data.loader import BatchLoader
from molabench.engine.checkpoint import (
    Checkpointer,
    CheckpointSchedule,
    Interrupted,
    check_run_path,
    fingerprint,
    load_checkpoint,
)
from molabench.errors import ConfigError
from molabench.models.encoder import Encoder

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer=smoke", "data.n_train=16", "data.n_val=8", "data.n_test=8", "data.image_size=16"]


def compose(*overrides: str) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from molabench.config_path import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=list(overrides)), resolve=True)  # type: ignore[return-value]


# -- the loader's position inside an epoch --------------------------------------------------------


class _Prefetching:
    """A split that asks the loader to prefetch (like file-backed sources)."""

    prefetch = True

    def __init__(self, source: Any) -> None:
        self.source = source

    @property
    def tasks(self) -> torch.Tensor:
        return self.source.tasks

    def __len__(self) -> int:
        return len(self.source)

    def load(self, indices: torch.Tensor) -> Any:
        return self.source.load(indices)


def _flip(x: torch.Tensor, y: Any, gen: torch.Generator) -> tuple[torch.Tensor, Any]:
    """An augmentation that draws from the loader's generator."""
    return (x.flip(3) if float(torch.rand(1, generator=gen)) < 0.5 else x), y


def _variant(data: Any, prefetch: bool) -> Any:
    splits = dict(data.splits)
    if prefetch:
        splits["train"] = _Prefetching(splits["train"])
    return replace(data, splits=splits, augment=_flip)


@pytest.mark.parametrize("batching", ["mixed", "per_task"])
@pytest.mark.parametrize("prefetch", [False, True])
def test_the_loader_continues_an_interrupted_epoch_exactly(tiny_shapes, batching, prefetch):
    data = _variant(tiny_shapes, prefetch)
    reference = BatchLoader(data, "train", 12, train=True, batching=batching, seed=5)
    expected = [b.x for _ in range(2) for b in reference]  # two epochs (per_task: the cyclers wrap)
    for cut in (1, 4, len(reference) - 1, len(reference)):
        first = BatchLoader(data, "train", 12, train=True, batching=batching, seed=5)
        it = iter(first)
        got = [next(it).x for _ in range(cut)]
        second = BatchLoader(data, "train", 12, train=True, batching=batching, seed=0)
        second.load_state_dict(first.state_dict())
        got += [b.x for b in second]  # the rest of the interrupted epoch (nothing after its last batch)
        got += [b.x for b in second]  # and the next one
        assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), cut


# -- every piece of training state is checkpointed --------------------------------------------


class _TinyEncoder(Encoder):
    """A few thousand parameters (with BatchNorm buffers): checkpoints of kilobytes, not 180 MB."""

    def __init__(self, in_channels: int = 3, **_: Any) -> None:
        super().__init__(16, "tiny_test")
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Dropout(0.2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(autouse=True)
def tiny_backbone(monkeypatch):
    from molabench.models.backbones import BACKBONES

    monkeypatch.setitem(BACKBONES._builders, "tiny_test", _TinyEncoder)


def _setup(method: str, *extra: str, data: Any = None) -> tuple[dict[str, Any], Any, Any]:
    from molabench.data import build_data
    from molabench.engine.algorithm import build_algorithm
    from molabench.run import seed_everything

    cfg = compose(f"method={method}", *TINY, "trainer.epochs=3", *extra)
    if not method.startswith("mola"):  # MoLA needs a stage-wise ResNet
        cfg["backbone"] = {"name": "tiny_test"}
    data = data or build_data(cfg["data"])
    seed_everything(cfg["seed"])
    algorithm = build_algorithm(cfg["method"], cfg["backbone"], data, cfg.get("head"))
    return cfg, data, algorithm


class _Keeping(Checkpointer):
    """Keeps the bytes of every checkpoint it writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept: list[bytes] = []

    def save(self, state: dict[str, Any]) -> None:
        super().save(state)
        self.kept.append(self.path.read_bytes())


def _fit(method: str, extra: tuple[str, ...], data: Any, checkpoints: Checkpointer) -> Any:
    from molabench.engine.trainer import fit
    from molabench.loggers import build_logger

    cfg, data, algorithm = _setup(method, *extra, data=data)
    logger = build_logger({"name": "console", "quiet": True}, cfg, "t", None)
    return fit(algorithm, data, cfg["trainer"], torch.device("cpu"), cfg["seed"], logger, progress=False, checkpoints=checkpoints)


def _same(a: Any, b: Any) -> bool:
    return json.dumps([a.metrics, a.history, a.selected_epoch]) == json.dumps([b.metrics, b.history, b.selected_epoch])


@pytest.mark.parametrize(
    ("method", "extra", "prefetch"),
    [
        ("dwa", ("trainer.batch_size=12",), False),  # loss history; mixed batches
        ("nash_mtl", ("trainer.batching=per_task", "trainer.batch_size=12"), True),  # step counter; cyclers; prefetch
        ("gradvac", ("trainer.batching=per_task",), False),  # EMA targets (buffer); random pair order (global torch RNG)
        ("rlw", ("trainer.max_steps_per_epoch=2", "trainer.batch_size=8"), True),  # global RNG; a cut epoch
        ("eqrm", ("method.weighting.burnin=0.4", "trainer.batch_size=12"), False),  # optimiser re-created mid-run
        ("dann", ("method.algorithm.name=adversarial", "trainer.batch_size=12"), False),  # two optimisers; D/G counter
    ],
)
def test_resuming_from_any_checkpoint_gives_the_same_run(tiny_shapes, tmp_path, method, extra, prefetch):
    data = _variant(tiny_shapes, prefetch)
    every = _Keeping(tmp_path / "c.pt", CheckpointSchedule(1, "step"))
    reference = _fit(method, extra, data, every)
    assert len(every.kept) >= 7  # every step, and the end of training
    for blob in every.kept:
        (tmp_path / "r.pt").write_bytes(blob)
        state = load_checkpoint(tmp_path / "r.pt")  # weights_only=True
        resumed = _fit(method, extra, data, Checkpointer(tmp_path / "d.pt", CheckpointSchedule(0), resume=state))
        position = state["position"]
        assert _same(resumed, reference), (method, position["epoch"], position["step"], position["phase"])


def _sigterm_at_the_second_evaluation(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the trainer's second evaluation raise SIGTERM's :class:`Interrupted`; returns the real
    ``evaluate`` (to put back)."""
    import molabench.engine.trainer as trainer

    real, calls = trainer.evaluate, []

    def interrupted_second_time(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", interrupted_second_time)
    return real


def test_a_signal_during_evaluation_checkpoints_the_state_before_it(tiny_shapes, tmp_path, monkeypatch):
    import molabench.engine.trainer as trainer

    data = _variant(tiny_shapes, False)
    reference = _fit("dwa", (), data, Checkpointer(tmp_path / "ref.pt", CheckpointSchedule(0)))
    real = _sigterm_at_the_second_evaluation(monkeypatch)
    with pytest.raises(Interrupted):
        _fit("dwa", (), data, Checkpointer(tmp_path / "c.pt", CheckpointSchedule(0)))
    monkeypatch.setattr(trainer, "evaluate", real)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["position"]["phase"] == "eval" and state["position"]["epoch"] == 1
    resumed = _fit("dwa", (), data, Checkpointer(tmp_path / "d.pt", CheckpointSchedule(0), resume=state))
    assert _same(resumed, reference)


_TRANSIENT = {"last_weights", "_buffer", "training"}  # per-step scratch, and nn.Module's mode flag


def _plain_attributes(module: torch.nn.Module) -> dict[str, str]:
    """The module's attributes besides parameters, buffers, submodules and torch's hook tables."""
    hooks = ("_forward", "_backward", "_state_dict", "_load_state")
    skip = {"_parameters", "_buffers", "_modules"} | _TRANSIENT
    return {k: json.dumps(v, default=repr, sort_keys=True) for k, v in vars(module).items() if k not in skip and not k.startswith(hooks)}


def _weighting_methods() -> list[str]:
    """Every method config whose architecture runs on the tiny encoder and multi-input data (the stage-wise
    and expert architectures need a ResNet, SelfReg domain data; their weighting, EW, is covered by ``ew``)."""
    import yaml

    light = {"hps", "uniform", "single_task", "mola_grad", "mola_router", "coded"}
    out = []
    for path in sorted((ROOT / "configs" / "method").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if cfg["architecture"]["name"] in light and path.stem != "selfreg":
            out.append(path.stem)
    return out


@pytest.mark.parametrize("method", _weighting_methods())
def test_every_weighting_state_that_training_changes_is_checkpointed(tiny_shapes, method):
    """Training changes a weighting only in its parameters/buffers (state_dict) or in attributes
    it declares in ``state_attributes``; anything else would be lost by a resumed run."""
    _, _, algorithm = _setup(method, "trainer.batching=per_task")
    weighting = algorithm.weighting
    before = _plain_attributes(weighting)
    algorithm.configure_optimizers({"name": "sgd", "lr": 0.01}, None, total_steps=10, steps_per_epoch=5)
    loader = BatchLoader(tiny_shapes, "train", 8, train=True, batching="per_task")
    for i, batch in enumerate(loader):
        algorithm.update(batch)
        if i == 2:
            break
    weighting.on_epoch_end(0, torch.ones(4))
    weighting.on_epoch_end(1, torch.full((4,), 0.5))
    after = _plain_attributes(weighting)
    changed = {k for k in after if before.get(k) != after[k]}
    undeclared = changed - set(weighting.state_names())
    assert not undeclared, f"{type(weighting).__name__} changes {undeclared} outside state_dict and state_attributes"
    blob = io.BytesIO()
    torch.save(weighting.training_state(), blob)
    blob.seek(0)
    fresh = _setup(method, "trainer.batching=per_task")[2].weighting
    fresh.load_training_state(torch.load(blob, weights_only=True))
    restored = _plain_attributes(fresh)
    assert all(restored[name] == after[name] for name in weighting.state_names())


# -- identity, names, schedule ----------------------------------------------------------------


def test_identity_ignores_where_and_how_visibly_a_run_happens():
    cfg = compose(*TINY)
    same = compose(*TINY, "results_dir=/elsewhere", "device=cpu", "trainer.progress=false", "trainer.checkpoint_every=3", "logger.quiet=true")
    other = compose(*TINY, "trainer.optimizer.lr=0.01")
    assert fingerprint(cfg) == fingerprint(same) != fingerprint(other)
    assert fingerprint(cfg) != fingerprint(compose(*TINY, "seed=1"))


@pytest.mark.parametrize(("experiment", "run_id"), [("shapes", "../x"), ("shapes", "a/b"), ("../up", "x"), ("/abs", "x"), ("a/../b", "x"), ("shapes", ""), ("shapes", ".."), ("sh apes", "x")])
def test_run_folders_cannot_escape_the_results(experiment, run_id):
    with pytest.raises(ConfigError, match="not a valid folder name"):
        check_run_path(experiment, run_id)


def test_nested_experiments_and_usual_run_ids_are_fine():
    check_run_path("ablations/rank", "mola_grad-s0-1a2b3c4d")
    check_run_path("table5_nyuv2", "x.y_z+1=2,3@4")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, CheckpointSchedule(1, "epoch")), ("2 epochs", CheckpointSchedule(2, "epoch")), ("50 steps", CheckpointSchedule(50, "step")),
     ("1step", CheckpointSchedule(1, "step")), (0, CheckpointSchedule(0)), ("never", CheckpointSchedule(0)), (False, CheckpointSchedule(0))],
)
def test_checkpoint_every_parses(value, expected):
    assert CheckpointSchedule.parse(value) == expected


@pytest.mark.parametrize("value", ["often", -1, "3 hours", "1.5"])
def test_a_bad_checkpoint_every_is_one_line(value):
    with pytest.raises(ConfigError, match=r"trainer\.checkpoint_every"):
        CheckpointSchedule.parse(value)


# -- the run's record and the resume policy (in-process) --------------------------------------


def _run(tmp_path: Path, *extra: str) -> dict[str, Any]:
    from molabench.run import run

    cfg = compose(*TINY, "trainer.epochs=1", "logger.quiet=true", f"results_dir={tmp_path}", *extra)
    cfg["backbone"] = {"name": "tiny_test"}
    return run(cfg, [o for o in extra if not o.startswith("results_dir")], parallel_job=False)


def test_a_complete_run_is_skipped_then_protected(tmp_path):
    first = _run(tmp_path, "run_id=a")
    path = Path(first["path"])
    assert first["status"] == "complete" and not (path.parent / "checkpoint.pt").exists()
    text = path.read_text()
    stale = path.parent / ".checkpoint.pt.k1ll3d.tmp"  # what kill -9 during a checkpoint write leaves
    stale.write_bytes(b"half")
    again = _run(tmp_path, "run_id=a")
    assert again["skipped"] and again["metrics"] == first["metrics"] and path.read_text() == text
    assert not stale.exists()
    with pytest.raises(ConfigError, match="different configuration"):
        _run(tmp_path, "run_id=a", "trainer.optimizer.lr=0.5")
    with pytest.raises(ConfigError, match="already complete"):
        _run(tmp_path, "run_id=a", "trainer.resume=never")
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        _run(tmp_path, "run_id=b", "trainer.resume=must")
    assert path.read_text() == text  # never replaced
    default = _run(tmp_path)
    assert default["run_id"] == f"hps-s0-{default['identity'][:8]}"


def test_an_unwritable_results_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="is not writable"):
        _run(tmp_path, f"results_dir={blocker / 'results'}")


def test_non_finite_evaluation_fails_unless_a_note_explains_it():
    from molabench.engine.trainer import check_finite
    from molabench.errors import TrainingError

    fine = {"seg": {"miou": float("nan"), "loss": 1.0}, "avg": {"loss": 1.0, "miou": float("nan")}}
    check_finite("test", fine, ["test: seg: classes [3] absent from the split and never predicted: IoU undefined"], "x")
    with pytest.raises(TrainingError, match="seg/miou=nan"):
        check_finite("test", fine, [], "x")
    with pytest.raises(TrainingError, match="seg/loss=nan"):
        check_finite("val", {"seg": {"miou": 1.0, "loss": float("nan")}}, ["val: seg: anything"], "after epoch 1")
    with pytest.raises(TrainingError, match="inf"):
        check_finite("val", {"depth": {"abs_err": float("inf"), "loss": 1.0}}, [], "after epoch 1")


def test_tables_count_the_runs_they_leave_out():
    from molabench.report.tables import _heading, collect

    complete = {"status": "complete", "experiment": "e", "data": "shapes", "selection": {"protocol": "val"}, "method": "hps",
                "metrics": {"test": {}}, "tasks": [{"name": "shape", "num_classes": 3}], "config": {}, "overrides": []}
    others = [{"status": s, "experiment": "e", "data": "shapes", "config": {"trainer": {"selection": "val"}}} for s in ("running", "failed", "failed", "interrupted")]
    (group,) = collect([complete, *others])
    assert group.skipped == {"failed": 2, "interrupted": 1, "running": 1}
    assert "Not in the table (not complete): 2 failed, 1 interrupted, 1 running." in _heading(group)


# -- the real thing: processes killed at several points, then the same command again ---------


def _command(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "molabench.train", *TINY, "method=dwa", "trainer.epochs=3", "trainer.batch_size=8", "trainer.checkpoint_every=2 steps",
            "seed=1", f"results_dir={results}", *extra]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLABENCH_TEST_PAUSE")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _stop_at(results: Path, point: str, how: signal.Signals, pause_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the command, pausing at ``point``; once it is there send ``how``; returns the ended process."""
    marker = results / f"paused-{point.replace(':', '-')}"
    env = _env(MOLABENCH_TEST_PAUSE=point, MOLABENCH_TEST_PAUSE_FILE=str(marker), MOLABENCH_TEST_PAUSE_S=str(pause_s))
    with subprocess.Popen(_command(results), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached " + point
            time.sleep(0.05)
        os.kill(proc.pid, how)
        out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _record(results: Path) -> dict[str, Any]:
    (path,) = (results / "runs").rglob("record.json")
    return json.loads(path.read_text())


def digest(record: dict[str, Any]) -> str:
    """The hash of what must not change: the metrics and the per-epoch history."""
    return hashlib.sha256(json.dumps([record["metrics"], record["history"]], sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.slow
def test_a_run_killed_again_and_again_ends_as_the_uninterrupted_run(tmp_path):
    plain = train(*_command(tmp_path / "plain")[3:])  # the uninterrupted run, in this process (tests/cli.py)
    assert plain.returncode == 0, plain.stderr
    reference = _record(tmp_path / "plain")

    results = tmp_path / "killed"
    # kill -9 in the middle of epoch 2 (step 5; the last checkpoint is after step 4, mid-epoch)
    killed = _stop_at(results, "step:5", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    record = _record(results)
    assert record["status"] == "running" and record["progress"]["step"] == 1 and Path(record["checkpoint"]).is_file()
    position = load_checkpoint(Path(record["checkpoint"]))["position"]
    assert (position["epoch"], position["step"], position["phase"]) == (1, 1, "train")
    # SIGTERM during the evaluation after epoch 2: the state before it is saved, then exit 143
    termed = _stop_at(results, "eval:2", signal.SIGTERM)
    assert termed.returncode == 128 + signal.SIGTERM, termed.stderr
    assert "resuming run" in termed.stderr and "Traceback" not in termed.stderr
    record = _record(results)
    assert record["status"] == "interrupted" and record["resumable"] and record["attempts"] == 2
    assert load_checkpoint(Path(record["checkpoint"]))["position"]["phase"] == "eval"
    # SIGTERM in the middle of a step of epoch 3: the step ends, is checkpointed, then exit 143
    termed = _stop_at(results, "step:8", signal.SIGTERM, pause_s=1)
    assert termed.returncode == 128 + signal.SIGTERM, termed.stderr
    assert load_checkpoint(Path(_record(results)["checkpoint"]))["position"]["step"] == 2
    # kill -9 during the final evaluation of the selected weights
    assert _stop_at(results, "final:3", signal.SIGKILL).returncode == -signal.SIGKILL
    # the same command again: resumes and completes
    done = train(*_command(results)[3:])
    assert done.returncode == 0, done.stderr
    record = _record(results)
    assert record["status"] == "complete" and record["attempts"] == 5 and not Path(record["checkpoint"]).exists()
    assert record["metrics"] == reference["metrics"] and record["history"] == reference["history"]
    assert digest(record) == digest(reference)
    print(f"\nrecord digests: uninterrupted {digest(reference)}  killed 4 times {digest(record)}")
    # and once more: nothing to do
    again = train(*_command(results)[3:])
    assert again.returncode == 0 and "already complete" in again.stderr and _record(results)["attempts"] == 5


# -- sweeps -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_reports_every_job_and_fails_when_one_failed(tmp_path, launcher):
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    args = ["-m", *TINY, "trainer.epochs=1", "trainer.max_steps_per_epoch=1,0", *extra, f"results_dir={tmp_path}"]
    first = train(*args)
    assert first.returncode == 2, first.stderr
    assert "sweep summary: 2 job(s): 1 complete, 1 failed" in first.stdout, first.stdout
    (failure,) = [line for line in first.stdout.splitlines() if line.strip().startswith("failed ")]
    assert "trainer.max_steps_per_epoch=0" in failure and failure.endswith("trainer.max_steps_per_epoch must be at least 1, got 0")
    second = train(*args)
    assert second.returncode == 2 and "1 skipped (already complete), 1 failed" in second.stdout, second.stdout


def test_resuming_with_changed_code_is_flagged(tmp_path, monkeypatch):
    import molabench.engine.checkpoint as checkpoint
    import molabench.engine.trainer as trainer

    args = (*TINY, "trainer.epochs=2", "trainer.max_steps_per_epoch=1", "run_id=c")
    real = _sigterm_at_the_second_evaluation(monkeypatch)
    first = train(*args, results=tmp_path)
    assert first.returncode == 128 + signal.SIGTERM and _record(tmp_path)["status"] == "interrupted", first.stderr
    monkeypatch.setattr(trainer, "evaluate", real)
    written_by = load_checkpoint(tmp_path / "runs" / "shapes" / "c" / "checkpoint.pt")["code"]
    assert written_by == checkpoint.code_version() and _record(tmp_path)["env"]["code"] == written_by
    monkeypatch.setattr(checkpoint, "_CODE_VERSION", "0" * 16)  # as if molabench's source had changed since
    second = train(*args, results=tmp_path)
    assert second.returncode == 0, second.stderr
    (warning,) = [line for line in second.stderr.splitlines() if line.startswith("warning: resuming run c with changed molabench code")]
    assert written_by in warning and "trainer.resume=never" in warning
    record = _record(tmp_path)
    assert record["status"] == "complete" and record["resumed_from"]["code_changed"] is True
    assert (record["resumed_from"]["code_before"], record["resumed_from"]["code_now"]) == (written_by, "0" * 16)


def test_tables_keep_the_latest_run_of_a_row_and_seed():
    from molabench.report.tables import _heading, collect

    def run(seed: int, heartbeat: float, acc: float) -> dict[str, Any]:
        return {"status": "complete", "experiment": "e", "data": "shapes", "selection": {"protocol": "val"}, "method": "hps", "seed": seed,
                "heartbeat": heartbeat, "metrics": {"test": {"shape": {"acc": acc}}}, "tasks": [{"name": "shape", "num_classes": 3}],
                "config": {}, "overrides": []}  # fmt: skip

    (group,) = collect([run(0, 2.0, 50.0), run(0, 1.0, 40.0), run(1, 1.0, 60.0), run(0, 3.0, 55.0)])
    (rows,) = group.runs.values()
    assert sorted((r["seed"], r["metrics"]["test"]["shape"]["acc"]) for r in rows) == [(0, 55.0), (1, 60.0)]
    assert group.superseded == 2 and "2 older run(s) of a row and seed left out for the latest." in _heading(group)
