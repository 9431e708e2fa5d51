"""A tiny name -> builder registry so that every component is selectable from a config."""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from molabench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders; unknown names raise a :class:`ConfigError` that lists the choices.

    >>> BACKBONES = Registry("backbone")
    >>> @BACKBONES.register("resnet18")
    ... def resnet18(**kw): ...

    With ``package``, the first lookup imports every module of that package (except ``base``),
    so that one module per component registers itself and no list of names is kept by hand.
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._builders: dict[str, Callable[..., T]] = {}
        self._populated = package is None

    def populate(self) -> None:
        """Import the modules of ``package`` (once)."""
        if self._populated or self.package is None:
            return
        for info in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
            if info.name != "base":
                importlib.import_module(f"{self.package}.{info.name}")
        self._populated = True  # only after every import succeeded: a broken module fails every lookup, loudly

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        self.populate()
        try:
            return self._builders[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._builders, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Choose one of: {', '.join(sorted(self._builders))}"
            ) from None

    def build(self, name: str, **kwargs: object) -> T:
        """Build ``name`` with ``kwargs``; a keyword the builder does not take is a one-line
        :class:`ConfigError` naming it and the accepted ones (no builder swallows unknown keys)."""
        builder = self.get(name)
        try:
            signature = inspect.signature(builder)
        except (TypeError, ValueError):  # builtins without a signature: let the call decide
            return builder(**kwargs)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
            accepted = [p for p in signature.parameters if p != "self"]
            unknown = sorted(set(kwargs) - set(accepted))
            if unknown:
                raise ConfigError(f"{self.kind} {name!r} does not take {', '.join(unknown)}; it accepts: {', '.join(accepted)}")
        return builder(**kwargs)

    def names(self) -> list[str]:
        self.populate()
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        self.populate()
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def declare_keywords(builder: Callable[..., T], params: Iterable[inspect.Parameter]) -> Callable[..., T]:
    """Give a ``**kwargs`` forwarder the signature it really has, so :meth:`Registry.build` checks
    config keys against it: ``builder``'s own named parameters, then ``params`` as keyword-only.

    For builders that forward to a class (``def build(tasks, **hp): return Cls(tasks, **hp)``):
    declaring the class's options keeps the one registry-wide rule, no builder swallows keys.
    """
    own = [p for p in inspect.signature(builder).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    builder.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        own + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    )
    return builder
