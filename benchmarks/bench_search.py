"""Search latency of one text query over N stored vectors: picscope's exact store vs FAISS IndexFlatIP vs an
rclip-style baseline (vectors loaded from SQLite per query, sorted in Python), all in the same run.
Also measures this machine's memory read bandwidth and the fraction of it the exact scan achieves.

    python benchmarks/bench_search.py --sizes 100000 1000000 --dim 256

`--encoder bundled`: vectors shaped like the default encoder's (2,410-d; `bundled_data`: real vectors of the shared
photos grown by `--generator`), stored as the product stores them (compact codes), searched from a fresh process:
bytes per photo, peak memory, p50/p95 and agreement with full-precision scoring, beside the exact store over full
float32 vectors (up to --full-max) and FAISS IndexFlatIP over the same coarse codes with the same re-score, in the
same run. It runs `bench_compact` without the HNSW store:

    nice -n 10 python benchmarks/bench_search.py --encoder bundled --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, percentiles, table, time_calls

from picscope.store.exact import ExactStore


def embedding_like(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors with low intrinsic dimension (like real embeddings), generated in chunks."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((32, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        z = rng.standard_normal((m, 32)).astype(np.float32)
        x = z @ basis + 0.3 * rng.standard_normal((m, dim)).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bandwidth_gbs() -> float:
    """Read bandwidth with every core summing its own slice of a 1 GiB array (numpy releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(1024 * 1024 * 1024 // 4, np.float32)
    n = os.cpu_count() or 1
    parts = np.array_split(a, n)
    with ThreadPoolExecutor(n) as pool:
        best = min(time_calls(lambda: list(pool.map(np.sum, parts)), repeats=5, warmup=1))
    return a.nbytes / best / 1e9


def rclip_style(db_path: Path, q: np.ndarray, k: int) -> list[tuple[str, float]]:
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT filepath, vector FROM images").fetchall()
    db.close()
    feats = np.stack([np.frombuffer(v, np.float32) for _, v in rows])
    sims = feats @ q
    ranked = sorted(zip([r[0] for r in rows], sims.tolist(), strict=True), key=lambda t: t[1], reverse=True)
    return ranked[:k]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--rclip-repeats", type=int, default=3)
    ap.add_argument("--encoder", choices=["synthetic", "bundled"], default="synthetic",
                    help="synthetic: --dim embedding-like vectors; bundled: the default encoder's (see above)")
    ap.add_argument("--generator", nargs="+", default=["sampled"], help="bundled: sampled and/or tiled")
    ap.add_argument("--full-max", type=int, default=100_000, help="bundled: largest N with full float32 vectors")
    args = ap.parse_args()
    if args.encoder == "bundled":
        import bench_compact

        bench_compact.run(bench_compact.parser().parse_args(
            ["--sizes", *map(str, args.sizes), "--generators", *args.generator, "--queries", str(args.repeats),
             "-k", str(args.k), "--full-max", str(args.full_max)]))
        return
    import faiss

    bw = bandwidth_gbs()
    print(f"machine: {machine()}; memory read bandwidth (all cores summing 1 GiB): {bw:.1f} GB/s\n")
    rows = []
    for n in args.sizes:
        vecs = embedding_like(n, args.dim)
        queries = embedding_like(args.repeats + 1, args.dim, seed=1)
        with tempfile.TemporaryDirectory() as tmp:
            store = ExactStore(Path(tmp) / "store", args.dim)
            t0 = time.perf_counter()
            for s in range(0, n, 100_000):
                store.upsert(np.arange(s + 1, min(s + 100_000, n) + 1), vecs[s : s + 100_000])
            ingest = time.perf_counter() - t0
            it = iter(range(10**9))

            def ours_call(store: ExactStore = store, queries: np.ndarray = queries, it: Iterator[int] = it) -> object:
                return store.search(queries[next(it) % len(queries)], args.k)

            ours = time_calls(ours_call, args.repeats)
            index = faiss.IndexFlatIP(args.dim)
            index.add(vecs)
            it2 = iter(range(10**9))

            def flat_call(index: object = index, queries: np.ndarray = queries, it: Iterator[int] = it2) -> object:
                return index.search(queries[next(it) % len(queries)][None], args.k)  # type: ignore[attr-defined]

            flat = time_calls(flat_call, args.repeats)
            # same answers?
            ours_ids = store.search(queries[0], args.k).ids[0] - 1
            _, f_ids = index.search(queries[0][None], args.k)
            agree = len(set(ours_ids.tolist()) & set(f_ids[0].tolist())) / args.k
            db_path = Path(tmp) / "rclip.db"
            db = sqlite3.connect(db_path)
            db.execute("CREATE TABLE images (filepath TEXT, vector BLOB)")
            db.executemany(
                "INSERT INTO images VALUES (?, ?)", ((f"/photos/{i}.jpg", vecs[i].tobytes()) for i in range(n))
            )
            db.commit()
            db.close()
            q0 = queries[0]
            rcl = time_calls(lambda p=db_path, q=q0: rclip_style(p, q, args.k), args.rclip_repeats, warmup=0)
            store.close()
        o50, o95 = percentiles(ours)
        f50, f95 = percentiles(flat)
        r50, r95 = percentiles(rcl)
        scan_gbs = vecs.nbytes / o50 / 1e9
        rows.append(
            [
                f"{n:,}",
                "picscope exact (memmap matvec + argpartition)",
                o50 * 1e3,
                o95 * 1e3,
                f"{scan_gbs:.1f} GB/s = {scan_gbs / bw:.0%} of bw",
                f"ingest {ingest:.1f} s",
            ]
        )
        rows.append(
            [
                f"{n:,}",
                "FAISS IndexFlatIP",
                f50 * 1e3,
                f95 * 1e3,
                f"top-{args.k} agreement {agree:.0%}",
                f"ours/faiss p50 = {o50 / f50:.2f}x",
            ]
        )
        rows.append(
            [
                f"{n:,}",
                "rclip-style (SQLite load + Python sort)",
                r50 * 1e3,
                r95 * 1e3,
                "",
                f"rclip/ours p50 = {r50 / o50:.0f}x",
            ]
        )
        del vecs
    print(table(["vectors", "method", "p50 ms", "p95 ms", "scan", "comparison"], rows))


if __name__ == "__main__":
    main()
