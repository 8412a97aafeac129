"""The default encoder's vectors at their real size: full float32 vs the compact format, up to 1M photos.

Data: the `bundled` encoder's real vectors of the 7,000 shared Flickr8k photos, grown to N by a generator
(`--generators`: `sampled`, a smoothed bootstrap whose nearest-neighbour statistics match the real photos', and
`tiled`, the denser stress set of earlier rounds; see `bundled_data`), and real Flickr8k dev caption queries. The
first table compares 7,000 generated rows with the 7,000 real ones. For each generator and N, in the same run:
- ground truth: full-precision (float32, 2,410-d) inner products, streamed chunk by chunk;
- `full f32`: picscope's exact store over the full vectors (only up to --full-max rows: 9,640 bytes per photo);
- `compact`: the exact store in the library's compact format (coarse float32 scan + int8 re-score of the best
  candidates), searched from a fresh process that opens the store from disk, as `picscope search` would;
- `FAISS flat (coarse codes)`: FAISS IndexFlatIP over the same coarse codes (what the scan reads);
- `ann compact` (with --ann): the HNSW store over the coarse codes, plus the same re-score (one row per --ef).
Reports bytes per photo on disk (rows written; the store's files grow by up to 50% ahead, allocated), p50/p95 per
query, the searching process's peak resident memory (VmHWM), and recall@10 against full precision.

    nice -n 5 python benchmarks/bench_compact.py --sizes 100000 1000000 --ann --generators sampled tiled
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import GENERATORS, STAT_LABELS, describe, real_vectors
from common import machine, percentiles, table

from picscope.encoders import make_encoder
from picscope.encoders.numerics import single_threaded_blas
from picscope.store.ann import AnnOptions
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
if args["rescore"]:
    import dataclasses
    codec = dataclasses.replace(codec, rescore=args["rescore"])
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
    pool = args["rescore"] or (inner.options.rescore if args["kind"] == "ann" else None)  # as the library builds it
    store = compact(inner, ExactStore(folder / "fine", codec.fine_dim, np.int8), codec, lift=args["kind"] == "ann",
                    rescore=pool)
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


def searcher(kind: str, folder: Path, codec_path: Path, queries: Path, k: int, ef: int = 256, rescore: int = 0
             ) -> dict[str, object]:
    arg = json.dumps({"kind": kind, "folder": str(folder), "codec": str(codec_path), "queries": str(queries),
                      "k": k, "ef": ef, "rescore": rescore})
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
          full_max: int, ann: bool, generator: str = "sampled") -> tuple[np.ndarray, float, list[float]]:
    """Write the stores for n generated rows; return the full-precision top-k rows of every query, ingest seconds and
    the density at n (`STAT_LABELS`: the first 200 generated rows' nearest neighbours among all n, and the queries'
    scores)."""
    coarse = ExactStore(folder / "coarse", codec.scan_dim)
    fine = ExactStore(folder / "fine", codec.fine_dim, np.int8)
    full = ExactStore(folder / "full", codec.dim) if n <= full_max else None
    ann_store = None
    if ann:
        from picscope.store.ann import AnnOptions, AnnStore

        ann_store = AnnStore(folder / "ann", coarse_dim(codec, True), AnnOptions(checkpoint_rows=10**9))
    best_s = np.full((len(queries), k + 1), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k + 1), np.int64)
    probes: np.ndarray | None = None
    probe_nn = np.zeros(0, np.float32)
    t_ingest = 0.0
    for start, rows in GENERATORS[generator](base, n):
        ids = np.arange(start + 1, start + len(rows) + 1, dtype=np.int64)
        s = queries @ rows.T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(rows)), s.shape)], axis=1)
        top = np.argpartition(-cand_s, k, axis=1)[:, : k + 1]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
        if probes is None and start + len(rows) > len(base):
            first = max(len(base) - start, 0)
            probes = rows[first : first + 200].copy()
            probe_nn = np.full(len(probes), -np.inf, np.float32)
            probe_at = start + first
        if probes is not None:
            sim = probes @ rows.T
            own = np.arange(probe_at, probe_at + len(probes)) - start  # a probe is not its own neighbour
            inside = (own >= 0) & (own < len(rows))
            sim[np.flatnonzero(inside), own[inside]] = -np.inf
            probe_nn = np.maximum(probe_nn, sim.max(axis=1))
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
    for st in (coarse, fine, full, ann_store):
        if st is not None:
            if hasattr(st, "checkpoint"):
                st.checkpoint()
            st.close()
    order = np.argsort(-best_s, axis=1)
    best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    nn = probe_nn if len(probe_nn) else np.zeros(1, np.float32)
    density = [float(np.percentile(nn, 10)), float(np.median(nn)), float(np.percentile(nn, 90)),
               float((nn > 0.9).mean()), float(np.median(best_s[:, k - 1] - best_s[:, k])),
               float(np.median(best_s[:, 0]))]
    return best_i[:, :k], t_ingest, density


def faiss_flat(folder: Path, codec: VectorCodec, queries: np.ndarray, k: int) -> tuple[list[float], list[list[int]]]:
    """FAISS IndexFlatIP over the same coarse codes, then the same re-score of its best `codec.rescore` from the fine
    rows (FAISS in place of numpy for the scan; in this process, the index built from the store's rows)."""
    import faiss

    store = ExactStore(folder / "coarse", codec.scan_dim)
    fine = ExactStore(folder / "fine", codec.fine_dim, np.int8)
    index = faiss.IndexFlatIP(store.dim)
    index.add(np.asarray(store._vecs))
    row_ids = np.asarray(store._ids)
    fine_rows = np.asarray(fine._vecs)  # written in the same order: row r of both holds id r + 1
    qc, qf, _ = codec.queries(queries)
    times, ids = [], []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        s, rows = index.search(qc[i : i + 1], max(k, codec.rescore))
        with single_threaded_blas():  # as CompactStore re-scores
            scores = s[0] + codec.fine_scores(fine_rows[rows[0]], qf[i])
        best = rows[0][np.argsort(-scores)[:k]]
        times.append(time.perf_counter() - t0)
        ids.append(row_ids[best].tolist())
    store.close()
    fine.close()
    return times, ids


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--generators", nargs="+", default=["sampled"], choices=sorted(GENERATORS))
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--full-max", type=int, default=100_000, help="largest N with a full-f32 store (9.6 KB/photo)")
    ap.add_argument("--ann", action="store_true", help="also build and search the HNSW store (minutes at 1M)")
    ap.add_argument("--ef", type=int, nargs="+", default=[256], help="HNSW efSearch values (one row each)")
    ap.add_argument("--rescore", type=int, nargs="*", default=[], help="extra rows: exact store re-scoring this many")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the stores (default: a temp folder)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the built stores in this folder and reuse them when run again with the same arguments")
    ap.add_argument("--json", type=Path)
    return ap


def main(argv: list[str] | None = None) -> None:
    run(parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    """The whole benchmark for parsed `parser()` arguments (bench_search/bench_stores `--encoder bundled` call it)."""
    enc = make_encoder("bundled")
    if enc.codec_path is None:
        raise SystemExit("the bundled encoder ships no codec")
    codec = VectorCodec.load(enc.codec_path)
    base, captions = real_vectors()
    queries = captions[: args.queries]
    print(f"machine: {machine()}; encoder {enc.name}, codec {codec.name} (format {codec.format}): {codec.scan_dim} "
          f"float32 numbers + {codec.fine_count} fine numbers in {codec.fine_dim} bytes per photo, "
          f"re-score {codec.rescore}\n")
    print(f"{len(base):,} generated rows (without the real rows they start from) vs the {len(base):,} real photos; "
          f"300 real dev captions as queries:")
    print(table(["statistic", "real", *GENERATORS], describe(base, captions)) + "\n", flush=True)
    rows: list[list[object]] = []
    density: list[list[object]] = []
    results: dict[str, object] = {}
    for generator in args.generators:
        for n in args.sizes:
            rows += run_size(args, generator, n, base, queries, codec, enc.codec_path, density, results)
            print(table(["data", "photos", "store", "bytes/photo", "p50 ms", "p95 ms", "peak RSS MB",
                         "recall@10 vs f32", "faster than exact"], rows), flush=True)
    print("\ndensity at N (the first 200 generated rows' nearest neighbours among all N rows; the queries' scores):")
    print(table(["data", "photos", *STAT_LABELS], density))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def run_size(args: argparse.Namespace, generator: str, n: int, base: np.ndarray, queries: np.ndarray,
             codec: VectorCodec, codec_path: Path, density: list[list[object]], results: dict[str, object]
             ) -> list[list[object]]:
    rows: list[list[object]] = []
    if args.tmp is not None:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.tmp)))
        else:  # built once, searched again by later runs (e.g. on a quieter machine)
            folder = args.keep / f"{generator}-{n}-q{len(queries)}-k{args.k}{'-ann' if args.ann else ''}-{codec.name}"
            folder.mkdir(parents=True, exist_ok=True)
        built = folder / "built.npz"
        if built.exists():
            with np.load(built) as f:
                truth, ingest, dens = f["truth"], float(f["ingest"]), [float(v) for v in f["density"]]
            print(f"  reusing the stores in {folder}", file=sys.stderr)
        else:
            truth, ingest, dens = build(n, base, queries, codec, folder, args.k, args.full_max, args.ann, generator)
            if args.keep is not None:
                np.savez(built, truth=truth, ingest=ingest, density=np.array(dens))
        density.append([generator, f"{n:,}", *(round(v, 4) for v in dens)])
        qpath = folder / "queries.npy"
        np.save(qpath, queries)
        per_photo = {name: rows_bytes(folder / name) / n for name in ("coarse", "fine", "full")}
        runs: dict[str, dict[str, object]] = {}
        if n <= args.full_max:
            runs["full f32 (exact store)"] = searcher("full", folder, codec_path, qpath, args.k)
        runs["compact (exact store)"] = searcher("compact", folder, codec_path, qpath, args.k)
        for r in args.rescore:
            runs[f"compact (exact store), re-score {r}"] = searcher("compact", folder, codec_path, qpath, args.k,
                                                                   rescore=r)
        if args.ann:
            for ef in args.ef:
                for r in [0, *args.rescore]:
                    label = f"compact (ann, ef {ef}, re-score {r or AnnOptions().rescore})"
                    runs[label] = searcher("ann", folder, codec_path, qpath, args.k, ef, rescore=r)
        flat_times, flat_ids = faiss_flat(folder, codec, queries, args.k)
        runs["FAISS IndexFlatIP over the coarse codes + the same re-score"] = {"times": flat_times, "ids": flat_ids}
        exact_p50 = percentiles(runs["compact (exact store)"]["times"])[0]  # type: ignore[arg-type]
        for name, r in runs.items():
            p50, p95 = percentiles(r["times"])  # type: ignore[arg-type]
            bpp = per_photo["full"] if name.startswith("full") else per_photo["coarse"] + per_photo["fine"]
            rss = f"{r['rss_mb']:.0f}" if "rss_mb" in r else ""
            rows.append([generator, f"{n:,}", name, f"{bpp:,.0f}", p50 * 1e3, p95 * 1e3, rss,
                         f"{recall(r['ids'], truth, args.k):.3f}",  # type: ignore[arg-type]
                         f"{exact_p50 / p50:.1f}x" if name.startswith("compact (ann") else ""])
        results[f"{generator}-{n}"] = {"ingest_s": ingest, "rows": rows, "density": dens}
    return rows


if __name__ == "__main__":
    main()
