"""Which configuration keys a run actually read: a key nobody reads had no effect.

Strict builders reject keys they do not take, but keys read by hand (``cfg["trainer"].get(...)``)
could be set and silently ignored. :class:`ReadTracker` is the resolved configuration as a
``dict`` that remembers every key read through it (``[]``, ``get``, ``**`` unpacking, ``items``),
nested mappings included; :meth:`ReadTracker.unread` lists the leaves (``a.b.c``) that were set
(not null) and never read. A run records them (``config_unread``) and warns about them, and a
test asserts that every shipped configuration leaves none.

A key that feeds an interpolation (``method.rank`` behind ``method.architecture.rank: ${..rank}``)
counts as read when a key interpolating it was read (:func:`interpolation_sources`). Keys that
other commands read from the record (metadata for the tables) or that only supply defaults are
:data:`NOT_READ_BY_A_RUN`, with the reason beside each.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

#: Dotted prefixes that a training run does not read, by design.
NOT_READ_BY_A_RUN = {
    "data.paper": "the paper's table and columns for this data: read by `make tables` from the record",
    "data.protocol": "the authors' recipe: read by trainer=paper (its interpolations and the protocol check)",
    "data.budget": "the data's default budget: trainer.epochs/batch_size default to it, a trainer may set its own",
    "backbone.mola_stages": "MoLA's default stages on this backbone (ViT: its blocks): read by the MoLA methods' stages default",
    "method.batching": "the method's default batching: trainer.batching defaults to it, the command line may set its own",
}

_INTERPOLATION = re.compile(r"\$\{([^{}]+)\}")


def interpolation_sources(cfg: Any) -> dict[str, list[str]]:
    """``target -> [source, ...]`` for every interpolated key of an (unresolved) OmegaConf config,
    dotted and absolute: ``method.architecture.rank -> [method.rank]`` for ``${..rank}``,
    ``trainer.batching -> [method.batching]`` for ``${oc.select:method.batching,mixed}``."""
    from omegaconf import DictConfig, OmegaConf

    found: dict[str, list[str]] = {}

    def walk(node: Any, path: list[str]) -> None:
        if not isinstance(node, DictConfig):
            return
        for key in node:
            here = [*path, str(key)]
            if OmegaConf.is_interpolation(node, key):
                text = str(node._get_node(key)._value())
                sources = []
                for expression in _INTERPOLATION.findall(text):
                    if ":" in expression:
                        resolver, _, args = expression.partition(":")
                        if resolver != "oc.select":
                            continue
                        expression = args.split(",")[0].strip()
                    dots = len(expression) - len(expression.lstrip("."))
                    base = path[: len(path) - (dots - 1)] if dots else []
                    sources.append(".".join([*base, expression.lstrip(".")]))
                found[".".join(here)] = sources
            else:
                walk(node._get_node(key), here)

    walk(cfg, [])
    return found


def resolved_with_sources(cfg: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """An OmegaConf config resolved to plain containers, and its :func:`interpolation_sources`:
    the two things a run's :class:`ReadTracker` is built from."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True), interpolation_sources(cfg)  # type: ignore[return-value]


class ReadTracker(dict):
    """A ``dict`` over a resolved configuration that records the keys read through it."""

    def __init__(
        self, data: Mapping[str, Any], path: str = "", reads: set[str] | None = None, sources: Mapping[str, list[str]] | None = None
    ) -> None:
        super().__init__(data)
        self._path = path
        self._reads: set[str] = reads if reads is not None else set()
        self._children: dict[str, ReadTracker] = {}
        self._sources = dict(sources or {})  # interpolation target -> its sources (interpolation_sources)

    def _key(self, key: Any) -> str:
        return f"{self._path}{key}"

    def _value(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        self._reads.add(self._key(key))
        if isinstance(value, Mapping) and not isinstance(value, ReadTracker):
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = ReadTracker(value, f"{self._key(key)}.", self._reads, self._sources)
            return child
        return value

    def __getitem__(self, key: Any) -> Any:
        return self._value(key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._value(key) if dict.__contains__(self, key) else default

    # Overriding __iter__ makes ``**tracked`` and ``dict(tracked)`` go through keys() and
    # __getitem__ (CPython's slow merge path), so unpacking into a builder counts as reading.
    def __iter__(self) -> Iterator[Any]:
        return iter(dict.keys(self))

    def keys(self) -> Any:  # type: ignore[override]
        return dict.keys(self)

    def items(self) -> Any:  # type: ignore[override]
        return [(key, self._value(key)) for key in dict.keys(self)]

    def values(self) -> Any:  # type: ignore[override]
        return [self._value(key) for key in dict.keys(self)]

    def unread(self, exempt: Mapping[str, str] = NOT_READ_BY_A_RUN) -> list[str]:
        """Every set (non-null) leaf never read, as ``dotted.key``. A leaf is read when it, or a
        mapping above it, was read, or when a read key interpolates it or a mapping above it."""
        reads = set(self._reads)
        pending = [target for target in self._sources if target in reads]
        while pending:  # reading a target reads its sources, and theirs
            for source in self._sources.get(pending.pop(), []):
                if source not in reads:
                    reads.add(source)
                    pending.append(source)
        found: list[str] = []

        def covered(dotted: str) -> bool:
            parts = dotted.split(".")
            return any(".".join(parts[:i]) in reads for i in range(len(parts), 0, -1) if i == len(parts) or _whole(".".join(parts[:i])))

        def _whole(prefix: str) -> bool:  # an interpolated mapping source: reading its target reads all of it
            return any(prefix in sources for sources in self._sources.values())

        def walk(mapping: Mapping[str, Any], path: str) -> None:
            for key, value in dict.items(mapping) if isinstance(mapping, dict) else mapping.items():
                dotted = f"{path}{key}"
                if any(dotted == p or dotted.startswith(p + ".") for p in exempt):
                    continue
                if isinstance(value, Mapping) and value:
                    walk(value, dotted + ".")
                elif value is not None and not covered(dotted):
                    found.append(dotted)

        walk(self, self._path)
        return found
