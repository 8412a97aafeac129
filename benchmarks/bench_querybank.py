"""Query-bank normalisation of text searches: what it buys, what it costs, and how its settings were chosen.

    nice python benchmarks/bench_querybank.py                 # all parts
    nice python benchmarks/bench_querybank.py --parts chain cost

Parts (the bundled encoder's real vectors of Flickr8k train/dev through its own heads, from cached tower features):
- `tune`: bank size × β, R@1 on Flickr8k dev's 5th captions (the tuning set) and on captions 1–4 (the report set);
  the shipped bank is 5,000 captions at β = 20, rank 128.
- `chain`: on dev captions 1–4 (1,000 photos): the encoder alone; with the shipped bank; the bundled verifier
  re-ranking the top 20 (fusion weight chosen on the 5th captions); both. Baseline: the encoder alone.
- `ood`: through the evaluation harness (the product's search, `[search] querybank` off vs on) on sets unlike the
  bank's captions: MSR-VTT frames and Flickr8k concept queries (multi-positive).
- `cost`: the normalisers of a query's 50 candidates from compact codes (what a search does), p50/p95.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, percentiles, table

from picscope.encoders import make_encoder
from picscope.training.querybank import BankRecipe, DevVectors, build, dev_report, dev_vectors, recall


def part_tune(vectors: DevVectors) -> None:
    rows = []
    for size in (1000, 2000, 5000, 30000):
        bank = build(vectors, BankRecipe(size=size))  # one factorisation per size; β only scales the scores
        for beta in (10.0, 15.0, 20.0, 25.0, 40.0):
            rep = dev_report(vectors, replace(bank, beta=beta))
            rows.append([size, beta, rep["tune R@1"], rep["R@1"], rep["R@5"]])
    base = dev_report(vectors, None)
    rows.append(["(none)", "–", base["tune R@1"], base["R@1"], base["R@5"]])
    print("bank size × β (rank 128): choose on the 5th captions, report captions 1–4")
    print(table(["bank captions", "β", "5th captions R@1", "captions 1–4 R@1", "R@5"], rows), "\n")


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(axis=1, keepdims=True)) / (a.std(axis=1, keepdims=True) + 1e-6)


def _verifier_scores(cands: np.ndarray) -> np.ndarray:
    from picscope.models.verifier import load_verifier
    from picscope.training.data import flickr8k
    from picscope.training.grid import image_grids

    tr, dv = flickr8k("train"), flickr8k("dev")
    grids = image_grids(list(tr.paths) + list(dv.paths))
    verifier = load_verifier()
    cells = verifier.cells(np.asarray(grids[len(tr.paths):], np.float32))
    feats = verifier.text_features([c for cs in dv.captions for c in cs])
    return np.stack([verifier.score(cells[cands[i]], f) for i, f in enumerate(feats)])


def _ranked(scores: np.ndarray, pool: int = 20) -> np.ndarray:
    return np.argsort(-scores, axis=1)[:, :pool]


def part_chain(vectors: DevVectors) -> dict[str, Any]:
    bank = make_encoder("bundled").querybank  # type: ignore[attr-defined]
    raw = vectors.dev_texts @ vectors.dev_images.T
    qb = raw - bank.normalizers(vectors.dev_images)[None, :]
    n = len(raw)
    gold = np.arange(n) // 5
    rep, tune = np.flatnonzero(np.arange(n) % 5 != 4), np.flatnonzero(np.arange(n) % 5 == 4)
    results: dict[str, Any] = {}
    rows = []
    base = None
    for name, first in (("encoder", raw), ("encoder + query bank", qb)):
        cands = _ranked(first)
        hit = cands == gold[:, None]
        enc = np.take_along_axis(first, cands, 1)
        ver = _verifier_scores(cands)
        ceiling = 100 * hit[rep].any(axis=1).mean()

        def r_at(scores: np.ndarray, rows_: np.ndarray, k: int, hit: np.ndarray = hit) -> float:
            top = np.argsort(-scores[rows_], axis=1)[:, :k]
            return float(100 * np.take_along_axis(hit[rows_], top, 1).any(axis=1).mean())

        weights = (0.5, 0.75, 1.0, 1.25, 1.5)
        w = max(weights, key=lambda w: r_at(_z(enc) + w * _z(ver), tune, 1))
        fused = _z(enc) + w * _z(ver)
        for label, s in ((name, first), (f"{name} + verifier (top 20, weight {w}, chosen on the 5th)", fused)):
            r = [recall(s, rep, gold, 1) if s is first else r_at(s, rep, 1),
                 recall(s, rep, gold, 5) if s is first else r_at(s, rep, 5),
                 recall(s, rep, gold, 10) if s is first else r_at(s, rep, 10)]
            base = r[0] if base is None else base
            rows.append([label, *r, f"{r[0] - base:+.1f}", ceiling if s is not first else "–"])
            results[label] = r
    print("Flickr8k dev text→image, captions 1–4 (4,000 queries, 1,000 photos)")
    print(table(["ranking", "R@1", "R@5", "R@10", "ΔR@1", "top-20 ceiling"], rows), "\n")
    return results


def part_ood() -> None:
    import bench_feedback as bf

    import picscope.eval.runner as runner
    from picscope.eval.builders import build_msrvtt_frames
    from picscope.eval.dataset import load_dataset
    from picscope.paths import cache_dir

    root = cache_dir() / "datasets"
    sets = {"MSR-VTT frames": build_msrvtt_frames(root / "msrvtt-frames"),
            "Flickr8k dev concepts": bf.build_flickr8k_concepts(root / "flickr8k-dev-concepts")}
    rows = []
    for name, ds in sets.items():
        for on in (False, True):
            lib = runner.library_for(load_dataset(ds), "bundled")
            lib.config.search.querybank = on
            original = runner.library_for
            runner.library_for = lambda *a, _lib=lib, **k: _lib  # the same library, with the switch set
            try:
                m = runner.run(ds, runner.RunConfig(encoder="bundled")).metrics
            finally:
                runner.library_for = original
            rows.append([name, "on" if on else "off (baseline)", int(m["queries"]), 100 * m["recall@1"],
                         100 * m["recall@5"], 100 * m["recall@10"], 100 * m["map@10"]])
    print("sets unlike the bank's captions, through the evaluation harness (multi-positive: recall = share found)")
    print(table(["set", "query bank", "queries", "R@1", "R@5", "R@10", "mAP@10"], rows), "\n")


def part_cost() -> None:
    from picscope.store.compact import VectorCodec

    enc = make_encoder("bundled")
    bank = enc.querybank  # type: ignore[attr-defined]
    codec = VectorCodec.load(enc.codec_path)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, codec.code_dim)).astype(np.float32) * 0.05
    bank.normalizers_of_rows(rows, codec)  # the code-space factors: computed once (cached on disk)
    samples = []
    for _ in range(200):
        t = time.perf_counter()
        bank.normalizers_of_rows(rows, codec)
        samples.append(time.perf_counter() - t)
    p50, p95 = percentiles(samples)
    print("cost per text search (50 candidates' normalisers from compact codes)")
    print(table(["step", "p50 ms", "p95 ms"], [["normalisers of 50 candidates", 1000 * p50, 1000 * p95]]), "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["tune", "chain", "ood", "cost"])
    args = ap.parse_args()
    print(f"machine: {machine()}\n", flush=True)
    if {"tune", "chain"} & set(args.parts):
        vectors = dev_vectors(log=lambda m: print(m, flush=True))
        if "tune" in args.parts:
            part_tune(vectors)
        if "chain" in args.parts:
            part_chain(vectors)
    if "ood" in args.parts:
        part_ood()
    if "cost" in args.parts:
        part_cost()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
