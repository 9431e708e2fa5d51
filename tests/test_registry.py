import inspect

import pytest

from molabench.errors import ConfigError
from molabench.registry import Registry, declare_keywords


def test_registered_builder_is_called_with_kwargs():
    reg: Registry[int] = Registry("thing")
    reg.register("double")(lambda x: 2 * x)
    assert reg.build("double", x=4) == 8
    assert "double" in reg and reg.names() == ["double"]


def test_unknown_name_lists_choices_and_suggests():
    reg: Registry[int] = Registry("method")
    reg.register("pcgrad")(lambda: 1)
    reg.register("mgda")(lambda: 2)
    with pytest.raises(ConfigError, match=r"unknown method 'pcgard'. Did you mean 'pcgrad'\? Choose one of: mgda, pcgrad"):
        reg.get("pcgard")


def test_double_registration_is_a_bug():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError):
        reg.register("a")(lambda: 2)


def test_package_registries_list_every_module_on_first_lookup():
    # a fresh interpreter: nothing imported the method modules before the lookup
    import subprocess
    import sys

    code = (
        "from molabench.weighting import WEIGHTINGS\n"
        "from molabench.architectures import ARCHITECTURES\n"
        "assert 'pcgrad' in WEIGHTINGS and len(WEIGHTINGS.names()) >= 15, WEIGHTINGS.names()\n"
        "assert ARCHITECTURES.get('hps') is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_registered_builder_swallows_unknown_keywords():
    """Every builder of every registry has an explicit signature, so ``Registry.build`` rejects a mistyped
    config key in one line instead of the builder ignoring it (a ``**kwargs`` would switch the check off)."""
    import inspect

    from molabench.algorithms import ALGORITHMS
    from molabench.architectures import ARCHITECTURES
    from molabench.data import DATASETS
    from molabench.engine.optim import OPTIMIZERS, SCHEDULERS
    from molabench.models.backbones import BACKBONES
    from molabench.penalties import PENALTIES
    from molabench.tasks import TASK_KINDS
    from molabench.weighting import WEIGHTINGS

    swallowing = []
    for registry in (ALGORITHMS, ARCHITECTURES, DATASETS, OPTIMIZERS, SCHEDULERS, BACKBONES, PENALTIES, TASK_KINDS, WEIGHTINGS):
        for name in registry.names():
            try:
                params = inspect.signature(registry.get(name)).parameters.values()
            except (TypeError, ValueError):
                continue
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
                swallowing.append(f"{registry.kind} {name}")
    assert swallowing == []


def test_a_mistyped_weighting_or_penalty_key_is_rejected():
    from molabench.penalties import PENALTIES
    from molabench.weighting import build

    with pytest.raises(ConfigError, match="weighting 'ew' does not take bogus"):
        build("ew", num_tasks=3, bogus=1)
    with pytest.raises(ConfigError, match="penalty 'twd' does not take omega_dims"):
        PENALTIES.build("twd", arch=None, tasks=[], omega_dims=64)


def test_declare_keywords_makes_a_forwarder_check_its_target_s_keys():
    class Target:
        def __init__(self, a: int, *, rank: int = 8) -> None:
            self.a, self.rank = a, rank

    reg: Registry[Target] = Registry("thing")

    def build(a: int, **hp: object) -> Target:
        return Target(a, **hp)  # type: ignore[arg-type]

    params = [p for n, p in inspect.signature(Target).parameters.items() if n != "a"]
    reg.register("t")(declare_keywords(build, params))
    assert reg.build("t", a=1, rank=4).rank == 4
    with pytest.raises(ConfigError, match="does not take rnak; it accepts: a, rank"):
        reg.build("t", a=1, rnak=4)
