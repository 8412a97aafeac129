"""The verifier re-rank of a text search: the one place that re-orders the encoder's top candidates.

The encoder ranks the library by cosine similarity (minus each photo's query-bank normaliser where the encoder has
a bank: `SearchResult.bank_score`); the `bundled` image–text matching verifier (`picscope.models.verifier`) then
scores the top `pool` photos from their stored cells (`picscope.store.cells`) and the two are fused:
`z(encoder score) + weight · z(verifier score)`, each standardised over the pool. The photos
below the pool keep their encoder order. The pool and weight were tuned on Flickr8k dev's 5th captions for each
encoder listed in `models/weights/verifier-v1-rerank.json` (`python benchmarks/bench_rerank.py tune`).

Scores keep their scale: `SearchResult.score` stays the encoder's cosine (and `relevance` its calibration), so
thresholds mean what they meant; the verifier's calibrated P(match) is added as `match`. Only the order changes.

`[search] rerank` in the library's config: unset = on for the encoders in that file (it was measured to help
there), true = on for any encoder (with the verifier's own fusion weight where none was tuned), false = off.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from picscope.library import SearchResult
    from picscope.models.verifier import Verifier
    from picscope.photocells import PhotoCells

SETTINGS_FILE = Path(__file__).resolve().parent / "models" / "weights" / "verifier-v1-rerank.json"
DEFAULT_POOL = 20


@dataclass(frozen=True)
class RerankSettings:
    pool: int
    weight: float
    tuned: bool  # measured for this encoder (else the verifier's own fusion weight, asked for with rerank = true)


@dataclass(frozen=True)
class RerankInfo:
    """What the re-rank did for one query (`search --json`'s `rerank`, the REST explanation's)."""

    model: str
    pool: int
    weight: float
    scored: int  # candidates the verifier scored (at most `pool`)
    cells_computed: int  # of them, photos whose cells were not stored yet (decoded and computed now)
    moved: int  # results whose rank changed
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "pool": self.pool, "weight": self.weight, "scored": self.scored,
                "cells_computed": self.cells_computed, "moved": self.moved, "seconds": round(self.seconds, 4)}


@cache
def _tuned() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(SETTINGS_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return dict(data.get("encoders", {}))


def settings_for(encoder_name: str | None, enabled: bool | None) -> RerankSettings | None:
    """The re-rank for a library whose vectors come from `encoder_name`, given `[search] rerank`; None: off."""
    if enabled is False:
        return None
    entry = _tuned().get(encoder_name or "")
    if entry is not None:
        return RerankSettings(int(entry["pool"]), float(entry["weight"]), True)
    if enabled:
        from picscope.models.verifier import load_verifier

        return RerankSettings(DEFAULT_POOL, float(load_verifier().meta.get("fusion_weight", 0.75)), False)  # type: ignore[arg-type]
    return None


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / (a.std() + 1e-6)


def fuse(encoder: np.ndarray, verifier: np.ndarray, weight: float) -> np.ndarray:
    """z(encoder) + weight · z(verifier) over one query's pool (the formula the weight was tuned with)."""
    return _z(np.asarray(encoder, np.float64)) + weight * _z(np.asarray(verifier, np.float64))


@dataclass(frozen=True)
class PoolScores:
    """The verifier's side of one query's pool: fused score, raw verifier score (NaN: no cells), P(match)."""

    fused: np.ndarray
    verifier: np.ndarray
    probs: np.ndarray
    computed: int  # photos whose cells were not stored yet (decoded and computed now)


def score_pool(text: str, ids: list[int], encoder: np.ndarray, weight: float, cells: PhotoCells,
               verifier: Verifier) -> PoolScores:
    """`fuse` of the encoder's scores of the photos `ids` with the verifier's scores of `text` against their
    stored cells (a photo that cannot be read gets the pool's mean verifier score: no evidence either way). The
    one place both the default search and the pipeline's stage 1 score a pool."""
    got, computed = cells.for_ids(ids)
    feats = verifier.text_features([text])[0]
    scores = np.full(len(ids), np.nan, np.float64)
    have = [i for i, fid in enumerate(ids) if fid in got]
    if have:
        scores[have] = verifier.score(np.stack([got[ids[i]] for i in have]), feats)
    missing = np.isnan(scores)
    filled = scores.copy()
    filled[missing] = scores[~missing].mean() if (~missing).any() else 0.0
    fused = fuse(encoder, filled, weight)
    probs = np.where(missing, np.nan, verifier.probability(filled))
    return PoolScores(fused, scores, probs, computed)


def rerank(text: str, results: list[SearchResult], settings: RerankSettings, cells: PhotoCells,
           verifier: Verifier) -> tuple[list[SearchResult], RerankInfo]:
    """`results` (encoder order, best first) with the top `settings.pool` re-ordered by the fused score."""
    t0 = time.perf_counter()
    head, tail = results[: settings.pool], results[settings.pool :]
    if len(head) < 2:
        return results, RerankInfo(verifier.name, settings.pool, settings.weight, 0, 0, 0, time.perf_counter() - t0)
    # the encoder's side is the order the pool came in: the query-bank score where the bank ordered it
    encoder = np.array([r.score if r.bank_score is None else r.bank_score for r in head])
    pool = score_pool(text, [r.id for r in head], encoder, settings.weight, cells, verifier)
    order = np.argsort(-pool.fused, kind="stable")
    out = [replace(head[i], rank=n + 1, match=None if np.isnan(pool.probs[i]) else float(pool.probs[i]))
           for n, i in enumerate(order.tolist())]
    out += [replace(r, rank=len(out) + n + 1) for n, r in enumerate(tail)]
    moved = int(np.count_nonzero(order != np.arange(len(order))))
    info = RerankInfo(verifier.name, settings.pool, settings.weight, len(head), pool.computed, moved,
                      time.perf_counter() - t0)
    return out, info
