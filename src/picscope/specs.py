"""One registry helper for every backend chosen by a spec string (`exact`, `milvus:<uri>`, `bundled`,
`openai:<url>#<model>`, ...): vector stores, encoders, chat and vision models, reasoners.

A factory module makes one `SpecRegistry`, registers each backend under a prefix with what it needs (importable
modules, so `installed` is known without importing them), a usage line and declared traits, and builds from a spec
with `REGISTRY.split(spec)` → (entry, argument), then `entry.build(...)`. `picscope specs` lists every registry
(`all_registries()`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from picscope.errors import ConfigError, PicscopeError

B = TypeVar("B", bound=Callable[..., object])

# The modules that create the registries (imported by `all_registries`, in this order).
REGISTRY_MODULES = ("picscope.store", "picscope.encoders", "picscope.models", "picscope.pipeline.reasoner")


@dataclass(frozen=True)
class SpecEntry(Generic[B]):
    prefix: str
    build: B
    usage: str  # how to write the spec, e.g. `milvus:<uri>`
    summary: str = ""
    needs: tuple[str, ...] = ()  # importable modules the backend needs
    traits: frozenset[str] = frozenset()  # declared properties, e.g. "weak-reasoner"

    def missing(self) -> list[str]:
        """The needed modules that are not installed (found without importing them)."""
        out = []
        for module in self.needs:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(module)
        return out

    @property
    def installed(self) -> bool:
        return not self.missing()


_REGISTRIES: dict[str, SpecRegistry[Any]] = {}


@dataclass
class SpecRegistry(Generic[B]):
    """Backends of one kind by spec prefix. `optional`: modules that register more backends when imported (loaded
    the first time a prefix is unknown, and for listing), so that the default path imports none of them."""

    kind: str
    error: type[PicscopeError] = ConfigError
    optional: tuple[str, ...] = ()
    _entries: dict[str, SpecEntry[B]] = field(default_factory=dict)
    _loaded: bool = False

    def __post_init__(self) -> None:
        _REGISTRIES[self.kind] = self

    def register(self, prefix: str, *, usage: str | None = None, summary: str = "", needs: Iterable[str] = (),
                 traits: Iterable[str] = ()) -> Callable[[B], B]:
        def deco(build: B) -> B:
            self._entries[prefix] = SpecEntry(prefix, build, usage or prefix, summary, tuple(needs),
                                              frozenset(traits))
            return build

        return deco

    def _load_optional(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self.optional:
            with contextlib.suppress(ImportError, PicscopeError):
                importlib.import_module(module)

    def split(self, spec: str) -> tuple[SpecEntry[B], str]:
        """(the entry, the argument after `prefix:`) for `spec`; the registry's error for an unknown prefix."""
        spec = spec.strip()
        for attempt in (0, 1):
            for prefix in sorted(self._entries, key=len, reverse=True):
                if spec == prefix:
                    return self._entries[prefix], ""
                if spec.startswith(prefix + ":"):
                    return self._entries[prefix], spec[len(prefix) + 1 :]
            if attempt == 0 and not self._loaded and self.optional:
                self._load_optional()
                continue
        raise self.error(f"unknown {self.kind} spec {spec!r}; known: {', '.join(self.usages())}")

    def entry(self, spec: str) -> SpecEntry[B]:
        return self.split(spec)[0]

    def has(self, spec: str, trait: str) -> bool:
        """Whether the backend of `spec` declares `trait` (False for an unknown spec)."""
        try:
            return trait in self.entry(spec).traits
        except PicscopeError:
            return False

    def entries(self) -> list[SpecEntry[B]]:
        self._load_optional()
        return sorted(self._entries.values(), key=lambda e: e.prefix)

    def usages(self) -> list[str]:
        return [e.usage for e in sorted(self._entries.values(), key=lambda e: e.prefix)]


def all_registries() -> list[SpecRegistry[Any]]:
    """Every registry, with its optional backends loaded (for `picscope specs`)."""
    for module in REGISTRY_MODULES:
        importlib.import_module(module)
    return list(_REGISTRIES.values())
