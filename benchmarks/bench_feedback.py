"""Relevance feedback: recall per round for each strategy and simulated user, the cost of a round, and the
latency of a session round on a 10k-image library.

    python benchmarks/bench_feedback.py                         # everything, offline defaults
    python benchmarks/bench_feedback.py --parts recall --strategies none rocchio --flickr-limit 500
    python benchmarks/bench_feedback.py --parts scale --size 10000

Recall (part `recall`, through the evaluation harness `picscope.eval.runner.run` and its simulated users):
10 images per page, round 0 = the first page before any feedback, then 3 feedback rounds; recall at round r =
|relevant ∩ every image shown in rounds 0..r| / |relevant|, averaged over queries (so `none`, which shows the next
unseen page of the original ranking, is exactly recall@10·(r+1)). Gain = recall(round 3) / recall_none(round 3) − 1.
A strategy name with `+check` (e.g. `rocchio+check`) also re-ranks each feedback round's candidates against the
request with the default vision model, as sessions do (`picscope.feedback.check`); without it, the bare strategy.

Cost (part `cost`): `Session.next_round` on the MSR-VTT frames library with the oracle user, per strategy:
seconds p50/p95 and model calls per round. Scale (part `scale`): the same round on a library of `--size`
synthetic embedding-like vectors with the offline default encoder's text tower and `rocchio` (the Rocchio step of
the default `combined`; synthetic vectors have no photos to caption).
Strategies that need model backends (`caption`, `rewrite`, `combined`) are reported as not run when
`picscope.models` cannot build the offline defaults.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import embedding_like
from common import machine, percentiles, table

from picscope.errors import PicscopeError
from picscope.eval.builders import build_flickr8k, build_msrvtt_frames
from picscope.eval.dataset import load_dataset
from picscope.eval.runner import RunConfig, library_for, run
from picscope.feedback import NAMES, make_strategy
from picscope.paths import cache_dir, data_root
from picscope.sessions import Session

STOP = set(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "in",
        "on",
        "at",
        "to",
        "with",
        "for",
        "from",
        "by",
        "is",
        "are",
        "was",
        "were",
        "be",
        "its",
        "it",
        "this",
        "that",
        "his",
        "her",
        "their",
        "they",
        "there",
        "some",
        "while",
        "as",
        "up",
        "down",
        "out",
        "off",
        "into",
        "onto",
        "over",
        "under",
        "near",
        "next",
        "two",
        "three",
        "one",
        "other",
        "another",
        "each",
        "very",
        "who",
        "someone",
        "something",
        "his",
        "has",
        "have",
        "being",
        "camera",
        "front",
        "top",
        "side",
        "back",
        "through",
        "stands",
        "standing",
    ]
)


def build_flickr8k_concepts(out: Path, max_queries: int = 300, seed: int = 0, offset: int = 0) -> Path:
    """Multi-positive Flickr8k dev: a query is a pair of concepts ("dog snow"); the relevant images are those
    where at least 2 of the 5 human captions mention both words. The labels come from the human captions only.
    `offset`: skip the first pairs of the seeded shuffle (offset=300 gives the pairs the default set leaves out,
    a held-out check for weights chosen on the default set)."""
    import random
    from collections import Counter
    from itertools import combinations

    from picscope.eval.dataset import Query, link_image, write_dataset
    from picscope.training.data import flickr8k

    data = flickr8k("dev")
    consensus: list[set[str]] = []
    for caps in data.captions:
        counts = Counter(w for c in caps for w in {t.strip(".,!?'\"") for t in c.lower().split()})
        consensus.append({w for w, n in counts.items() if n >= 2 and w not in STOP and len(w) > 2})
    df = Counter(w for ws in consensus for w in ws)
    vocab = {w for w, n in df.items() if 10 <= n <= 300}
    pairs: dict[tuple[str, str], list[int]] = {}
    for i, ws in enumerate(consensus):
        for a, b in combinations(sorted(ws & vocab), 2):
            pairs.setdefault((a, b), []).append(i)
    good = sorted(p for p, imgs in pairs.items() if 5 <= len(imgs) <= 30 and p[0][:4] != p[1][:4])
    random.Random(seed).shuffle(good)
    keys = {}
    for p in data.paths:
        keys[p] = f"images/{p.name}"
        link_image(p, out / keys[p])

    def natural(a: str, b: str) -> str:  # the order in which the captions of the first relevant image say them
        text = " ".join(data.captions[pairs[(a, b)][0]]).lower()
        return f"{a} {b}" if text.find(a) <= text.find(b) else f"{b} {a}"

    queries = [
        Query(f"{a}+{b}", natural(a, b), tuple(keys[data.paths[i]] for i in pairs[(a, b)]))
        for a, b in good[offset : offset + max_queries]
    ]
    return write_dataset(out, queries)


def runnable(strategies: list[str], lib: Any) -> tuple[list[str], dict[str, str]]:
    ok, skipped = [], {}
    for s in strategies:
        try:
            make_strategy(s.removesuffix("+check"), lib)
            ok.append(s)
        except PicscopeError as exc:
            skipped[s] = str(exc)
    return ok, skipped


def part_recall(
    datasets: dict[str, Path], strategies: list[str], users: list[str], limits: dict[str, int | None]
) -> None:
    rows = []
    for name, ds in datasets.items():
        for user in users:
            base: float | None = None
            for strategy in strategies:
                t0 = time.perf_counter()
                cfg = RunConfig(feedback=strategy.removesuffix("+check"), user=user, rounds=3, page_size=10,
                                limit=limits.get(name), request_check=strategy.endswith("+check"))
                res = run(ds, cfg)
                r = [x["recall"] for x in res.metrics["rounds"]]
                if strategy == "none":
                    base = r[-1]
                gain = f"{100 * (r[-1] / base - 1):+.1f}%" if base and strategy != "none" else ""
                rows.append(
                    [
                        name,
                        user,
                        strategy,
                        res.metrics["queries"],
                        *(f"{100 * x:.1f}" for x in r),
                        gain,
                        f"{res.metrics.get('model_calls_per_query', 0.0):.1f}",
                        f"{res.metrics.get('fallback_rounds_per_query', 0.0):.2f}",
                        f"{time.perf_counter() - t0:.0f}",
                    ]
                )
                print(" | ".join(map(str, rows[-1])), flush=True)
    print()
    print(
        table(
            [
                "dataset",
                "user",
                "feedback",
                "queries",
                "round 0",
                "round 1",
                "round 2",
                "round 3",
                "gain vs none",
                "model calls/query",
                "fallback rounds/query",
                "run s",
            ],
            rows,
        )
    )


def part_cost(ds_dir: Path, strategies: list[str], n_queries: int) -> None:
    ds = load_dataset(ds_dir)
    lib = library_for(ds, _encoder())
    root = str(ds.root.absolute())
    key_of = {rec.id: str(Path(rec.path).relative_to(root)) for rec in lib.catalog.all("ok")}
    rows = []
    try:
        for strategy in strategies:
            secs: list[float] = []
            calls: list[int] = []
            fallbacks = 0
            for q in ds.queries[:n_queries]:
                truth = set(q.relevant)
                s = Session.create(lib, q.text, strategy=strategy.removesuffix("+check"), page_size=10,
                                   options={"check_request": strategy.endswith("+check")})
                for _ in range(3):
                    page = s.page()
                    rel = [p.id for p in page if key_of.get(p.id) in truth]
                    non = [p.id for p in page if key_of.get(p.id) not in truth]
                    if rel:
                        s.mark(rel, True)
                    if non:
                        s.mark(non, False)
                    before = s.explain()["history"][-1]["model_calls_so_far"]
                    t0 = time.perf_counter()
                    s.next_round()
                    secs.append(time.perf_counter() - t0)
                    h = s.explain()["history"][-1]
                    calls.append(h["model_calls_so_far"] - before)
                    fallbacks += h["fallback"] is not None
            p50, p95 = percentiles(secs)
            rows.append([strategy, len(secs), f"{np.mean(calls):.1f}", f"{p50:.3f}", f"{p95:.3f}", fallbacks])
    finally:
        lib.close()
    print(table(["strategy", "rounds", "model calls/round", "s p50", "s p95", "fallbacks"], rows))


def _encoder() -> str:
    from picscope.encoders import default_encoder_spec

    return default_encoder_spec()


SCALE_STRATEGY = "rocchio"  # synthetic vectors have no photos to caption: the default's (combined) Rocchio step


def part_scale(size: int, sessions: int) -> None:
    from picscope import Library

    with tempfile.TemporaryDirectory() as tmp:
        lib = Library.open(Path(tmp) / "lib", encoder=_encoder())
        enc = lib.encoder
        vecs = embedding_like(size, enc.dim, seed=1)
        lib.catalog.set_meta("encoder_name", enc.name)
        lib.catalog.set_meta("dim", str(enc.dim))
        with lib.catalog.transaction() as db:
            ids = [
                lib.catalog.upsert_file(
                    db,
                    raw=f"/synthetic/{i:06d}.jpg".encode(),
                    size=1,
                    mtime_ns=1,
                    hash=None,
                    width=None,
                    height=None,
                    status="ok",
                    error=None,
                )
                for i in range(size)
            ]
        lib.store.upsert(np.asarray(ids, np.int64), vecs)
        words = [
            "a dog on a beach",
            "red car in the city",
            "children playing football",
            "a plate of food",
            "mountains under snow",
            "a man riding a bike",
            "two cats sleeping",
            "a crowded market",
        ]
        lib.embed_texts(["warm up"])  # model load is not part of a round
        created: list[float] = []
        rounds: list[float] = []
        rng = np.random.default_rng(0)
        for n in range(sessions):
            t0 = time.perf_counter()
            s = Session.create(lib, words[n % len(words)] + f" #{n}", strategy=SCALE_STRATEGY, page_size=10,
                               options={"check_request": False})  # synthetic vectors: no photos to check
            created.append(time.perf_counter() - t0)
            for _ in range(3):
                page = [p.id for p in s.page()]
                picks = rng.permutation(len(page))
                s.mark([page[i] for i in picks[:2]], True)
                s.mark([page[i] for i in picks[2:5]], False)
                t0 = time.perf_counter()
                s.next_round()
                rounds.append(time.perf_counter() - t0)
        lib.close()
    c50, c95 = percentiles(created)
    r50, r95 = percentiles(rounds)
    print(
        table(
            ["library", "strategy", "sessions", "start (round 0) p50/p95 s", "next round p50/p95 s"],
            [
                [
                    f"{size} synthetic vectors, {_encoder()} text tower",
                    SCALE_STRATEGY,
                    sessions,
                    f"{c50:.3f} / {c95:.3f}",
                    f"{r50:.3f} / {r95:.3f}",
                ]
            ],
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["recall", "cost", "scale"])
    ap.add_argument("--strategies", nargs="+", default=list(NAMES))
    ap.add_argument("--users", nargs="+", default=["oracle", "noisy", "budgeted"])
    ap.add_argument("--datasets", nargs="+", default=["msrvtt", "flickr8k", "flickr8k-concepts"],
                    help="msrvtt, flickr8k, flickr8k-concepts, flickr8k-concepts-heldout")
    ap.add_argument("--flickr-limit", type=int, default=1000, help="Flickr8k dev queries (of 5,000), seeded sample")
    ap.add_argument("--limit", type=int, default=None,
                    help="a seeded sample of this many queries per dataset (for the LLM strategies)")
    ap.add_argument("--cost-queries", type=int, default=20)
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--sessions", type=int, default=20)
    args = ap.parse_args()
    print(f"machine: {machine()}\n", flush=True)
    if "scale" in args.parts:
        part_scale(args.size, args.sessions)
    if not (data_root() / "flickr8k").exists():
        print(f"recall/cost skipped: shared data not found under {data_root()}")
        return
    ds_root = cache_dir() / "datasets"
    all_ds = {
        "msrvtt": ("MSR-VTT frames", build_msrvtt_frames(ds_root / "msrvtt-frames")),
        "flickr8k": ("Flickr8k dev", build_flickr8k(ds_root / "flickr8k-dev", "dev")),
        "flickr8k-concepts": ("Flickr8k dev concepts", build_flickr8k_concepts(ds_root / "flickr8k-dev-concepts")),
        "flickr8k-concepts-heldout": ("Flickr8k dev concepts, held-out pairs",
                                      build_flickr8k_concepts(ds_root / "flickr8k-dev-concepts-heldout", offset=300)),
    }
    chosen = {all_ds[d][0]: all_ds[d][1] for d in args.datasets}
    probe = library_for(load_dataset(next(iter(chosen.values()))), _encoder())
    strategies, skipped = runnable(args.strategies, probe)
    probe.close()
    for s, why in skipped.items():
        print(f"not run: {s}: {why}")
    if "recall" in args.parts:
        limits = {name: args.limit for name in chosen}
        if args.limit is None:
            limits["Flickr8k dev"] = args.flickr_limit
        part_recall(chosen, strategies, args.users, limits)
    if "cost" in args.parts:
        print()
        part_cost(all_ds["msrvtt"][1], strategies, args.cost_queries)


if __name__ == "__main__":
    main()
