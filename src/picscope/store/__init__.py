"""Vector stores behind one interface (`VectorStore`), chosen per library by a spec string.

`exact` (default; brute force over a memory-mapped matrix), plus whatever other modules register
(`ann`, `milvus:<uri>`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from picscope.errors import ConfigError
from picscope.store.base import Hits, VectorStore

__all__ = ["Hits", "VectorStore", "make_store", "register_store"]

StoreBuilder = Callable[[str, Path, int], VectorStore]
_BUILDERS: dict[str, StoreBuilder] = {}


def register_store(prefix: str) -> Callable[[StoreBuilder], StoreBuilder]:
    def deco(fn: StoreBuilder) -> StoreBuilder:
        _BUILDERS[prefix] = fn
        return fn

    return deco


@register_store("exact")
def _exact(arg: str, folder: Path, dim: int) -> VectorStore:
    from picscope.store.exact import ExactStore

    return ExactStore(folder, dim)


def _load_optional() -> None:
    """Import optional store modules so that they register themselves."""
    import contextlib
    import importlib

    for mod in ("picscope.store.ann", "picscope.store.milvus"):
        with contextlib.suppress(ImportError):
            importlib.import_module(mod)


def make_store(spec: str, folder: Path, dim: int, *, readonly: bool = False) -> VectorStore:
    """Build the store for `spec` (`exact`, `ann`, `milvus:<uri>`, ...) with its files under `folder`.

    `readonly`: a library on a read-only folder or mount (the exact store maps its files read-only;
    other stores open as usual)."""
    prefix, _, arg = spec.partition(":")
    if prefix not in _BUILDERS:
        _load_optional()  # the optional backends register on import (not needed, nor imported, for `exact`)
    if readonly and prefix == "exact":
        from picscope.store.exact import ExactStore

        return ExactStore(folder, dim, readonly=True)
    builder = _BUILDERS.get(prefix)
    if builder is None:
        raise ConfigError(f"unknown store spec {spec!r}; known: {', '.join(sorted(_BUILDERS))}")
    return builder(arg, folder, dim)
