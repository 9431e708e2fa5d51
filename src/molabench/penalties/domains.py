"""What the domain-generalisation penalties (MMD, MMD-AAE, SelfReg, DANN) need from the setting and the
architecture, checked once with one clear line each."""

from __future__ import annotations

from molabench.architectures.base import Architecture
from molabench.errors import ConfigError


def needs_domains(method: str, arch: Architecture) -> None:
    """One clear line when the data has no per-sample domain (single-input: every image serves every task)."""
    if arch.setting == "single_input":
        raise ConfigError(
            f"method {method} aligns or discriminates domains, but on single-input data every image serves every task "
            "(no domain label): use it with domain data (e.g. data=pacs, data=shapes_domains)"
        )
    if not arch.has_shared_representation:
        raise ConfigError(
            f"method {method} needs one shared representation per sample; architecture {type(arch).__name__} has none "
            "(use method.architecture.name=uniform, hps or mola_grad)"
        )


def representation_dim(arch: Architecture) -> int:
    """Width of ``Forward.representation`` (pooled features, or MMD-AAE's code)."""
    dim = arch.representation_dim
    if dim is None:
        raise ConfigError(f"architecture {type(arch).__name__} does not state its representation width (representation_dim)")
    return int(dim)
