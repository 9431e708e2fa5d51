"""``@register(name)``: put a weighting class in the registry with checked hyper-parameters.

Every builder accepts ``num_tasks`` (the trainer always passes it; methods with learnable or
per-task state need it, the others ignore it). Its signature is the class's, so ``Registry.build``
rejects an unknown hyper-parameter with a :class:`ConfigError` naming the valid ones: a typo in
``method.weighting`` fails loudly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

from molabench.errors import ConfigError
from molabench.registry import declare_keywords
from molabench.weighting import WEIGHTINGS
from molabench.weighting.base import Weighting

W = TypeVar("W", bound=type[Weighting])


def register(name: str) -> Callable[[W], W]:
    def decorator(cls: W) -> W:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("self",)]

        def builder(**hparams: object) -> Weighting:  # keys already checked by Registry.build against __signature__
            if "num_tasks" not in accepted:
                hparams.pop("num_tasks", None)
            return cls(**hparams)

        builder.__doc__ = cls.__doc__
        # the class's own parameters (+ num_tasks) as the builder's signature: Registry.build checks keys against it
        params = [p for p in inspect.signature(cls).parameters.values() if p.name != "self"]
        if "num_tasks" not in accepted:
            params.append(inspect.Parameter("num_tasks", inspect.Parameter.KEYWORD_ONLY, default=None))
        declare_keywords(builder, params)
        WEIGHTINGS.register(name)(builder)
        return cls

    return decorator


def require_num_tasks(name: str, num_tasks: int | None) -> int:
    if num_tasks is None or num_tasks < 1:
        raise ConfigError(f"weighting {name!r} has per-task parameters: build it with num_tasks=<number of tasks>")
    return int(num_tasks)
