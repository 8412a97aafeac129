"""The default encoder's vectors at their real size: full float32 vs the compact format, up to 1M photos.

Data: the `bundled` encoder's real vectors of the 7,000 shared Flickr8k photos, tiled to N (see
`bundled_data.tiled`), and real Flickr8k dev caption queries. For each N, in the same run:
- ground truth: full-precision (float32, 2,410-d) inner products, streamed chunk by chunk;
- `full f32`: picscope's exact store over the full vectors (only up to --full-max rows: 9,640 bytes per photo);
- `compact`: the exact store in the library's compact format (coarse float32 scan + int8 re-score of the best
  candidates), searched from a fresh process that opens the store from disk, as `picscope search` would;
- `FAISS flat (coarse codes)`: FAISS IndexFlatIP over the same coarse codes (what the scan reads);
- `ann compact` (with --ann): the HNSW store over the coarse codes, plus the same re-score.
Reports bytes per photo on disk (rows written; the store's files grow by up to 50% ahead, allocated), p50/p95 per
query, the searching process's peak resident memory (VmHWM), and recall@10 against full precision.

    nice -n 5 python benchmarks/bench_compact.py --sizes 100000 1000000 --ann
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import describe, real_vectors, tiled
from common import machine, percentiles, table

from picscope.encoders import make_encoder
from picscope.store.compact import VectorCodec, coarse_dim, lifted
from picscope.store.exact import ExactStore

SEARCHER = r"""
import json, sys, time
import numpy as np
from pathlib import Path
from picscope.store.compact import VectorCodec, coarse_dim, compact
from picscope.store.exact import ExactStore
args = json.loads(sys.argv[1])
codec = VectorCodec.load(Path(args["codec"]))
folder = Path(args["folder"])
if args["kind"] == "ann":
    from picscope.store.ann import AnnOptions, AnnStore
    inner = AnnStore(folder / "ann", coarse_dim(codec, True), AnnOptions(ef_search=args["ef"], exact_below=0))
elif args["kind"] == "full":
    inner = None
else:
    inner = ExactStore(folder / "coarse", codec.scan_dim)
if inner is None:
    store = ExactStore(folder / "full", codec.dim)
else:
    store = compact(inner, ExactStore(folder / "fine", codec.fine_dim, np.int8), codec, lift=args["kind"] == "ann")
