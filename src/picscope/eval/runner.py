"""Run a dataset through a retrieval configuration and compute every metric per query.

Libraries are cached per (dataset gallery, encoder) under the cache folder, so a re-run re-embeds nothing, and
exact search makes a re-run reproduce the numbers exactly.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.encoders import default_encoder_spec
from picscope.errors import ConfigError
from picscope.eval import metrics as M
from picscope.eval.dataset import Dataset, Query, load_dataset
from picscope.eval.users import make_user
from picscope.feedback.base import FeedbackState
from picscope.feedback.rounds import unseen_page
from picscope.library import Library
from picscope.paths import cache_dir
from picscope.vectors import compose

if TYPE_CHECKING:
    from picscope.feedback.check import RequestCheck
    from picscope.pipeline.base import Pipeline

KS = (1, 5, 10, 50)
RANKED = 50  # results asked of a pipeline per query; the rest of the ranking is the encoder's


@dataclass
class RunConfig:
    encoder: str | None = None
    pipeline: str = "encoder"
    stages: tuple[int, ...] | None = None
    limit: int | None = None
    seed: int = 0
    feedback: str | None = None  # none | rocchio | rocchio-classic | caption | rewrite | combined
    rounds: int = 3
    user: str = "oracle"
    page_size: int = 10
    max_seconds: float | None = None  # stop early (and say so) once this much time is spent
    llm: str | None = None  # pipeline imagescope: chat model spec (default: the library's)
    vision: str | None = None  # pipeline imagescope: vision model spec
    pipeline_config: Any = None  # a picscope.config.PipelineConfig (default: the library's)
    query_ids: frozenset[str] | None = None  # evaluate only these queries (e.g. a held-out part of a split)
    request_check: bool = False  # feedback rounds: re-rank against the request as sessions do (`feedback.check`)


@dataclass
class RunResult:
    metrics: dict[str, Any]
    per_query: list[dict[str, Any]] = field(default_factory=list)


def library_for(ds: Dataset, encoder: str, progress: Any = None) -> Library:
    from picscope.encoders import make_encoder

    # the encoder's name pins its weights: a retrained `bundled` gets a fresh library, not a mismatch error
    name = make_encoder(encoder).name
    slug = hashlib.sha256(f"{ds.root.resolve()}|{ds.fingerprint()}|{encoder}|{name}".encode()).hexdigest()[:16]
    lib = Library.open(cache_dir() / "eval-libraries" / f"{ds.name}-{slug}", encoder=encoder)
    lib.index(ds.root / "images", progress=progress)
    return lib


def _select(queries: list[Query], limit: int | None, seed: int) -> list[Query]:
    if limit is None or limit >= len(queries):
        return queries
    rng = random.Random(seed)
    return sorted(rng.sample(queries, limit), key=lambda q: queries.index(q))


class _Index:
    """Maps between library ids and the dataset's image keys (paths relative to the dataset root)."""

    def __init__(self, lib: Library, ds: Dataset) -> None:
        root = str(ds.root.absolute())
        self.key_of: dict[int, str] = {}
        for rec in lib.catalog.all("ok"):
            self.key_of[rec.id] = os.path.relpath(rec.path, root)
        self.id_of = {k: i for i, k in self.key_of.items()}
        self.size = len(self.key_of)


def _ranking(lib: Library, idx: _Index, vec: np.ndarray, exclude: list[int]) -> list[str]:
    """The encoder's ranking of the whole gallery, as a search ranks it (a text query is re-ordered by the
    encoder's query bank; a composed one, which excludes its reference, is not)."""
    hits = lib.search_vector(vec, idx.size, exclude_ids=exclude, querybank=not exclude)
    return [idx.key_of[h.id] for h in hits]


def _texts(q: Query) -> list[str]:
    """The query text of round 0 and of each dialogue round (all turns so far, concatenated)."""
    turns = q.turns or ()
    return [q.text] + [" ".join([q.text, *turns[:r]]) for r in range(1, len(turns) + 1)]


