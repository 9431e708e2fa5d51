"""Packaging: the configs ship inside the package, user config folders join Hydra's search path,
and a wheel installed into a fresh virtualenv trains from an unrelated directory."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import molabench
from molabench.cli_checks import check_group_choices, check_overrides
from molabench.config_path import PACKAGE, config_dir, entry_dir, search_path_entries, strip_config_dir_flags
from molabench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMOKE = ["trainer=smoke", "data.n_train=16", "data.n_val=8", "data.n_test=8", "data.image_size=16"]

USER_DATA = """\
# a user's dataset: the registered shapes builder with their own options
defaults:
  - shapes
  - _self_
n_train: 16
n_val: 8
n_test: 8
image_size: 16
tasks: [shape, colour]
"""
USER_METHOD = """\
# a user's method: HPS with uncertainty weighting
defaults:
  - hps
  - _self_
name: myhps
weighting:
  name: uw
"""
USER_SWEEP = """\
# @package _global_
defaults:
  - override /data: mydata
  - override /trainer: smoke
experiment: mysweep
hydra:
  sweeper:
    params:
      method: hps,myhps
      seed: 0,1
"""


@pytest.fixture
def user_configs(tmp_path: Path) -> Path:
    """A user's own config folder with a dataset, a method and a sweep."""
    folder = tmp_path / "my_configs"
    for group, name, text in (("data", "mydata", USER_DATA), ("method", "myhps", USER_METHOD), ("sweep", "mysweep", USER_SWEEP)):
        (folder / group).mkdir(parents=True)
        (folder / group / f"{name}.yaml").write_text(text)
    return folder


def _expected_packages() -> set[str]:
    """Every folder of src/molabench holding files, and every config group of configs/."""
    found = {"molabench", PACKAGE}
    for base, prefix in ((ROOT / "src" / "molabench", "molabench"), (CONFIGS, PACKAGE)):
        for folder in base.rglob("*"):
            if folder.is_dir() and folder.name != "__pycache__" and any(p.is_file() for p in folder.iterdir()):
                found.add(".".join([prefix, *folder.relative_to(base).parts]))
    return found