queries = np.load(args["queries"])
store.search(queries[0], args["k"])
times, ids = [], []
for q in queries:
    t0 = time.perf_counter()
    hits = store.search(q, args["k"])
    times.append(time.perf_counter() - t0)
    ids.append(hits.ids[0].tolist())
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]  # this process's own peak
print(json.dumps({"times": times, "ids": ids, "rss_mb": int(hwm) / 1024}))
"""


def searcher(kind: str, folder: Path, codec_path: Path, queries: Path, k: int, ef: int = 256) -> dict[str, object]:
    arg = json.dumps({"kind": kind, "folder": str(folder), "codec": str(codec_path), "queries": str(queries),
                      "k": k, "ef": ef})
    out = subprocess.run([sys.executable, "-c", SEARCHER, arg], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def rows_bytes(folder: Path) -> int:
    """Bytes of the live rows (vectors + ids) of an exact store folder, without the growth slack."""
    if not folder.exists():
        return 0
    ids = np.fromfile(folder / "vectors.ids", np.int64)
    live = int(np.count_nonzero(ids))
    vec = next(p for p in folder.iterdir() if p.name.startswith("vectors.") and p.suffix != ".ids")
    row = vec.stat().st_size // max(len(ids), 1)
    return live * (row + 8)


def recall(ids: list[list[int]], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len({i - 1 for i in row[:k]} & set(t[:k].tolist())) / k
                          for row, t in zip(ids, truth, strict=True)]))


def build(n: int, base: np.ndarray, queries: np.ndarray, codec: VectorCodec, folder: Path, k: int,
          full_max: int, ann: bool) -> tuple[np.ndarray, float]:
    """Write the stores for n tiled rows; return the full-precision top-k rows of every query and ingest seconds."""
    coarse = ExactStore(folder / "coarse", codec.scan_dim)
    fine = ExactStore(folder / "fine", codec.fine_dim, np.int8)
    full = ExactStore(folder / "full", codec.dim) if n <= full_max else None
    ann_store = None
    if ann:
        from picscope.store.ann import AnnOptions, AnnStore

        ann_store = AnnStore(folder / "ann", coarse_dim(codec, True), AnnOptions(checkpoint_rows=10**9))
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    t_ingest = 0.0
    for start, rows in tiled(base, n):
        ids = np.arange(start + 1, start + len(rows) + 1, dtype=np.int64)
        s = queries @ rows.T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(rows)), s.shape)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
        t0 = time.perf_counter()
        c, f = codec.encode(rows)
        fine.upsert(ids, f)
        coarse.upsert(ids, c)
        if ann_store is not None:
            ann_store.upsert(ids, lifted(c, codec.coarse_norm, data=True))  # as the library's ann store keeps them
        t_ingest += time.perf_counter() - t0
        if full is not None:
            full.upsert(ids, rows)
        print(f"  {start + len(rows):,}/{n:,} rows written", file=sys.stderr, end="\r", flush=True)
    print(file=sys.stderr)
    for s in (coarse, fine, full, ann_store):
        if s is not None:
            if hasattr(s, "checkpoint"):
                s.checkpoint()
            s.close()
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1), t_ingest


def faiss_flat(folder: Path, queries_coarse: np.ndarray, k: int) -> list[float]:
    import faiss

    store = ExactStore(folder / "coarse", queries_coarse.shape[1])
    index = faiss.IndexFlatIP(store.dim)
    index.add(np.asarray(store._vecs))
    times = []
    for q in queries_coarse:
        t0 = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - t0)
    store.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--full-max", type=int, default=100_000, help="largest N with a full-f32 store (9.6 KB/photo)")
    ap.add_argument("--ann", action="store_true", help="also build and search the HNSW store (minutes at 1M)")
    ap.add_argument("--ef", type=int, default=256)
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the stores (default: a temp folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    enc = make_encoder("bundled")
    if enc.codec_path is None:
        raise SystemExit("the bundled encoder ships no codec")
    codec = VectorCodec.load(enc.codec_path)
    base, captions = real_vectors()
    queries = captions[: args.queries]
    print(f"machine: {machine()}; encoder {enc.name}, codec {codec.name}: {codec.scan_dim} float32 + "
          f"{codec.fine_dim} int8 numbers per photo, re-score {codec.rescore}\n")
    print("real vs tiled rows (1,000 sampled):")
    print(table(["statistic", "real", "tiled"], describe(base, captions)) + "\n")
    rows: list[list[object]] = []
    results: dict[str, object] = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            folder = Path(tmp)
            truth, ingest = build(n, base, queries, codec, folder, args.k, args.full_max, args.ann)
            qpath = folder / "queries.npy"
            np.save(qpath, queries)
            per_photo = {name: rows_bytes(folder / name) / n for name in ("coarse", "fine", "full")}
            runs: dict[str, dict[str, object]] = {}
            if n <= args.full_max:
                runs["full f32 (exact store)"] = searcher("full", folder, enc.codec_path, qpath, args.k)
            runs["compact (exact store)"] = searcher("compact", folder, enc.codec_path, qpath, args.k)
            if args.ann:
                runs[f"compact (ann, ef {args.ef})"] = searcher("ann", folder, enc.codec_path, qpath, args.k, args.ef)
            flat = faiss_flat(folder, codec.queries(queries)[0], args.k)
            exact_p50 = percentiles(runs["compact (exact store)"]["times"])[0]  # type: ignore[arg-type]
            for name, r in runs.items():
                p50, p95 = percentiles(r["times"])  # type: ignore[arg-type]
                bpp = per_photo["full"] if name.startswith("full") else per_photo["coarse"] + per_photo["fine"]
                rows.append([f"{n:,}", name, f"{bpp:,.0f}", p50 * 1e3, p95 * 1e3, f"{r['rss_mb']:.0f}",
                             f"{recall(r['ids'], truth, args.k):.3f}",  # type: ignore[arg-type]
                             f"{exact_p50 / p50:.1f}x" if name.startswith("compact (ann") else ""])
            f50, f95 = percentiles(flat)
            rows.append([f"{n:,}", "FAISS IndexFlatIP (coarse codes only)", f"{per_photo['coarse']:,.0f}",
                         f50 * 1e3, f95 * 1e3, "", "", ""])
            results[str(n)] = {"ingest_s": ingest, "rows": rows[-len(runs) - 1:]}
        print(table(["photos", "store", "bytes/photo", "p50 ms", "p95 ms", "peak RSS MB", "recall@10 vs f32",
                     "faster than exact"], rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