class _TextVectors:
    """Query texts embedded in large batches up front (one model call per 256 texts, not per query)."""

    def __init__(self, lib: Library, queries: list[Query]) -> None:
        texts = sorted({t for q in queries for t in _texts(q)})
        self.vec: dict[str, np.ndarray] = {}
        for start in range(0, len(texts), 256):
            chunk = texts[start : start + 256]
            self.vec.update(zip(chunk, lib.embed_texts(chunk), strict=True))


def _query_vector(
    lib: Library, idx: _Index, tv: _TextVectors, q: Query, turns_upto: int = 0
) -> tuple[np.ndarray, list[int]]:
    vec = tv.vec[_texts(q)[turns_upto]]
    exclude: list[int] = []
    if q.reference:
        ref_id = idx.id_of[q.reference]
        exclude = [ref_id]
        vec = compose(vec, lib.vectors([ref_id])[0])  # the encoder baseline for composed queries
    return vec, exclude


def _metrics_for(ranking: list[str], relevant: set[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in KS:
        out[f"recall@{k}"] = M.recall_at_k(ranking, relevant, k)
    out["hits@10"] = M.hits_at_k(ranking, relevant, 10)
    out["map@10"] = M.average_precision_at_k(ranking, relevant, 10)
    out["ndcg@10"] = M.ndcg_at_k(ranking, relevant, 10)
    out["mrr"] = M.reciprocal_rank(ranking, relevant)
    out["first_rank"] = float(M.first_rank(ranking, relevant) or len(ranking) + 1)
    return out


def run(dataset_dir: str | Path, cfg: RunConfig, progress: Callable[[int, int], None] | None = None) -> RunResult:
    ds = load_dataset(dataset_dir)
    encoder = cfg.encoder or default_encoder_spec()
    if cfg.pipeline not in ("encoder", "imagescope"):
        raise ConfigError(f"unknown pipeline {cfg.pipeline!r}: use encoder or imagescope")
    if cfg.pipeline == "imagescope" and cfg.feedback:
        raise ConfigError("--feedback runs on the encoder pipeline (sessions); leave out --pipeline imagescope")
    lib = library_for(ds, encoder)
    try:
        idx = _Index(lib, ds)
        pool = [q for q in ds.queries if cfg.query_ids is None or q.id in cfg.query_ids]
        queries = _select(pool, cfg.limit, cfg.seed)
        per_query: list[dict[str, Any]] = []
        started = time.perf_counter()
        tv = _TextVectors(lib, queries)
        embed_seconds = (time.perf_counter() - started) / max(len(queries), 1)
        stopped_early = False
        pipe = _make_pipeline(lib, cfg) if cfg.pipeline == "imagescope" else None
        for n, q in enumerate(queries, start=1):
            if cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds:
                stopped_early = True
                break
            t0 = time.perf_counter()
            row = _query_row(lib, idx, tv, q, pipe, cfg)
            row["seconds"] = time.perf_counter() - t0 + embed_seconds
            per_query.append(row)
            if progress:
                progress(n, len(queries))
        metrics = _aggregate(per_query, ds, cfg, encoder, lib)
        metrics["stopped_early"] = stopped_early
        return RunResult(metrics, per_query)
    finally:
        lib.close()


def _query_row(lib: Library, idx: _Index, tv: _TextVectors, q: Query, pipe: Pipeline | None,
               cfg: RunConfig) -> dict[str, Any]:
    """Every metric of one query: the first ranking, each stage's, each dialogue round's, each feedback round's."""
    relevant = set(q.relevant)
    vec, exclude = _query_vector(lib, idx, tv, q)
    ranking = _ranking(lib, idx, vec, exclude)
    calls, tokens = 0, 0
    stage_info: dict[str, Any] = {}
    if pipe is not None:
        ranking, calls, tokens, stage_info = _pipeline_ranking(pipe, idx, q, ranking, len(q.turns or ()))
    row: dict[str, Any] = {"id": q.id, "text": q.text, "relevant": len(relevant), **_metrics_for(ranking, relevant)}
    row["top10"] = ranking[:10]
    per_stage = stage_info.pop("stage_rankings", None)
    if per_stage:
        row["per_stage"] = {str(s): {f"recall@{k}": M.recall_at_k(r, relevant, k) for k in (1, 5, 10)}
                            for s, r in per_stage.items()}
    row.update(stage_info)
    if q.turns:
        rankings = []
        for r in range(len(q.turns) + 1):
            base = _ranking(lib, idx, *_query_vector(lib, idx, tv, q, r))
            if pipe is not None:
                base, c, t, _ = _pipeline_ranking(pipe, idx, q, base, r)
                calls, tokens = calls + c, tokens + t
            rankings.append(base)
        row["dialog_hits@10"] = M.cumulative_hits(rankings, relevant, 10)
    if cfg.feedback:
        row["rounds"], fb_calls, row["fallback_rounds"] = _interactive(lib, idx, q, vec, exclude, cfg)
        calls += fb_calls
    row["model_calls"] = calls
    row["tokens"] = tokens
    return row


def _make_pipeline(lib: Library, cfg: RunConfig) -> Pipeline:
    from picscope.pipeline import make_pipeline

    return make_pipeline(lib, "imagescope", stages=cfg.stages, llm=cfg.llm, vision=cfg.vision,
                         config=cfg.pipeline_config)


def _pipeline_ranking(pipe: Pipeline, idx: _Index, q: Query, encoder_ranking: list[str], turns_upto: int
                      ) -> tuple[list[str], int, int, dict[str, Any]]:
    """The pipeline's top results, then the rest of the gallery in encoder order (for full-ranking metrics)."""
    from picscope.pipeline import Request

    ref = idx.id_of[q.reference] if q.reference else None
    out = pipe.run(Request(q.text, reference=ref, turns=list((q.turns or ())[:turns_upto])), k=RANKED)
    head = [idx.key_of[r.id] for r in out.results if r.id in idx.key_of]
    seen = set(head)
    rest = [x for x in encoder_ranking if x not in seen]
    info: dict[str, Any] = {"stages_run": out.stages, "skipped": out.explanation.get("skipped", {}),
                            "intent_source": out.explanation.get("intent", {}).get("source")}
    if turns_upto == len(q.turns or ()):
        info["stage_rankings"] = {stage: [idx.key_of[i] for i in ids if i in idx.key_of] + rest
                                  for stage, ids in out.stage_orders.items()}
    return head + rest, out.model_calls, out.tokens, info


def user_seed(seed: int, query_id: str) -> int:
    """The simulated user's seed for one query: stable across processes (zlib.crc32; `hash()` of a str is not,
    which made noisy-user runs differ from one run to the next)."""
    return seed + zlib.crc32(query_id.encode()) % 10_000


def _interactive(
    lib: Library, idx: _Index, q: Query, vec: np.ndarray, exclude: list[int], cfg: RunConfig
) -> tuple[list[dict[str, float]], int, int]:
    """Rounds of a simulated session: per-round recall, the model calls the strategy made, and how many rounds
    fell back (e.g. an LLM rewrite that failed and became embedding feedback)."""
    from picscope.feedback import make_strategy

    strategy = make_strategy(cfg.feedback or "none", lib)
    check = _request_check(lib, cfg, q.text)
    user = make_user(cfg.user, seed=user_seed(cfg.seed, q.id))
    relevant = set(q.relevant)
    state = FeedbackState(q.text, q.text, vec, anchor_vector=vec)
    shown: list[str] = []
    rounds = []
    fallbacks = 0
    for r in range(cfg.rounds + 1):
        seen = [idx.id_of[s] for s in shown]
        hits = unseen_page(lib, state.query_vector, cfg.page_size, seen, exclude, depth=idx.size,
                           check=check if r > 0 else None)
        page = [idx.key_of[h.id] for h in hits]
        shown.extend(page)
        found = len(relevant.intersection(shown))
        rounds.append({"round": r, "shown": len(shown), "recall": found / len(relevant), "hit": float(found > 0)})
        if r == cfg.rounds:
            break
        marks = user.mark(page, relevant)
        state = strategy.update(
            state, [idx.id_of[s] for s in marks.relevant], [idx.id_of[s] for s in marks.not_relevant]
        )
        fallbacks += state.fallback is not None
    return rounds, int(getattr(state, "model_calls", 0)), fallbacks


_CHECK_VISION: dict[str, Any] = {}  # one vision model per spec and process (it keeps its photos' cells)


def _request_check(lib: Library, cfg: RunConfig, request: str) -> RequestCheck | None:
    """The sessions' request check for one simulated session (None when off, or for feedback `none`)."""
    if not cfg.request_check or cfg.feedback in (None, "none"):
        return None
    from picscope.feedback.check import RequestCheck
    from picscope.models import DEFAULT_VISION_SPEC, make_vision_model

    spec = cfg.vision or DEFAULT_VISION_SPEC
    if spec not in _CHECK_VISION:
        _CHECK_VISION[spec] = make_vision_model(spec, encoder=lib.encoder)
    return RequestCheck(_CHECK_VISION[spec], request)


def _aggregate(rows: list[dict[str, Any]], ds: Dataset, cfg: RunConfig, encoder: str, lib: Library) -> dict[str, Any]:
    n = len(rows)
    mean = lambda key: float(np.mean([r[key] for r in rows])) if rows else float("nan")  # noqa: E731
    out: dict[str, Any] = {
        "dataset": str(ds.root),
        "gallery": len(ds.gallery),
        "queries": n,
        "relevant_per_query": mean("relevant"),
        "encoder": lib.catalog.get_meta("encoder_name") or encoder,
        "pipeline": cfg.pipeline,
        "seed": cfg.seed,
    }
    for k in KS:
        out[f"recall@{k}"] = mean(f"recall@{k}")
    for key in ("hits@10", "map@10", "ndcg@10", "mrr"):
        out[key] = mean(key)
    out["median_rank"] = M.median([r["first_rank"] for r in rows])
    out["seconds_per_query"] = mean("seconds")
    out["model_calls_per_query"] = mean("model_calls")
    out["tokens_per_query"] = mean("tokens")
    secs = [r["seconds"] for r in rows]
    if secs:
        out["seconds_p50"] = float(np.percentile(secs, 50))
        out["seconds_p95"] = float(np.percentile(secs, 95))
    if cfg.pipeline == "imagescope":
        out["stages"] = list(cfg.stages) if cfg.stages is not None else None
        skipped: dict[str, int] = {}
        for row in rows:
            for st in row.get("skipped", {}):
                skipped[st] = skipped.get(st, 0) + 1
        out["stage_skipped_queries"] = skipped
        staged = [r["per_stage"] for r in rows if "per_stage" in r]
        if staged:
            names = sorted({s for d in staged for s in d})
            out["per_stage"] = {s: {f"recall@{k}": float(np.mean([d[s][f"recall@{k}"] if s in d else
                                                                   d[max(d)][f"recall@{k}"] for d in staged]))
                                    for k in (1, 5, 10)} for s in names}
    dialog = [r["dialog_hits@10"] for r in rows if "dialog_hits@10" in r]
    if dialog:
        width = max(map(len, dialog))
        out["dialog_hits@10"] = [float(np.mean([d[min(i, len(d) - 1)] for d in dialog])) for i in range(width)]
    if cfg.feedback:
        out["feedback"] = cfg.feedback
        out["user"] = cfg.user
        out["page_size"] = cfg.page_size
        out["fallback_rounds_per_query"] = mean("fallback_rounds")
        out["rounds"] = []
        for r in range(cfg.rounds + 1):
            recall = float(np.mean([row["rounds"][r]["recall"] for row in rows]))
            out["rounds"].append(
                {
                    "round": r,
                    "shown": cfg.page_size * (r + 1),
                    f"recall@{cfg.page_size * (r + 1)}": recall,
                    "recall": recall,
                    "hits": float(np.mean([row["rounds"][r]["hit"] for row in rows])),
                }
            )
    return out
