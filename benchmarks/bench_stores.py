"""Vector stores side by side at scale: exact (in-process), ann (FAISS HNSW) and Milvus Lite (native 2.5), same run.

Data: N unit vectors of dimension D with low intrinsic dimension (32-d latent → D, plus 0.3 noise), the
"embedding-like" synthetic data of stack-notes §4, and fresh queries from the same distribution. Each
vector gets a path (`/archive/fNN/…`, 100 folders) and an mtime (spread over ten years), so that a
metadata filter ("under /archive/f1", ~10% of the rows) can run: as `allowed_ids` computed beforehand
for exact/ann (what the catalog hands them), and as a server-side expression for Milvus.
Ground truth is a brute-force numpy top-k. Latency is one query per call (p50/p95 over --queries).

    nice -n 10 python benchmarks/bench_stores.py --n 1000000 --dim 256

`--encoder bundled`: the default encoder's vectors (`bundled_data`), kept as the product keeps them (compact codes:
the exact store, and the HNSW store over the lifted coarse codes with the same re-score, one row per --ef), with
bytes per photo, the searching process's peak memory, p50/p95 and agreement with full-precision scoring, beside
FAISS IndexFlatIP on the same codes in the same run. It runs `bench_compact --ann` (Milvus is not included there):

    nice -n 10 python benchmarks/bench_stores.py --encoder bundled --n 1000000 --ef 256 512 1024
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import embedding_like
from common import machine, peak_rss_mb, percentiles, table

from picscope.store.base import Hits
from picscope.store.meta import FileMeta, MetaFilter

PREFIX = "/archive/f1"  # folders f10..f19: 10% of the rows


def ground_truth(data: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """True top-k row numbers (brute force; `rows` restricts the candidates)."""
    out = np.empty((len(queries), k), np.int64)
    cand = data if rows is None else data[rows]
    for i in range(0, len(queries), 50):
        s = queries[i : i + 50] @ cand.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
        best = np.take_along_axis(top, order, 1)
        out[i : i + 50] = best if rows is None else rows[best]
    return out


def recall(hits: list[np.ndarray], truth_rows: np.ndarray, k: int) -> float:
    """Mean |found ∩ true top-k| / k; store ids are row + 1."""
    got = [len(set((h[:k] - 1).tolist()) & set(t.tolist())) / k for h, t in zip(hits, truth_rows, strict=True)]
    return float(np.mean(got))


def run_queries(search: Callable[[np.ndarray], Hits], queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    search(queries[0])  # warm-up
    times, hits = [], []
    for q in queries:
        t0 = time.perf_counter()
        h = search(q[None, :])
        times.append(time.perf_counter() - t0)
        hits.append(h.ids[0])
    return times, hits


def row(
    name: str,
    ingest_s: float | None,
    times: list[float],
    hits: list[np.ndarray],
    truth: np.ndarray,
    k: int,
    note: str = "",
) -> list[object]:
    p50, p95 = percentiles(times)
    return [name, "" if ingest_s is None else f"{ingest_s:.0f}", p50 * 1000, p95 * 1000, recall(hits, truth, k), note]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256], help="ann ef_search values to sweep")
    ap.add_argument("--M", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--milvus-index", nargs="*", default=["FLAT", "IVF_FLAT"], help="Milvus Lite index types")
    ap.add_argument("--skip", nargs="*", default=[], choices=["exact", "ann", "milvus"])
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--encoder", choices=["synthetic", "bundled"], default="synthetic",
                    help="synthetic: --dim embedding-like vectors; bundled: the default encoder's (see above)")
    ap.add_argument("--generator", nargs="+", default=["sampled"], help="bundled: sampled and/or tiled")
    args = ap.parse_args()
    if args.encoder == "bundled":
        import bench_compact

        bench_compact.run(bench_compact.parser().parse_args(
            ["--sizes", str(args.n), "--generators", *args.generator, "--queries", str(args.queries), "-k", str(args.k),
             "--ann", "--ef", *map(str, args.ef), *(["--json", str(args.json)] if args.json else [])]))
        return
    k, n = args.k, args.n

    t0 = time.perf_counter()
    data = embedding_like(n, args.dim, seed=0)
    queries = embedding_like(args.queries, args.dim, seed=12345)
    ids = np.arange(1, n + 1, dtype=np.int64)
    folders = np.arange(n) % 100
    paths = [f"/archive/f{f:02d}/{i:07d}.jpg" for i, f in enumerate(folders.tolist())]
    mtimes = (1_400_000_000 + (np.arange(n) * 997 % (10 * 365 * 86_400))).astype(np.int64) * 1_000_000_000
    filtered_rows = np.flatnonzero((folders >= 10) & (folders < 20))
    allowed = filtered_rows + 1
    truth = ground_truth(data, queries, k)
    truth_f = ground_truth(data, queries, k, filtered_rows)
    print(f"data + ground truth: {time.perf_counter() - t0:.0f} s; {machine()}", flush=True)

    headers = ["store", "ingest s", "p50 ms", "p95 ms", f"recall@{k}", "setting"]
    rows: list[list[object]] = []
    results: dict[str, Any] = {"n": n, "dim": args.dim, "queries": args.queries, "k": k, "rows": rows}
    tmp = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    try:
        run_stores(args, tmp, data, queries, ids, paths, mtimes, allowed, truth, truth_f, headers, rows, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["peak_rss_mb"] = peak_rss_mb()
    print()
    print(
        f"N={n} D={args.dim}, {args.queries} single-vector queries, k={k}; {machine()}; peak RSS "
        f"{results['peak_rss_mb']:.0f} MB (this process; Milvus Lite runs in its own process)"
    )
    print(table(headers, rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


def run_stores(
    args: argparse.Namespace,
    tmp: Path,
    data: np.ndarray,
    queries: np.ndarray,
    ids: np.ndarray,
    paths: list[str],
    mtimes: np.ndarray,
    allowed: np.ndarray,
    truth: np.ndarray,
    truth_f: np.ndarray,
    headers: list[str],
    rows: list[list[object]],
    results: dict[str, Any],
) -> None:
    k, n = args.k, args.n

    if "exact" not in args.skip:
        from picscope.store.exact import ExactStore

        st = ExactStore(tmp / "exact", args.dim)
        t = time.perf_counter()
        for s in range(0, n, 100_000):
            st.upsert(ids[s : s + 100_000], data[s : s + 100_000])
        ing = time.perf_counter() - t
        tm, h = run_queries(lambda q: st.search(q, k), queries)
        rows.append(row("exact", ing, tm, h, truth, k, "numpy matvec over a memory map"))
        tm, h = run_queries(lambda q: st.search(q, k, allowed), queries)
        rows.append(row("exact + filter", None, tm, h, truth_f, k, "allowed_ids (10%)"))
        st.close()
        print(table(headers, rows), flush=True)

    if "ann" not in args.skip:
        from picscope.store.ann import AnnOptions, AnnStore

        opts = AnnOptions(M=args.M, ef_construction=args.ef_construction, ef_search=args.ef[0], checkpoint_rows=10 * n)
        ast = AnnStore(tmp / "ann", args.dim, opts)
        t = time.perf_counter()
        for s in range(0, n, 50_000):
            ast.upsert(ids[s : s + 50_000], data[s : s + 50_000])
            print(f"  ann ingest {s + 50_000}/{n}: {time.perf_counter() - t:.0f} s", flush=True)
        ing = time.perf_counter() - t
        t = time.perf_counter()
        ast.checkpoint()
        print(f"  ann checkpoint {time.perf_counter() - t:.1f} s", flush=True)
        for ef in args.ef:
            ast.options.ef_search = ef
            tm, h = run_queries(lambda q: ast.search(q, k), queries)
            rows.append(
                row(
                    "ann (HNSW)",
                    ing if ef == args.ef[0] else None,
                    tm,
                    h,
                    truth,
                    k,
                    f"M={args.M} efC={args.ef_construction} ef={ef}",
                )
            )
        tm, h = run_queries(lambda q: ast.search(q, k, allowed), queries)
        rows.append(row("ann + filter", None, tm, h, truth_f, k, f"ef={args.ef[-1]}, allowed_ids (10%)"))
        ast.close()
        t = time.perf_counter()
        ast = AnnStore(tmp / "ann", args.dim, opts)
        results["ann_reopen_s"] = time.perf_counter() - t
        ast.close()
        print(table(headers, rows), flush=True)

    if "milvus" not in args.skip and args.milvus_index:
        from picscope.store.milvus import MilvusOptions, MilvusStore

        mopts = MilvusOptions(index_type=args.milvus_index[0], nlist=1024, nprobe=32, batch_rows=5000, timeout=600)
        ms = MilvusStore("bench.db", tmp / "milvus", args.dim, mopts)
        t = time.perf_counter()
        step = 50_000
        for s in range(0, n, step):
            meta = [
                FileMeta(p, int(m)) for p, m in zip(paths[s : s + step], mtimes[s : s + step].tolist(), strict=True)
            ]
            ms.upsert_with_meta(ids[s : s + step], data[s : s + step], meta)
            print(f"  milvus ingest {s + step}/{n}: {time.perf_counter() - t:.0f} s", flush=True)
        ms.flush()
        ing = time.perf_counter() - t
        flt = MetaFilter(path_prefix=PREFIX)
        for index_type in args.milvus_index:
            if index_type != ms.options.index_type:
                t = time.perf_counter()
                ms.options.index_type = index_type
                c = ms._client
                c.release_collection(ms.collection)
                c.drop_index(ms.collection, "vec")
                ip = c.prepare_index_params()
                ip.add_index(
                    field_name="vec", index_type=index_type, metric_type="IP", params=ms.options.index_params()
                )
                c.create_index(ms.collection, ip)
                c.load_collection(ms.collection)
                ing = time.perf_counter() - t
            setting = f"{index_type} {ms.options.search_params() or ''}".strip()
            tm, h = run_queries(lambda q: ms.search(q, k), queries)
            rows.append(row(f"milvus-lite {index_type}", ing, tm, h, truth, k, setting))
            tm, h = run_queries(lambda q: ms.search(q, k, filter=flt), queries)
            rows.append(
                row(f"milvus-lite {index_type} + filter", None, tm, h, truth_f, k, "server-side `path` range (10%)")
            )
            print(table(headers, rows), flush=True)
        ms.close()


if __name__ == "__main__":
    main()
