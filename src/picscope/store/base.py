"""The `VectorStore` interface. Ids are positive integers (the catalog's file ids); vectors are
float32 and L2-normalised, so scores are cosine similarities (inner products).

Capabilities are declared, never sniffed: every store has `supports_filter` (it keeps each file's path and
modification time with its vector and applies a `MetaFilter` on its side), `upsert_with_meta` (stores without
metadata store the vectors and ignore the metadata), `search(..., filter=...)` (a store without metadata refuses
a non-empty filter: callers filter by `allowed_ids` instead) and `drop()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from picscope.errors import StoreError
from picscope.store.meta import FileMeta, MetaFilter

if TYPE_CHECKING:
    from picscope.store.compact import VectorCodec


@dataclass(frozen=True)
class Hits:
    """Top-k results for a batch of queries: `ids[i]`, `scores[i]` best first (padded with id 0 / -inf)."""

    ids: np.ndarray  # (q, k) int64
    scores: np.ndarray  # (q, k) float32

    def row(self, i: int) -> list[tuple[int, float]]:
        return [(int(a), float(s)) for a, s in zip(self.ids[i], self.scores[i], strict=True) if a > 0]


@runtime_checkable
class VectorStore(Protocol):
    dim: int
    spec: str

    @property
    def supports_filter(self) -> bool:
        """Whether the store keeps path/mtime with each vector and filters on them (`search(..., filter=...)`)."""
        ...

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace vectors; durable once this returns."""
        ...

    def upsert_with_meta(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[FileMeta]) -> None:
        """`upsert`, with each file's path and mtime for stores that keep them (`supports_filter`); others
        ignore `meta`."""
        ...

    def delete(self, ids: np.ndarray) -> None: ...

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Vectors for `ids` (KeyError when one is absent)."""
        ...

    def ids(self) -> np.ndarray:
        """All stored ids (int64, any order)."""
        ...

    def scored_rows(self, ids: np.ndarray) -> tuple[np.ndarray, VectorCodec | None]:
        """What `search` scores for `ids`: (their vectors, None), or for a compact store (their codes, the codec),
        scored as `codec.queries(q)` parts · codes + offset. Cheaper than `get` there: nothing is decoded."""
        ...

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, *,
               filter: MetaFilter | None = None) -> Hits:
        """Top-k by inner product for each query row; `allowed_ids` restricts the candidates, and so does
        `filter` on stores with `supports_filter` (others raise `StoreError` for a non-empty one)."""
        ...

    def drop(self) -> None:
        """Delete this store's data, also what lives outside its folder (a Milvus collection)."""
        ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


def validate_batch(ids: np.ndarray, vectors: np.ndarray, dim: int,
                   dtype: type[np.generic] | np.dtype[np.generic] = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The checks every store makes before writing: (ids as int64, vectors as `dtype` rows of `dim`).
    `StoreError` for a wrong dimension, an id that is not positive, or an id given twice."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if not len(ids):
        return ids, np.zeros((0, dim), dtype)
    vecs = np.asarray(vectors, dtype=dtype).reshape(len(ids), -1)
    if vecs.shape[1] != dim:
        raise StoreError(f"vector dim {vecs.shape[1]} does not match the store's {dim}")
    if (ids <= 0).any():
        raise StoreError("store ids must be positive integers")
    if len(np.unique(ids)) != len(ids):
        raise StoreError("duplicate ids in one upsert")
    return ids, vecs


def refuse_filter(filter: MetaFilter | None, spec: str) -> None:
    """For stores without metadata (`supports_filter = False`): a non-empty filter is a caller's mistake."""
    if filter is not None and not filter.is_empty():
        raise StoreError(f"the {spec} store keeps no file metadata to filter on; filter with allowed_ids")


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"query vectors must have shape (n, {dim}), got {q.shape}")
    return q


_SAMPLED_TOPK_MIN = 65_536  # rows from which a sampled threshold beats a full argpartition (1M: ~3 ms vs ~15 ms)


def _top_unordered(row: np.ndarray, kk: int) -> np.ndarray:
    """Positions of the kk largest scores of `row`, unordered: a threshold read from a strided sample keeps a few
    times kk candidates (one vectorised comparison), and only those are partitioned. Exact whatever the sample:
    every score at or above the threshold is a candidate, and a threshold that keeps fewer than kk falls back to
    partitioning the whole row."""
    step = max(len(row) // 16_384, 1)
    sample = row[::step]
    rank = min(int(kk / step * 2) + 32, len(sample) - 1)  # ~2x the expected count above it, plus a margin
    threshold = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
    cand = np.flatnonzero(row >= threshold) if np.isfinite(threshold) else np.zeros(0, np.int64)
    if len(cand) < kk:
        return np.argpartition(-row, kk - 1)[:kk]
    return cand[np.argpartition(-row[cand], kk - 1)[:kk]]


def topk_from_scores(scores: np.ndarray, row_ids: np.ndarray, k: int) -> Hits:
    """Top-k per row of a (q, n) score matrix (−inf marks excluded rows), without sorting all n."""
    nq, n = scores.shape
    kk = min(k, n)
    out_ids = np.zeros((nq, k), np.int64)
    out_scores = np.full((nq, k), -np.inf, np.float32)
    if kk == 0:
        return Hits(out_ids, out_scores)
    if kk < n and n >= _SAMPLED_TOPK_MIN and kk * 8 <= n:
        part = np.stack([_top_unordered(row, kk) for row in scores])
    elif kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), (nq, n))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best_scores = np.take_along_axis(part_scores, order, axis=1)
    valid = np.isfinite(best_scores)
    out_ids[:, :kk] = np.where(valid, row_ids[best], 0)
    out_scores[:, :kk] = np.where(valid, best_scores, -np.inf)
    return Hits(out_ids, out_scores)
