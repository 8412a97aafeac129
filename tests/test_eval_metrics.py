"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from picscope.eval import metrics as M

RANK = ["a", "b", "c", "d", "e"]


def test_recall_and_hits() -> None:
    assert M.recall_at_k(RANK, {"b", "e", "z"}, 2) == pytest.approx(1 / 3)
    assert M.recall_at_k(RANK, {"b", "e", "z"}, 5) == pytest.approx(2 / 3)
    assert M.recall_at_k(RANK, {"a"}, 1) == 1.0
    assert M.hits_at_k(RANK, {"c", "d"}, 2) == 0.0 and M.hits_at_k(RANK, {"c", "d"}, 3) == 1.0
    with pytest.raises(ValueError):
        M.recall_at_k(RANK, set(), 1)


def test_map_at_k_follows_circo() -> None:
    # relevant at ranks 1 and 3: P@1 = 1, P@3 = 2/3; divided by min(K, |relevant|) = 2
    assert M.average_precision_at_k(RANK, {"a", "c"}, 5) == pytest.approx((1 + 2 / 3) / 2)
    # 3 relevant, K = 2, only "b" (rank 2) in the top 2: P@2 = 1/2, divided by min(2, 3) = 2
    assert M.average_precision_at_k(RANK, {"b", "x", "y"}, 2) == pytest.approx(0.25)


def test_ndcg() -> None:
    dcg = 1 / math.log2(3)  # relevant at rank 2
    assert M.ndcg_at_k(RANK, {"b"}, 5) == pytest.approx(dcg / 1.0)
    ideal = 1 + 1 / math.log2(3)
    assert M.ndcg_at_k(RANK, {"b", "d"}, 5) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert M.ndcg_at_k(RANK, {"a", "b"}, 2) == pytest.approx(1.0)


def test_ranks_and_mrr() -> None:
    assert M.first_rank(RANK, {"d", "e"}) == 4
    assert M.reciprocal_rank(RANK, {"d"}) == 0.25
    assert M.reciprocal_rank(RANK, {"zz"}) == 0.0
    assert M.median([3, 1, 2]) == 2 and M.median([4, 1, 2, 3]) == 2.5


def test_cumulative_hits_over_dialogue_rounds() -> None:
    rounds = [["x", "y", "t"], ["t", "x", "y"], ["x", "y", "z"]]
    # K = 1: miss, hit, and the later miss does not undo the hit (ChatIR's cumulative definition)
    assert M.cumulative_hits(rounds, {"t"}, 1) == [0.0, 1.0, 1.0]
    assert M.cumulative_hits(rounds, {"t"}, 3) == [1.0, 1.0, 1.0]
