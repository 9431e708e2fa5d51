"""HPS: hard parameter sharing (Caruana, 1997) — one shared encoder, one head per task."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from molabench.architectures import ARCHITECTURES
from molabench.architectures.base import SharedEncoderWithHeads
from molabench.data.base import Setting, TaskSpec
from molabench.models.encoder import Encoder


@ARCHITECTURES.register("hps")
def hps(
    tasks: Sequence[TaskSpec], setting: Setting, backbone: Callable[[], Encoder], head: Mapping[str, Any] | None = None
) -> SharedEncoderWithHeads:
    return SharedEncoderWithHeads(tasks, setting, backbone(), head)
