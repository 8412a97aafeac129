"""`topk_from_scores`: the sampled-threshold selection of large score rows equals a full sort, whatever the data."""

from __future__ import annotations

import numpy as np
import pytest

from picscope.store.base import topk_from_scores


def _by_sort(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isfinite(best), ids[order], 0), best


def _rows(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.normal(size=(2, n)).astype(np.float32)
    if kind == "ascending":  # a strided sample sees only the low part of each stretch
        return np.sort(rng.normal(size=(1, n)).astype(np.float32), axis=1)
    if kind == "one hot stretch":  # every high score in one block the sample steps over
        row = np.zeros((1, n), np.float32)
        row[0, 1001:1001 + 2000] = rng.uniform(1, 2, 2000)
        return row
    if kind == "mostly excluded":
        row = np.full((1, n), -np.inf, np.float32)
        keep = rng.choice(n, 700, replace=False)
        row[0, keep] = rng.normal(size=700)
        return row
    if kind == "ties":
        return rng.integers(0, 4, size=(1, n)).astype(np.float32)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random", "ascending", "one hot stretch", "mostly excluded", "ties"])
@pytest.mark.parametrize("k", [1, 10, 1024])
def test_large_rows_select_what_a_full_sort_selects(kind: str, k: int) -> None:
    rng = np.random.default_rng(k)
    n = 200_000
    scores = _rows(kind, n, rng)
    ids = np.arange(1, n + 1, dtype=np.int64) * 3
    hits = topk_from_scores(scores, ids, k)
    want_ids, want_scores = _by_sort(scores, ids, k)
    np.testing.assert_array_equal(hits.scores[:, : want_scores.shape[1]], want_scores)
    if kind != "ties":  # with ties any of the tied rows is right
        np.testing.assert_array_equal(hits.ids[:, : want_ids.shape[1]], want_ids)
    else:
        for row_ids, row_scores, s in zip(hits.ids, hits.scores, scores, strict=True):
            assert len(set(row_ids.tolist())) == k
            np.testing.assert_array_equal(s[row_ids // 3 - 1], row_scores)
    if kind == "mostly excluded" and k == 1024:  # fewer rows than asked: the rest are empty
        assert (hits.ids[0, 700:] == 0).all() and np.isneginf(hits.scores[0, 700:]).all()
