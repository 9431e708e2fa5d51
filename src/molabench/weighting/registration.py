"""``@register(name)``: put a weighting class in the registry with checked hyper-parameters.

Every builder accepts ``num_tasks`` (the trainer always passes it; methods with learnable or
per-task state need it, the others ignore it) and rejects unknown hyper-parameters with a
:class:`ConfigError` naming the valid ones, so a typo in ``method.weighting`` fails loudly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

from molabench.errors import ConfigError
from molabench.weighting import WEIGHTINGS
from molabench.weighting.base import Weighting

W = TypeVar("W", bound=type[Weighting])


def register(name: str) -> Callable[[W], W]:
    def decorator(cls: W) -> W:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("self",)]

        def builder(**hparams: object) -> Weighting:
            if "num_tasks" not in accepted:
                hparams.pop("num_tasks", None)
            unknown = sorted(set(hparams) - set(accepted))
            if unknown:
                raise ConfigError(
                    f"weighting {name!r} has no hyper-parameter {', '.join(unknown)}; valid ones: {', '.join(accepted) or 'none'}"
                )
            return cls(**hparams)

        builder.__doc__ = cls.__doc__
        WEIGHTINGS.register(name)(builder)
        return cls

    return decorator


def require_num_tasks(name: str, num_tasks: int | None) -> int:
    if num_tasks is None or num_tasks < 1:
        raise ConfigError(f"weighting {name!r} has per-task parameters: build it with num_tasks=<number of tasks>")
    return int(num_tasks)
