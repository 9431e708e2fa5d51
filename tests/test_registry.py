import pytest

from molabench.errors import ConfigError
from molabench.registry import Registry


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
