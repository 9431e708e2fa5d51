"""A catalogue of bad inputs, each run through ``python -m molabench.train`` as a user would.

Every case must end with a non-zero exit and one ``error:`` line that names what is wrong and
how to fix it, and must leave nothing half-written under ``results_dir``: no ``checkpoint.pt``
or ``model.pt``, no temporary files, no record other than a ``failed`` one (some configuration
errors are found once the run has started, and its record then says ``failed`` with the error),
and a complete record that was there before is left byte for byte as it was.

The table holds the cases whose setup is a few files; cases that need a run first (a damaged
checkpoint, a damaged image cache, a complete run in the way) or that are about the results
folder itself or the table builder are the standalone tests below it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.cli import SMOKE, assert_one_line_error, records, train
from tests.test_data_generic import make_tree, write_npz

SENTINEL = {  # a complete record of another run, planted before every case: it must come out unchanged
    "run_id": "sentinel",
    "identity": "0" * 64,
    "experiment": "shapes",
    "method": "hps",
    "data": "shapes_tasks",
    "seed": 0,
    "status": "complete",
    "tasks": [{"name": "shape", "column": "shape", "num_classes": 6, "kind": "classification"}],
    "metrics": {"test": {"shape": {"acc": 50.0}, "avg": {"acc": 50.0}}},
}


def plant_sentinel(results: Path) -> Path:
    path = results / "runs" / "shapes" / "sentinel" / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(SENTINEL))
    return path


def assert_no_partial_output(results: Path, untouched: dict[Path, bytes] | None = None) -> None:
    """Nothing half-written under ``results``: no training state, no temporary file, only ``failed``
    records besides the ``untouched`` files, which keep their bytes."""
    untouched = untouched or {}
    if not results.exists():
        return
    files = [p for p in results.rglob("*") if p.is_file()]
    leftovers = [p for p in files if p.name in ("checkpoint.pt", "model.pt") and p not in untouched]
    leftovers += [p for p in files if p.suffix == ".tmp" or p.name.startswith(("tmp", ".tmp")) or ".tmp" in p.name]
    assert not leftovers, leftovers
    for path, content in untouched.items():
        assert path.read_bytes() == content, f"{path} was modified"
    for record_path in results.rglob("record.json"):
        if record_path in untouched:
            continue
        record = json.loads(record_path.read_text())
        assert record["status"] == "failed" and record.get("error"), record_path


# ---------------------------------------------------------------------------------------- setups


def npz_truncated(tmp: Path) -> None:
    write_npz(tmp / "arrays", "alpha", 3)
    write_npz(tmp / "arrays", "beta", 2)
    path = tmp / "arrays" / "beta.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted copy


def npz_missing_key(tmp: Path) -> None:
    write_npz(tmp / "arrays", "alpha", 3, test_labels=None)


def npz_damaged_member(tmp: Path) -> None:
    """The zip directory intact, the compressed bytes of an array flipped (a bad disk, a bad download)."""
    root = tmp / "arrays"
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": np.tile(np.arange(64, dtype=np.uint8), (n, 1)).reshape(n, 8, 8) for s, n in (("train", 20), ("test", 6))}
    arrays |= {f"{s}_labels": rng.integers(0, 3, n) for s, n in (("train", 20), ("test", 6))}
    np.savez_compressed(root / "alpha.npz", **arrays)
    data = bytearray((root / "alpha.npz").read_bytes())
    for i in range(80, 120):
        data[i] ^= 0xFF
    (root / "alpha.npz").write_bytes(bytes(data))


def npy_not_npz(tmp: Path) -> None:
    (tmp / "arrays").mkdir()
    with open(tmp / "arrays" / "alpha.npz", "wb") as f:  # np.save to an open file keeps the name
        np.save(f, np.zeros((4, 8, 8), dtype=np.uint8))


def folder_all_unreadable(tmp: Path) -> None:
    """Every image garbage (e.g. a folder of HTML error pages saved as .jpg): one error, not a line per file."""
    for path in make_tree(tmp / "mytasks", {"xray": ["normal", "pneumonia"], "skin": ["a", "b"]}, per_class=4):
        path.write_bytes(b"<html>404</html>")


def folder_list_names_missing_image(tmp: Path) -> None:
    make_tree(tmp / "mytasks", {"xray": ["normal", "pneumonia"], "skin": ["a", "b"]}, per_class=4)
    (tmp / "mytasks" / "train.txt").write_text("xray/normal/im0.jpg\nxray/normal/gone.jpg\n")
    (tmp / "mytasks" / "test.txt").write_text("xray/normal/im1.png\n")


def folder_lists_missing(tmp: Path) -> None:
    make_tree(tmp / "mytasks", {"xray": ["normal", "pneumonia"], "skin": ["a", "b"]}, per_class=4)


def random_bytes_weights(tmp: Path) -> None:
    (tmp / "w.pth").write_bytes(np.random.default_rng(0).bytes(4096))


def truncated_weights(tmp: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp / "w.pth")
    (tmp / "w.pth").write_bytes((tmp / "w.pth").read_bytes()[:2000])


def tensor_weights(tmp: Path) -> None:
    torch.save(torch.zeros(3), tmp / "w.pth")


def unrelated_weights(tmp: Path) -> None:
    torch.save({"encoder.something": torch.zeros(3)}, tmp / "w.pth")


# ---------------------------------------------------------------------------------------- the table

NPZ = ["trainer=smoke", "data=npz_tasks", "data.root={tmp}/arrays"]
FOLDER = ["trainer=smoke", "data=folder_tasks", "data.root={tmp}/mytasks", "data.image_size=16", "data.cache_dir={tmp}/cache"]
W = "backbone.pretrained={tmp}/w.pth"

# (id, args, fragments of the error line, setup); args hold {tmp} for the test's folder; SMOKE is
# prepended unless the args start with "trainer=" (a data set of their own)
CASES: list[tuple[str, list[str], tuple[str, ...], Callable[[Path], None] | None]] = [
    # trainer
    ("epochs-not-a-number", ["trainer.epochs=abc"], ("trainer.epochs must be an integer", "'abc'"), None),
    ("epochs-zero", ["trainer.epochs=0"], ("trainer.epochs must be at least 1",), None),
    ("batch-size-negative", ["trainer.batch_size=-1"], ("trainer.batch_size must be at least 1", "-1"), None),
    ("lr-negative", ["trainer.optimizer.lr=-1"], ("trainer.optimizer.lr must be positive", "-1"), None),
    ("lr-not-a-number", ["trainer.optimizer.lr=fast"], ("trainer.optimizer.lr must be positive", "1e-3", "'fast'"), None),
    # the registries' message names the kind ("optimizer") and the choices, not the dotted key
    ("optimizer-unknown", ["trainer.optimizer.name=nope"], ("unknown optimizer 'nope'", "adam, adamw, sgd"), None),
    ("scheduler-unknown", ["trainer.scheduler.name=nope"], ("unknown scheduler 'nope'", "cosine, none, step"), None),
    ("optimizer-option-not-taken", ["trainer.optimizer.momentum=0.9"], ("trainer.optimizer.momentum does not apply to optimizer adam", "remove it"), None),
    ("selection-unknown", ["trainer.selection=nope"], ("trainer.selection 'nope'", "val, paper, delta_m, last"), None),
    ("batching-unknown", ["trainer.batching=nope"], ("trainer.batching must be mixed or per_task", "'nope'"), None),
    ("bn-stats-unknown", ["trainer.bn_stats=nope"], ("trainer.bn_stats must be one of batch, per_task", "'nope'"), None),
    ("resume-unknown", ["trainer.resume=nope"], ("trainer.resume must be one of auto, never, must", "'nope'"), None),
    ("checkpoint-every-junk", ["trainer.checkpoint_every=junk"], ("trainer.checkpoint_every must be", "'N steps'", "'junk'"), None),
    ("grad-clip-negative", ["trainer.grad_clip=-1"], ("trainer.grad_clip must be at least 0",), None),
    ("device-unknown", ["device=tpu"], ("device='tpu'", "use device=auto, cpu"), None),
    ("key-unknown", ["trainer.epoch=3"], ("invalid configuration", "trainer.epoch"), None),
    # data
    ("image-size-zero", ["data.image_size=0"], ("data.image_size must be an integer of at least 16", "0"), None),
    ("image-size-not-a-number", ["data.image_size=abc"], ("data.image_size must be an integer", "'abc'"), None),
    ("n-train-negative", ["data.n_train=-5"], ("data.n_train must be an integer of at least 1", "-5"), None),
    ("task-unknown", ["data.tasks=[nope]"], ("['nope']", "choose from ['shape', 'colour', 'size', 'quadrant']"), None),
    ("data-unknown", ["data=nope"], ("unknown data 'nope'", "shapes", "configs/data/"), None),
    # backbone
    ("backbone-unknown", ["backbone=nope"], ("unknown backbone 'nope'", "resnet18", "configs/backbone/"), None),
    ("weights-missing", ["backbone.pretrained=/nonexistent.pth"], ("'/nonexistent.pth' not found", "backbone.pretrained=null"), None),
    ("weights-random-bytes", [W], ("w.pth", "does not load as a torch state dict", "backbone.pretrained"), random_bytes_weights),
    ("weights-truncated", [W], ("w.pth", "does not load as a torch state dict", "backbone.pretrained"), truncated_weights),
    ("weights-not-a-state-dict", [W], ("w.pth", "holds a Tensor, not a state dict", "backbone.pretrained=null"), tensor_weights),
    ("weights-of-another-network", [W], ("w.pth", "matches backbone parameters", "right architecture"), unrelated_weights),
    ("vit-patch-larger-than-image", ["backbone=vit_tiny", "backbone.patch_size=32"], ("backbone.patch_size", "(16, data.image_size)", "got 32", "null"), None),
    ("vit-patch-negative", ["backbone=vit_tiny", "backbone.patch_size=-1"], ("backbone.patch_size", "got -1"), None),
    # an 8-pixel ViT input would be fine for the backbone (patch 2), but the shapes data draws nothing below 16 px
    ("vit-image-too-small", ["backbone=vit_tiny", "data.image_size=8"], ("data.image_size must be an integer of at least 16", "8"), None),
    # method
    ("method-unknown", ["method=nope"], ("unknown method 'nope'", "hps", "configs/method/"), None),
    ("mola-rank-zero", ["method=mola_grad", "method.rank=0"], ("method.rank must be an integer >= 1", "got 0"), None),
    ("mola-rank-negative", ["method=mola_grad", "method.rank=-2"], ("method.rank must be an integer >= 1", "got -2"), None),
    ("mola-rank-not-a-number", ["method=mola_grad", "method.rank=abc"], ("method.rank must be an integer >= 1", "'abc'"), None),
    ("weighting-unknown", ["method.weighting.name=nope"], ("unknown weighting 'nope'", "pcgrad"), None),
    ("mmoe-experts-zero", ["method=mmoe", "method.architecture.num_experts=0"], ("method.architecture.num_experts must be an integer >= 1", "got 0"), None),
    ("mmoe-experts-not-a-number", ["method=mmoe", "method.architecture.num_experts=abc"], ("method.architecture.num_experts", "'abc'"), None),
    # impossible combinations
    ("selfreg-on-multi-input-data", ["method=selfreg"], ("method selfreg", "one label space", "data=shapes_domains"), None),
    ("uniform-with-per-task-bn", ["method=uniform", "trainer.bn_stats=per_task"], ("method=uniform must not see task ids", "use trainer.bn_stats=batch"), None),
    ("stagewise-on-vit", ["method=cross_stitch", "backbone=vit_tiny"], ("method=cross_stitch", "needs a ResNet backbone", "backbone=resnet18"), None),
    ("experiment-escapes", ["experiment=../escape"], ("experiment='../escape' is not a valid folder name", "no '..'"), None),
    ("run-id-escapes", ["run_id=../x"], ("run_id='../x' is not a valid folder name", "no '..'"), None),
    # a run that diverges: the first step's loss is NaN
    ("loss-nan", ["trainer.optimizer.lr=1e30"], ("loss became nan", "lower trainer.optimizer.lr", "trainer.grad_clip"), None),
    # data files
    ("npz-truncated", NPZ, ("beta.npz is not a readable .npz file", "numpy.savez"), npz_truncated),
    ("npz-missing-key", NPZ, ("alpha.npz lacks key(s) ['test_labels']", "save train_images, train_labels, test_images, test_labels"), npz_missing_key),
    ("npz-damaged-array", NPZ, ("alpha.npz: train_images/train_labels is damaged", "numpy.savez"), npz_damaged_member),
    ("npz-is-an-npy", NPZ, ("alpha.npz holds one .npy array, not an .npz archive", "numpy.savez"), npy_not_npz),
    ("npz-root-missing", ["trainer=smoke", "data=npz_tasks", "data.root={tmp}/nothere"], ("data.root", "nothere does not exist", "set data.root=DIR"), None),
    ("npz-root-unset", ["trainer=smoke", "data=npz_tasks"], ("data=npz_tasks needs data.root", "set data.root=DIR"), None),
    ("folder-all-images-unreadable", FOLDER, ("16 unreadable images", "mytasks/", "re-extract the dataset or raise data.max_unreadable"), folder_all_unreadable),
    ("folder-list-names-missing-image", [*FOLDER, "data.split=lists"], ("train.txt:2", "'xray/normal/gone.jpg'", "fix data.root or the list file"), folder_list_names_missing_image),
    ("folder-lists-absent", [*FOLDER, "data.split=lists"], ("data.split=lists needs train.txt and test.txt", "data.split=per_domain"), folder_lists_missing),
    ("folder-root-missing", ["trainer=smoke", "data=folder_tasks", "data.root={tmp}/nothere"], ("nothere does not exist", "set data.root=DIR"), None),
]


@pytest.mark.parametrize(("args", "fragments", "setup"), [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_a_bad_input_is_one_line_and_leaves_nothing_half_written(tmp_path, args, fragments, setup):
    if setup is not None:
        setup(tmp_path)
    results = tmp_path / "results"
    sentinel = plant_sentinel(results)
    before = sentinel.read_bytes()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = train(*(argv if argv[0].startswith("trainer=") else [*SMOKE, *argv]), results=results)
    assert_one_line_error(proc, *fragments)
    assert_no_partial_output(results, {sentinel: before})


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30 and len({case[0] for case in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------- damaged caches


def test_a_damaged_image_cache_entry_is_rebuilt_with_a_warning(tmp_path):
    make_tree(tmp_path / "mytasks", {"xray": ["normal", "pneumonia"], "skin": ["a", "b"]}, per_class=4)
    args = [a.replace("{tmp}", str(tmp_path)) for a in FOLDER]
    first = train(*args, "run_id=first", results=tmp_path / "results")
    assert first.returncode == 0, first.stderr
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated: e.g. a full disk while copying the cache
    meta = entries[1].with_suffix(".json")
    meta.write_text("{not json")
    proc = train(*args, "run_id=second", results=tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: rebuilding the damaged image cache entry")]
    assert len(warned) == 2 and str(entries[0]) in warned[0] + warned[1], proc.stderr
    assert "Traceback" not in proc.stderr
    by_id = {r["run_id"]: r for r in records(tmp_path / "results")}
    assert by_id["second"]["status"] == "complete"
    assert by_id["second"]["metrics"] == by_id["first"]["metrics"]  # the same images, decoded again
    np.load(entries[0])  # rebuilt, complete again
    json.loads(meta.read_text())
    assert not list((tmp_path / "cache").glob("*.tmp")) and not list((tmp_path / "cache").glob(".*"))


def _interrupted_run(tmp_path: Path, checkpoint: bytes) -> tuple[list[str], Path]:
    """A run folder as a stopped run leaves it (record ``interrupted``, its identity, a checkpoint)
    whose checkpoint.pt holds ``checkpoint``. The identity is that of a real run of ``args``."""
    args = [*SMOKE, "run_id=r1"]
    results = tmp_path / "results"
    assert train(*args, results=results).returncode == 0
    run_dir = results / "runs" / "shapes" / "r1"
    record = json.loads((run_dir / "record.json").read_text())
    for key in ("metrics", "selection", "timing", "summary"):
        record.pop(key, None)
    record.update(status="interrupted", error="interrupted by SIGTERM", resumable=True)
    (run_dir / "record.json").write_text(json.dumps(record))
    (run_dir / "checkpoint.pt").write_bytes(checkpoint)
    return args, run_dir


def _truncated_checkpoint(tmp_path: Path) -> bytes:
    torch.save({"format": 1, "identity": "x", "model": {"w": torch.zeros(1000)}}, tmp_path / "whole.pt")
    return (tmp_path / "whole.pt").read_bytes()[:1500]


@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "empty"])
def test_resume_must_refuses_a_damaged_checkpoint_in_one_line_and_changes_nothing(tmp_path, kind):
    damaged = {"truncated": _truncated_checkpoint(tmp_path), "random-bytes": np.random.default_rng(1).bytes(4096), "empty": b""}[kind]
    args, run_dir = _interrupted_run(tmp_path, damaged)
    before = {p: p.read_bytes() for p in (run_dir / "record.json", run_dir / "checkpoint.pt")}
    proc = train(*args, "trainer.resume=must", results=tmp_path / "results")
    assert_one_line_error(proc, "cannot resume run r1", "checkpoint.pt does not load", "trainer.resume=auto")
    # the damaged checkpoint and the interrupted record are the user's to inspect: both kept as they were
    for path, content in before.items():
        assert path.read_bytes() == content


def test_resume_auto_trains_afresh_over_a_damaged_checkpoint_with_a_warning(tmp_path):
    # docs/long_runs.md: trainer.resume=auto resumes from a checkpoint when it can, else starts the run;
    # a checkpoint that does not load is the "else" (with a warning line), not an error
    args, run_dir = _interrupted_run(tmp_path, _truncated_checkpoint(tmp_path))
    proc = train(*args, results=tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warned) == 1 and warned[0].startswith("warning: starting run r1 afresh") and "does not load" in warned[0], proc.stderr
    (record,) = records(tmp_path / "results")
    assert record["status"] == "complete" and "resumed_from" not in record
    assert not (run_dir / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------------------- a complete run in the way


def test_a_complete_record_is_never_overwritten_by_another_configuration(tmp_path):
    results = tmp_path / "results"
    assert train(*SMOKE, "run_id=r1", results=results).returncode == 0
    (record_path,) = results.rglob("record.json")
    before = record_path.read_bytes()
    proc = train(*SMOKE, "run_id=r1", "trainer.epochs=1", results=results)
    assert_one_line_error(proc, "run_id=r1 already holds a complete run of a different configuration", "choose another run_id")
    proc = train(*SMOKE, "run_id=r1", "trainer.resume=never", results=results)
    assert_one_line_error(proc, "run r1 is already complete", "delete that folder or choose another run_id")
    assert record_path.read_bytes() == before
    assert sorted(p.name for p in record_path.parent.iterdir()) == [".lock", "record.json"]


# ---------------------------------------------------------------------------------------- results folders


def test_a_results_dir_that_is_a_file(tmp_path):
    target = tmp_path / "results"
    target.write_text("my notes\n")
    assert_one_line_error(train(*SMOKE, results=target), "results_dir", "is not writable", "choose another results_dir")
    assert target.read_text() == "my notes\n"


def test_a_results_dir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(train(*SMOKE, results=tmp_path / "file" / "results"), "file/results", "choose another results_dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_read_only_results_dir(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o500)
    try:
        probe = results / "probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            pytest.skip("this user writes into a 0o500 folder (root ignores permissions): no read-only folder to test")
        assert_one_line_error(train(*SMOKE, results=results), "results_dir", "is not writable", "choose another results_dir")
        assert list(results.iterdir()) == []
    finally:
        results.chmod(0o700)


def test_a_read_only_run_folder_fails_before_training(tmp_path):
    """A results folder readable but not writable deeper down (the experiment's folder)."""
    results = tmp_path / "results"
    sentinel = plant_sentinel(results)
    before = sentinel.read_bytes()
    experiment = sentinel.parent.parent
    experiment.chmod(0o500)
    try:
        if os.access(experiment, os.W_OK):
            pytest.skip("this user writes into a 0o500 folder (root ignores permissions): no read-only folder to test")
        assert_one_line_error(train(*SMOKE, results=results), "is not writable", "choose another results_dir")
    finally:
        experiment.chmod(0o700)
    assert_no_partial_output(results, {sentinel: before})


# ---------------------------------------------------------------------------------------- the table builder


def _tables(results: Path) -> tuple[int, str, str]:
    from molabench.report.tables import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--results", str(results)])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r.pop("metrics"), "lacks metrics"),
        (lambda r: r.pop("tasks"), "lacks tasks"),
        (lambda r: r.pop("method"), "lacks method"),
        (lambda r: r.pop("experiment"), "lacks experiment"),
        (lambda r: r.update(metrics={}), "lacks metrics.test (or metrics.val)"),
        (lambda r: r.update(tasks=[{"column": "shape"}]), "lacks tasks[].name"),
    ],
    ids=["metrics", "tasks", "method", "experiment", "metrics-empty", "task-name"],
)
def test_the_table_builder_names_a_record_that_lacks_keys(tmp_path, change, fragment):
    results = tmp_path / "results"
    good = plant_sentinel(results)
    bad = dict(SENTINEL, run_id="bad")
    change(bad)
    bad_path = results / "runs" / "shapes" / "bad" / "record.json"
    bad_path.parent.mkdir()
    bad_path.write_text(json.dumps(bad))
    code, out, err = _tables(results)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(bad_path) in lines[0] and fragment in lines[0] and "re-run that run or delete its folder" in lines[0]
    assert "Traceback" not in out + err
    assert not (results / "tables").exists()  # checked before any table is written
    assert good.read_bytes() == json.dumps(SENTINEL).encode()


def test_the_table_builder_names_a_record_that_is_not_an_object(tmp_path):
    results = tmp_path / "results"
    plant_sentinel(results)
    bad_path = results / "runs" / "shapes" / "bad" / "record.json"
    bad_path.parent.mkdir()
    bad_path.write_text("[1, 2]")
    code, _, err = _tables(results)
    assert code == 2 and err.strip().splitlines() == [f"error: {bad_path} holds a JSON list, not a run record; re-run that run or delete its folder"]


def test_the_table_builder_still_skips_incomplete_records_without_those_keys(tmp_path):
    results = tmp_path / "results"
    plant_sentinel(results)
    running = results / "runs" / "shapes" / "running" / "record.json"
    running.parent.mkdir()
    running.write_text(json.dumps({"status": "running", "experiment": "shapes", "data": "shapes_tasks"}))
    code, out, err = _tables(results)
    assert code == 0, err
    assert "skipped 1 running run(s)" in out
