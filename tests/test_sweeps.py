"""Every sweep config composes, and its sweep parameters parse into the runs the paper's tables need."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from molabench.config_path import config_dir

CONFIGS = config_dir()  # the checkout's configs/ under an editable install, the package's otherwise
SWEEPS = sorted(p.stem for p in (CONFIGS / "sweep").glob("*.yaml"))


def _runs(params: dict) -> int:
    parser = OverridesParser.create()
    total = 1
    for key, value in params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        total *= len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
    return total


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_composes(sweep):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert params and _runs(params) >= 2
    assert cfg.experiment == ("builtin" if sweep == "builtin_baselines" else sweep)


def test_list_valued_sweeps_expand_into_one_run_per_list():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+sweep=table9_router_sharing"], return_hydra_config=True)
    (stages,) = OverridesParser.create().parse_overrides([f"method.stages={cfg.hydra.sweeper.params['method.stages']}"])
    assert [str(v) for v in stages.sweep_string_iterator()] == [
        "[layer1,layer4]",
        "[layer3,layer4]",
        "[layer1,layer2,layer3,layer4]",
    ]


TABLE_SWEEPS = [s for s in SWEEPS if s in ("table1_radimagenet", "table2_vlcs", "table3_officehome", "table4_medmnist", "table5_nyuv2")]


@pytest.mark.parametrize("sweep", TABLE_SWEEPS)
def test_table_sweeps_name_every_row_of_the_paper_that_molabench_has(sweep):
    """A method row of the paper's table whose method has a config here must be in the sweep."""
    from molabench.report.paper import PAPER_LABELS, load_table

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
    swept = set(str(cfg.hydra.sweeper.params["method"]).split(","))
    have = {p.stem for p in (CONFIGS / "method").glob("*.yaml")}
    by_label = {label: method for method, labels in PAPER_LABELS.items() if method != "ew" for label in labels}
    rows = load_table(sweep).rows
    wanted = {by_label[row] for row in rows if row in by_label and by_label[row] in have}
    assert wanted <= swept, f"{sweep} misses {sorted(wanted - swept)}"
    assert len(wanted) >= 5


@pytest.mark.parametrize("sweep", [s for s in SWEEPS if s.startswith("table")])
def test_paper_sweeps_follow_the_authors_protocol_or_say_why_not(sweep):
    """trainer=paper refuses a run whose image size or backbone is not data.protocol's: every combination a
    table sweep launches must pass that check, except a backbone molabench does not have (RadImageNet's
    ShuffleNet), which must fail with the one-line reason."""
    from omegaconf import OmegaConf

    from molabench.errors import ConfigError
    from molabench.models.backbones import BACKBONES
    from molabench.run import check_protocol

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.params)
        choices = [f"{k}={v.split(',')[0]}" for k, v in params.items() if k in ("data", "backbone")]
        job = compose(config_name="config", overrides=[f"+sweep={sweep}", *choices])
    resolved = OmegaConf.to_container(job, resolve=True)
    wanted = (resolved["data"].get("protocol") or {}).get("backbone")
    if resolved["trainer"].get("follow_protocol") and wanted is not None and wanted not in BACKBONES:
        with pytest.raises(ConfigError, match="does not have"):
            check_protocol(resolved)
    else:
        check_protocol(resolved)


def test_trainer_paper_names_what_to_add_when_the_run_is_not_the_authors_recipe():
    from omegaconf import OmegaConf

    from molabench.errors import ConfigError
    from molabench.run import check_protocol

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        job = compose(config_name="config", overrides=["data=vlcs", "trainer=paper", "data.image_size=64"])
    with pytest.raises(ConfigError, match=r"add data\.image_size=224 backbone=resnet50"):
        check_protocol(OmegaConf.to_container(job, resolve=True))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_of_a_sweep_has_an_optimiser_and_schedule_that_build(sweep):
    """A sweep that overrides part of a recipe (e.g. Adam over a protocol's SGD) must not leave an
    option the optimiser refuses: every job's trainer.optimizer / scheduler build."""
    import itertools

    import torch
    from omegaconf import OmegaConf

    from molabench.engine.optim import build_optimizer, build_scheduler

    parser = OverridesParser.create()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        params = dict(compose(config_name="config", overrides=[f"+sweep={sweep}"], return_hydra_config=True).hydra.sweeper.params)
        choices = []
        for key, value in params.items():
            (override,) = parser.parse_overrides([f"{key}={value}"])
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
            if key in ("method", "seed") or key.startswith("method."):  # the recipe does not depend on them
                values = values[:1]
            choices.append([f"{key}={v}" for v in values])
        for job in itertools.product(*choices):
            cfg = OmegaConf.to_container(compose(config_name="config", overrides=[f"+sweep={sweep}", *job]), resolve=True)
            optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg["trainer"]["optimizer"])
            build_scheduler(optimizer, cfg["trainer"]["scheduler"], total_steps=10, steps_per_epoch=2)
