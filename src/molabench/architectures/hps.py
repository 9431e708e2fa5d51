"""HPS: hard parameter sharing (Caruana, 1997) — one shared encoder, one head per task."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import SharedEncoderWithHeads
from molabench.data.base import Setting, TaskSpec


@ARCHITECTURES.register("hps")
def hps(
    tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], nn.Module], head: Mapping[str, Any] | None = None
) -> SharedEncoderWithHeads:
    return SharedEncoderWithHeads(tasks, setting, backbone(), head)
