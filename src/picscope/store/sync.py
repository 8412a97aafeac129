"""Rebuild or reconcile a library's vector store from its SQLite catalog (the source of truth).

- `reconcile_store(lib)`: after a crash, remove vectors whose files the catalog does not list, mark
  catalog files without a vector for re-encoding, and (stores with metadata) rewrite path/mtime that
  disagree with the catalog.
- `move_store(lib, spec)`: change the backend (e.g. exact → milvus:http://host:19530). Vectors are
  copied id by id from the old store to the new one; the catalog switches to the new spec only once
  the copy is complete and checked, so an interruption (or an unreachable target) leaves the library
  on its old store, and rerunning finishes the job. With `reencode=True` (old store unreadable) the
  new store starts empty and every file is marked to be re-encoded by the next index run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from picscope.errors import LibraryError, PicscopeError
from picscope.library import Library
from picscope.store import VectorStore, make_store
from picscope.store.meta import FileMeta

CHUNK = 8192


@dataclass
class SyncReport:
    store: str
    previous_store: str
    copied: int = 0
    orphans_removed: int = 0
    missing_marked: int = 0
    meta_fixed: int = 0

    @property
    def needs_reindex(self) -> bool:
        return self.missing_marked > 0


def _ok_records(lib: Library) -> dict[int, FileMeta]:
    return {r.id: FileMeta(r.path, r.mtime_ns) for r in lib.catalog.all(status="ok")}


def _write(store: VectorStore, ids: np.ndarray, vecs: np.ndarray, meta: dict[int, FileMeta]) -> None:
    store.upsert_with_meta(ids, vecs, [meta[int(i)] for i in ids.tolist()])


def _sync_meta(store: VectorStore, records: dict[int, FileMeta]) -> int:
    """Rewrite path/mtime in a metadata store wherever it disagrees with the catalog."""
    iter_meta = getattr(store, "iter_meta", None)  # an extra of the metadata stores (Milvus), not a capability
    if not store.supports_filter or not callable(iter_meta):
        return 0
    wrong = [
        i
        for i, path, mtime in iter_meta()
        if i in records and (path != records[i].path or mtime != records[i].mtime_ns // 1_000_000_000)
    ]
    for s in range(0, len(wrong), CHUNK):
        ids = np.array(wrong[s : s + CHUNK], np.int64)
        store.upsert_with_meta(ids, store.get(ids), [records[int(i)] for i in ids.tolist()])
    return len(wrong)


def reconcile_store(lib: Library) -> SyncReport:
    """Bring the current store in line with the catalog (call with the library's write lock held)."""
    report = SyncReport(store=lib.config.store, previous_store=lib.config.store)
    report.orphans_removed, report.missing_marked = lib.reconcile()
    report.meta_fixed = _sync_meta(lib.store, _ok_records(lib))
    return report


def move_store(
    lib: Library,
    spec: str,
    *,
    reencode: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SyncReport:
    """Copy every vector to the store `spec` and switch the library to it (write lock held by the caller)."""
    old_spec = lib.config.store
    report = SyncReport(store=spec, previous_store=old_spec)
    dim = lib.dim
    if dim is None:  # nothing indexed yet: just record the new choice
        make_store(spec, lib.layout.store, lib.encoder.dim).close()
        _switch(lib, spec)
        return report
    old: VectorStore | None = None
    if not reencode:
        try:
            old = lib.store
        except PicscopeError as exc:
            raise LibraryError(
                f"cannot read the current store {old_spec!r}: {exc}\nNothing was changed. To re-encode every "
                f"image from its file instead, run: picscope sync-index --library {lib.path} --store {spec} --reencode"
            ) from exc
    new = lib.build_store(spec)  # raises before anything changes if unreachable
    try:
        records = _ok_records(lib)
        ok_ids = np.array(sorted(records), np.int64)
        extra = np.setdiff1d(new.ids(), ok_ids)  # e.g. a leftover from an interrupted move
        if len(extra):
            new.delete(extra)
        if old is not None:
            have = np.intersect1d(old.ids(), ok_ids)
            for s in range(0, len(have), CHUNK):
                ids = have[s : s + CHUNK]
                _write(new, ids, old.get(ids), records)
                report.copied += len(ids)
                if progress is not None:
                    progress(report.copied, len(have))
            if len(new) != len(have):
                raise LibraryError(
                    f"the new store holds {len(new)} vectors after copying {len(have)}; the library stays on "
                    f"{old_spec!r}. Run sync-index again."
                )
    except BaseException:
        new.close()
        raise
    # The copy is complete: switch, then retire the old store's data.
    lib._store = new
    _switch(lib, spec)
    if old is not None and old_spec != spec:
        with contextlib.suppress(PicscopeError, OSError):
            old.drop()  # an unreachable old server keeps its data; the library no longer refers to it
        old.close()
    orphans, missing = lib.reconcile()
    report.orphans_removed, report.missing_marked = orphans, missing
    return report


def _switch(lib: Library, spec: str) -> None:
    lib.catalog.set_meta("store", spec)
    lib.config.store = spec
    lib.config.save(lib.layout.config)
