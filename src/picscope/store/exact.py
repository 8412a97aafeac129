"""`exact`: brute-force inner-product search over a memory-mapped float32 matrix.

Files in the library folder: `vectors.f32` (rows × dim float32) and `vectors.ids` (rows int64,
0 = free row). The same class keeps other row types (`dtype=np.int8`: `vectors.i8`) for the compact format's
fine codes (`picscope.store.compact`). A write goes vectors first, fsync, then ids, fsync: a row is live only
once its id is durable, so a kill at any moment leaves either the old or the new state of each row. Search is one
matrix-vector product plus `argpartition`; excluded rows are masked with −inf.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from picscope.diskspace import ensure_free
from picscope.errors import DiskFullError, StoreError
from picscope.store.base import Hits, as_queries, refuse_filter, topk_from_scores, validate_batch
from picscope.store.meta import FileMeta, MetaFilter

_GROW_ROWS = 4096
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.int8): "i8"}


def _flush(arr: np.ndarray) -> None:
    """msync a memory map (a no-op for the empty in-memory arrays of an empty store)."""
    if isinstance(arr, np.memmap):
        arr.flush()


class ExactStore:
    spec = "exact"
    supports_filter = False
    grow_rows = _GROW_ROWS  # rows added at least per growth (a store of wide rows grows by fewer)

    def __init__(
        self, folder: Path, dim: int, dtype: type[np.generic] = np.float32, *, readonly: bool = False
    ) -> None:
        self.folder = Path(folder)
        self.readonly = readonly  # a read-only library: map the files read-only, never create or repair them
        if not readonly:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        if self.dtype not in _SUFFIX:
            raise StoreError(f"the exact store keeps {', '.join(map(str, _SUFFIX))} rows, not {self.dtype}")
        self._vec_path = self.folder / f"vectors.{_SUFFIX[self.dtype]}"
        self._ids_path = self.folder / "vectors.ids"
        self._writable = not readonly and os.access(self.folder, os.W_OK)
        self._lock = threading.RLock()
        self._row_of: dict[int, int] | None = None
        self._open()

    # -- file management -------------------------------------------------------------------
    def _open(self) -> None:
        for p in (self._vec_path, self._ids_path):
            if not p.exists() and self._writable:
                p.touch()
        vbytes = self._vec_path.stat().st_size if self._vec_path.exists() else 0
        ibytes = self._ids_path.stat().st_size if self._ids_path.exists() else 0
        row_bytes = self.dim * self.dtype.itemsize
        if not self._writable:  # a read-only library: read what is there, repair nothing
            self.capacity = min(vbytes // row_bytes, ibytes // 8)
            self._map()
            return
        if vbytes % row_bytes:
            # A torn append: drop the partial row (its id was never written).
            with open(self._vec_path, "r+b") as fh:
                fh.truncate(vbytes - vbytes % row_bytes)
            vbytes -= vbytes % row_bytes
        vrows = vbytes // row_bytes
        irows = ibytes // 8
        self.capacity = min(vrows, irows)
        if vrows != irows:
            # Ids beyond the vector rows cannot be trusted, nor vectors beyond the ids.
            with open(self._ids_path, "r+b") as fh:
                fh.truncate(self.capacity * 8)
            with open(self._vec_path, "r+b") as fh:
                fh.truncate(self.capacity * row_bytes)
        self._map()

    _vecs: np.ndarray
    _ids: np.ndarray

    def _map(self) -> None:
        if self.capacity:
            mode: Literal["r+", "r"] = "r+" if self._writable else "r"
            self._vecs = np.memmap(self._vec_path, dtype=self.dtype, mode=mode, shape=(self.capacity, self.dim))
            self._ids = np.memmap(self._ids_path, dtype=np.int64, mode=mode, shape=(self.capacity,))
        else:
            self._vecs = np.zeros((0, self.dim), self.dtype)
            self._ids = np.zeros((0,), np.int64)
        self._row_of = None

    def _grow(self, need_rows: int) -> None:
        new_cap = max(need_rows, self.capacity + max(self.grow_rows, self.capacity // 2))
        row_bytes = self.dim * self.dtype.itemsize
        # the new rows are written through a memory map, where a full disk is a SIGBUS: check the space, then
        # allocate it for real (not a sparse hole), so that running out of space is an error here, before any write
        ensure_free(self.folder, (new_cap - self.capacity) * (row_bytes + 8))
        self._flush_maps()
        for path, size in ((self._vec_path, new_cap * row_bytes), (self._ids_path, new_cap * 8)):
            with open(path, "r+b") as fh:
                fh.truncate(size)  # new rows read as id 0 = free
                try:
                    os.posix_fallocate(fh.fileno(), 0, size)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise DiskFullError(f"disk full: {size / 1e6:.1f} MB needed for {path}") from exc
                    # filesystems without fallocate (EOPNOTSUPP, EINVAL) keep the sparse file
        self.capacity = new_cap
        self._map()

    def _flush_maps(self) -> None:
        _flush(self._vecs)
        _flush(self._ids)

    def _index(self) -> dict[int, int]:
        if self._row_of is None:
            rows = np.flatnonzero(self._ids)
            self._row_of = dict(zip(self._ids[rows].tolist(), rows.tolist(), strict=True))
        return self._row_of

    # -- VectorStore -----------------------------------------------------------------------
    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vecs = validate_batch(ids, vectors, self.dim, self.dtype)
        if len(ids) == 0:
            return
        with self._lock:
            row_of = self._index()
            rows = np.empty(len(ids), np.int64)
            free = iter(np.flatnonzero(self._ids == 0).tolist())
            new_rows: list[int] = []
            next_row = self.capacity
            for i, id_ in enumerate(ids.tolist()):
                row = row_of.get(id_)
                if row is None:
                    row = next(free, None)
                    if row is None:
                        row = next_row
                        next_row += 1
                    new_rows.append(row)
                rows[i] = row
            if next_row > self.capacity:
                self._grow(next_row)
                row_of = self._index()
            # 1) vectors, durable  2) ids, durable.
            self._vecs[rows] = vecs
            _flush(self._vecs)
            self._ids[rows] = ids
            _flush(self._ids)
            for id_, row in zip(ids.tolist(), rows.tolist(), strict=True):
                row_of[id_] = row

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        with self._lock:
            row_of = self._index()
            rows = [row_of.pop(i) for i in ids.tolist() if i in row_of]
            if rows:
                self._ids[rows] = 0
                _flush(self._ids)

    def refresh(self) -> bool:
        """Follow another process's writes (a reader, e.g. the server, while `picscope index` runs elsewhere):
        map rows appended since this store was opened and forget the cached id → row table. Never truncates
        or repairs (that is the writer's job at open). Returns whether the mapping grew."""
        with self._lock:
            try:
                vrows = self._vec_path.stat().st_size // (self.dim * self.dtype.itemsize)
                irows = self._ids_path.stat().st_size // 8
            except OSError:
                return False
            rows = min(vrows, irows)
            self._row_of = None  # ids of mapped rows may have changed too (the file is shared)
            if rows <= self.capacity:
                return False
            self.capacity = rows
            self._map()
            return True

    def scored_rows(self, ids: np.ndarray) -> tuple[np.ndarray, None]:
        return self.get(ids), None  # full vectors: scored by a plain inner product

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        with self._lock:
            for attempt in (0, 1):
                row_of = self._index()
                try:
                    rows = [row_of[i] for i in ids.tolist()]
                    break
                except KeyError as exc:
                    if attempt:
                        raise KeyError(f"id {exc.args[0]} is not in the store") from None
                    self.refresh()  # written by another process since we looked
            return np.array(self._vecs[rows], dtype=self.dtype)

    def ids(self) -> np.ndarray:
        live = self._ids[self._ids > 0]
        return np.array(live, dtype=np.int64)

    def __len__(self) -> int:
        return int(np.count_nonzero(self._ids))

    def upsert_with_meta(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[FileMeta]) -> None:
        self.upsert(ids, vectors)  # no file metadata is kept here (`supports_filter` is False)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, *,
               filter: MetaFilter | None = None) -> Hits:
        refuse_filter(filter, self.spec)
        q = as_queries(queries, self.dim)
        with self._lock:
            vecs, ids = self._vecs, np.asarray(self._ids)
        if len(ids) == 0:
            return topk_from_scores(np.zeros((len(q), 0), np.float32), ids, k)
        scores = np.asarray(q @ np.asarray(vecs).T, dtype=np.float32)
        exclude = ids == 0
        if allowed_ids is not None:
            exclude |= ~np.isin(ids, np.asarray(allowed_ids, dtype=np.int64))
        if exclude.any():
            scores[:, exclude] = -np.inf
        return topk_from_scores(scores, ids, k)

    def drop(self) -> None:
        """Delete this store's files (after the library moved to another store)."""
        with self._lock:
            self._vecs = np.zeros((0, self.dim), self.dtype)
            self._ids = np.zeros((0,), np.int64)
            self.capacity = 0
            self._row_of = None
            self._vec_path.unlink(missing_ok=True)
            self._ids_path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._flush_maps()
            self._vecs = np.zeros((0, self.dim), self.dtype)
            self._ids = np.zeros((0,), np.int64)
            self.capacity = 0
