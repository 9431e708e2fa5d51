"""Mixture of Low-rank Adapters (MoLA, Zhou et al., ICML 2024): layers, injection, routers."""

from molabench.models.mola.inject import default_stages, inject_mola
from molabench.models.mola.layer import MoLAAdapted, MoLAConv2d, MoLALinear
from molabench.models.mola.router import build_router
from molabench.models.mola.routing import Routing

__all__ = ["MoLAAdapted", "MoLAConv2d", "MoLALinear", "Routing", "build_router", "default_stages", "inject_mola"]