def test_pyproject_lists_every_package_and_maps_the_configs():
    tomllib = pytest.importorskip("tomllib")
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == {"": "src", PACKAGE: "configs"}
    missing = _expected_packages() - set(setuptools_cfg["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml, or the wheel lacks them"


def test_configs_resolve_to_the_live_checkout_in_a_development_install():
    if not Path(molabench.__file__).resolve().is_relative_to(ROOT / "src"):
        pytest.skip("molabench is installed from a wheel here, not from this checkout")
    assert config_dir() == CONFIGS.resolve()


def test_search_path_entries_come_from_config_dir_flags_and_the_searchpath_override(tmp_path):
    argv = ["--config-dir", str(tmp_path), "data=x", f"hydra.searchpath=[file://{tmp_path}/a,pkg://my_package.configs]"]
    assert search_path_entries(argv) == [f"file://{tmp_path}", f"file://{tmp_path}/a", "pkg://my_package.configs"]
    assert search_path_entries([f"--config-dir={tmp_path}"]) == [f"file://{tmp_path}"]
    assert strip_config_dir_flags(argv) == argv[2:]
    assert entry_dir("pkg://molabench.report") == Path(molabench.__file__).resolve().parent / "report"
    assert entry_dir("file://${oc.env:HOME}/configs") is None and entry_dir("structured://x") is None


def test_group_choices_include_the_user_config_folders(user_configs):
    with pytest.raises(ConfigError, match=r"unknown data 'mydata'; choose one of: .*shapes"):
        check_group_choices(["data=mydata"])
    for add in ([f"hydra.searchpath=[file://{user_configs}]"], ["--config-dir", str(user_configs)], [f"-cd={user_configs}"]):
        check_group_choices([*add, "data=mydata", "method=myhps,hps", "+sweep=mysweep"])
        with pytest.raises(ConfigError, match=rf"unknown data 'mydat'; choose one of: .*mydata.*{re.escape(f'(configs/data/, {user_configs}/data/)')}"):
            check_group_choices([*add, "data=mydat"])
    with pytest.raises(ConfigError, match="does not exist"):
        check_group_choices([f"hydra.searchpath=[file://{user_configs}/nope]", "data=mydata"])
    check_group_choices(["hydra.searchpath=[pkg://not_a_package_here]", "data=mydata"])  # Hydra judges those


def test_early_composition_honours_the_user_search_path(user_configs):
    searchpath = f"hydra.searchpath=[file://{user_configs}]"
    check_overrides([searchpath, "data=mydata", "method=myhps", "data.n_train=4"])
    check_overrides(["--config-dir", str(user_configs), "-m", "+sweep=mysweep", "seed=0,1"])
    with pytest.raises(ConfigError, match="invalid configuration"):
        check_overrides(["data=mydata"])
    with pytest.raises(ConfigError, match=r"data\.bogus"):
        check_overrides([searchpath, "data=mydata", "data.bogus=1"])


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    """Build the wheel offline from a copy of the working tree (no build/ or egg-info in the checkout)."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("src", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(source)], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("molabench-*.whl")
    return wheel


def _dependency_paths() -> list[str]:
    """The folders this interpreter imports the dependencies from: its ``sys.path`` without the
    standard library and without the checkout's own folders (``src/``, ``tests/``; a virtualenv
    inside the checkout stays)."""
    stdlib = {Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")}
    stdlib |= {folder / "lib-dynload" for folder in stdlib}
    paths = [Path(p).resolve() for p in sys.path if p and Path(p).is_dir()]
    checkout = [p for p in paths if p.is_relative_to(ROOT) and p.name not in ("site-packages", "dist-packages")]  # not .venv
    kept = [p for p in paths if p not in stdlib and p not in checkout]
    return [str(p) for p in dict.fromkeys(kept)]


def _fresh_venv(tmp_path: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A new virtualenv holding the wheel; the dependencies (torch, hydra, ...) come from this
    interpreter's site-packages through a path-only .pth file, which adds those folders without
    running their own .pth files: an editable install's link to this checkout stays out."""
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).stdout.strip())
    (site / "_molabench_test_deps.pth").write_text("".join(f"{path}\n" for path in _dependency_paths()))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python", str(python)]
    _run([*pip, "install", "--no-deps", "--no-index", "--no-compile", str(wheel)], tmp_path, env)
    return venv


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains_from_any_directory(tmp_path, user_configs):
    for module in ("pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed here: cannot build the wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", PYTHONNOUSERSITE="1", PIP_NO_INPUT="1")

    wheel = _build_wheel(tmp_path, env)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("molabench/configs/") for n in names if n.startswith("molabench/configs/")}
    assert shipped == {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")}
    assert {"config.yaml", "data/shapes.yaml", "sweep/table6_rank_vlcs.yaml", "trainer/smoke.yaml"} <= shipped
    assert any(n.startswith("molabench/paper_tables/") and n.endswith(".csv") for n in names)
    assert "molabench/train.py" in names and "molabench/config_path.py" in names

    venv = _fresh_venv(tmp_path, wheel, env)
    python, bindir = str(venv / "bin" / "python"), venv / "bin"
    elsewhere = tmp_path / "elsewhere"  # no configs/, no src/: an unrelated working directory
    elsewhere.mkdir()

    probe = "import json, sys, molabench, molabench.train as t; print(json.dumps([molabench.__file__, str(t.CONFIG_DIR), sys.path]))"
    module_file, configs, path = json.loads(_run([python, "-c", probe], elsewhere, env).stdout)
    site = (venv / "lib").resolve()
    assert Path(module_file).resolve().is_relative_to(site), module_file
    assert Path(configs).resolve().is_relative_to(site) and Path(configs).name == "configs", configs
    assert str(ROOT / "src") not in path and not any(Path(p).resolve() == ROOT for p in path if p)

    # python -m with a user config folder on the search path; explicit results_dir
    results = tmp_path / "results-a"
    searchpath = f"hydra.searchpath=[file://{user_configs}]"
    _run([python, "-m", "molabench.train", searchpath, "data=mydata", "method=myhps", "trainer=smoke", "run_id=a", f"results_dir={results}"], elsewhere, env)
    record = json.loads((results / "runs" / "shapes" / "a" / "record.json").read_text())
    assert record["status"] == "complete" and record["method"] == "myhps" and record["config"]["method"]["weighting"]["name"] == "uw"
    assert set(record["metrics"]["test"]) == {"shape", "colour", "avg"}

    # the console scripts: results land in ./results of the working directory
    _run([str(bindir / "molabench-train"), *SMOKE, "run_id=b"], elsewhere, env)
    record = json.loads((elsewhere / "results" / "runs" / "shapes" / "b" / "record.json").read_text())
    assert record["status"] == "complete" and set(record["metrics"]) == {"train", "val", "test"}
    _run([str(bindir / "molabench-tables")], elsewhere, env)
    assert list((elsewhere / "results" / "tables").glob("shapes__*.md"))

    # sweeps compose from the installed package, a user's sweep from the user's folder
    shown = _run([python, "-m", "molabench.train", "+sweep=table6_rank_vlcs", "--cfg", "all"], elsewhere, env).stdout
    assert "experiment: table6_rank_vlcs" in shown and "method.rank: 1,4,8,16,64" in shown
    shown = _run([python, "-m", "molabench.train", "--config-dir", str(user_configs), "+sweep=mysweep", "--cfg", "all"], elsewhere, env).stdout
    assert "experiment: mysweep" in shown and "method: hps,myhps" in shown
    assert not (elsewhere / "configs").exists() and not list(elsewhere.glob("outputs"))
