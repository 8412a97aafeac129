"""Vector stores behind one interface (`VectorStore`), chosen per library by a spec string.

`exact` (default; brute force over a memory-mapped matrix), plus whatever other modules register
(`ann`, `milvus:<uri>`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from picscope.errors import ConfigError
from picscope.specs import SpecRegistry
from picscope.store.base import Hits, VectorStore

__all__ = ["STORES", "Hits", "VectorStore", "make_store", "register_store"]

StoreBuilder = Callable[[str, Path, int], VectorStore]
STORES: SpecRegistry[StoreBuilder] = SpecRegistry(
    "store", ConfigError, optional=("picscope.store.ann", "picscope.store.milvus"))


def register_store(prefix: str, *, usage: str | None = None, summary: str = "", needs: tuple[str, ...] = ()
                   ) -> Callable[[StoreBuilder], StoreBuilder]:
    return STORES.register(prefix, usage=usage, summary=summary, needs=needs)


@register_store("exact", summary="brute force over a memory-mapped matrix (default)", needs=("numpy",))
def _exact(arg: str, folder: Path, dim: int) -> VectorStore:
    from picscope.store.exact import ExactStore

    return ExactStore(folder, dim)


def make_store(spec: str, folder: Path, dim: int, *, readonly: bool = False) -> VectorStore:
    """Build the store for `spec` (`exact`, `ann`, `milvus:<uri>`, ...) with its files under `folder`.

    `readonly`: a library on a read-only folder or mount (the exact store maps its files read-only;
    other stores open as usual)."""
    entry, arg = STORES.split(spec)
    if readonly and entry.prefix == "exact":
        from picscope.store.exact import ExactStore

        return ExactStore(folder, dim, readonly=True)
    return entry.build(arg, folder, dim)
