"""Ranking metrics. `ranking` is a list of image keys best first; `relevant` a set of keys.

Definitions (also printed in every report):
- recall@K (multi-positive): |relevant ∩ top K| / |relevant|; with one relevant image it is the hit rate.
- hits@K: 1 if any relevant image is in the top K, else 0.
- mAP@K (CIRCO): AP@K = (1 / min(K, |relevant|)) · Σ_{k≤K} P@k · rel(k).
- nDCG@K (binary gains): Σ_{k≤K} rel(k)/log2(k+1) divided by the ideal DCG of min(K, |relevant|) hits.
- MRR: 1 / rank of the first relevant image (0 if none is ranked); median rank: of the first relevant image.
- cumulative hits@K over dialogue rounds (ChatIR): round r counts as a hit if the target was in the top K at
  any round ≤ r.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def recall_at_k(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        raise ValueError("a query needs at least one relevant image")
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def hits_at_k(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    return 1.0 if relevant.intersection(ranking[:k]) else 0.0


def average_precision_at_k(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    hits, total = 0, 0.0
    for i, key in enumerate(ranking[:k], start=1):
        if key in relevant:
            hits += 1
            total += hits / i
    return total / min(k, len(relevant))


def ndcg_at_k(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 1) for i, key in enumerate(ranking[:k], start=1) if key in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def first_rank(ranking: Sequence[str], relevant: set[str]) -> int | None:
    for i, key in enumerate(ranking, start=1):
        if key in relevant:
            return i
    return None


def reciprocal_rank(ranking: Sequence[str], relevant: set[str]) -> float:
    r = first_rank(ranking, relevant)
    return 1.0 / r if r else 0.0


def cumulative_hits(rankings_per_round: Sequence[Sequence[str]], relevant: set[str], k: int) -> list[float]:
    out, hit = [], False
    for ranking in rankings_per_round:
        hit = hit or bool(relevant.intersection(ranking[:k]))
        out.append(1.0 if hit else 0.0)
    return out


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
