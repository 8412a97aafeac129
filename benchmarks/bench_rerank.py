"""The default search's verifier re-rank on Flickr8k dev: cell formats, pool size and fusion weight, then the product.

    python benchmarks/bench_rerank.py tune [--pools 10 20 30 50] [--weights 0.25 0.5 0.75 1 1.25 1.5]
    python benchmarks/bench_rerank.py library [--limit 4000] [--library DIR]
    python benchmarks/bench_rerank.py index-cost [--photos 300] [--rounds 2]

`tune` works from the tower features the verifier was trained from (cached in `$PICSCOPE_CACHE/features`; built
by `picscope train-verifier` or computed here on first use): for each of the 1,000 dev photos the verifier's cells
kept as float32, float16, int8 with a scale per cell vector (what `picscope.store.cells` stores) and int8 with one
scale per photo; for each dev caption the `bundled` encoder's top max(pools) photos. The pool size and weight are
chosen on the 5th captions only, and every row is reported on captions 1–4, each with the re-rank ceiling (the gold
photo in the pool). `library` indexes the 1,000 dev photos into a library (cells stored at index time), then runs
`Library.search` for captions 1–4 with the re-rank off and on: R@1/5/10 through the real query path and the
per-query latency of the re-rank step. `index-cost` times indexing the same photos with and without cells.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, percentiles, table


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-6)


def _recall(enc: np.ndarray, ver: np.ndarray, hit: np.ndarray, weight: float) -> dict[str, float]:
    s = _z(enc) + weight * _z(ver) if weight else enc
    rank = (s > (s * hit).sum(1, keepdims=True)).sum(1)
    has = hit.any(1)
    return {f"R@{k}": float(100 * np.mean(has & (rank < k))) for k in (1, 5, 10)}


def _dev_features() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(dev grids (1000, 49, 1280), encoder image vectors, encoder caption vectors, token states per caption)."""
    from picscope.encoders import make_encoder
    from picscope.training.data import flickr8k
    from picscope.training.features import image_features
    from picscope.training.grid import image_grids, token_states
    from picscope.training.verifier_data import sentence_vectors

    tr, dv = flickr8k("train"), flickr8k("dev")
    captions = [c for cs in tr.captions + dv.captions for c in cs]
    grids = image_grids(tr.paths + dv.paths)[len(tr.paths):]
    tok = token_states(captions)
    first = 5 * len(tr.paths)
    offsets = tok["offsets"]
    states = [tok["states"][offsets[i] : offsets[i + 1]] for i in range(first, len(captions))]
    model = make_encoder("bundled").model  # type: ignore[attr-defined]
    f = image_features(dv.paths)
    img = model.image_vectors(f["pooled"], f["logits"], f["pooled_flip"], f["logits_flip"]) \
        if model.mem.flip_tta else model.image_vectors(f["pooled"], f["logits"], None, None)
    sent = sentence_vectors(tok["states"][offsets[first]:], offsets[first:] - offsets[first])
    words = np.array([len(c.split()) for c in captions[first:]])
    txt = model.text_vectors(sent, words)
    return np.asarray(grids), np.asarray(img, np.float32), np.asarray(txt, np.float32), states


def _formats(cells: np.ndarray) -> dict[str, np.ndarray]:
    from picscope.store.cells import dequantize, quantize

    n, rows, dim = cells.shape
    per_photo = np.abs(cells).reshape(n, -1).max(1)[:, None, None] / 127.0
    return {
        "float32": cells,
        "float16": cells.astype(np.float16).astype(np.float32),
        "int8, scale per cell vector (stored)": dequantize(quantize(cells), rows, dim),
        "int8, scale per photo": np.clip(np.rint(cells / per_photo), -127, 127) * per_photo,
    }


def tune(args: argparse.Namespace) -> None:
    from picscope.models.verifier import load_verifier
    from picscope.store.cells import row_bytes

    ver = load_verifier()
    grids, img, txt, states = _dev_features()
    cells = np.concatenate([ver.cells(grids[s : s + 100]) for s in range(0, len(grids), 100)])
    sizes = {"float32": 4 * cells[0].size, "float16": 2 * cells[0].size,
             "int8, scale per cell vector (stored)": row_bytes(*cells.shape[1:]),
             "int8, scale per photo": cells[0].size + 4}
    pool = max(args.pools)
    sim = txt @ img.T
    if args.querybank:  # the order a search hands the re-rank: score minus each photo's query-bank normaliser
        from picscope.encoders import make_encoder

        sim = sim - make_encoder("bundled").querybank.normalizers(img)[None, :]  # type: ignore[attr-defined]
    cand = np.argsort(-sim, axis=1, kind="stable")[:, :pool]
    enc = np.take_along_axis(sim, cand, 1)
    gold = np.arange(len(txt)) // 5
    hit = cand == gold[:, None]
    feats = [ver.tokens(s) for s in states]
    tune_rows, report_rows = np.arange(len(txt)) % 5 == 4, np.arange(len(txt)) % 5 != 4
    out: list[list[object]] = []
    errors: list[list[object]] = []
    scores: dict[str, np.ndarray] = {}
    for name, variant in _formats(cells).items():
        if args.formats and not any(name.startswith(f) for f in args.formats):
            continue
        vs = np.stack([ver.score(variant[cand[i]], feats[i]) for i in range(len(txt))])
        best = max(((p, w) for p in args.pools for w in args.weights),
                   key=lambda pw: _recall(enc[tune_rows, : pw[0]], vs[tune_rows, : pw[0]],
                                          hit[tune_rows, : pw[0]], pw[1])["R@1"])
        for p, w in [best] + [(p, best[1]) for p in args.pools if p != best[0]]:
            r = _recall(enc[report_rows, :p], vs[report_rows, :p], hit[report_rows, :p], w)
            t = _recall(enc[tune_rows, :p], vs[tune_rows, :p], hit[tune_rows, :p], w)
            ceiling = 100 * hit[report_rows, :p].any(1).mean()
            out.append([name, sizes[name], p, w, t["R@1"], r["R@1"], r["R@5"], r["R@10"], ceiling,
                        "chosen" if (p, w) == best else ""])
        ref = scores.setdefault("float32", vs)
        errors.append([name, float(np.abs(vs - ref).max()), float(np.abs(vs - ref).mean()),
                       100 * float(np.mean(vs[:, :20].argmax(1) == ref[:, :20].argmax(1)))])
    print(machine())
    for label, rows in (("captions 1–4", report_rows), ("5th captions (tuning)", tune_rows)):
        base = _recall(enc[rows], enc[rows], hit[rows], 0.0)
        print(f"encoder alone, {label}: R@1 {base['R@1']:.1f}  R@5 {base['R@5']:.1f}  R@10 {base['R@10']:.1f}")
    print(table(["cells", "bytes/photo", "pool", "weight", "R@1 (5th, tuning)", "R@1", "R@5", "R@10",
                 "ceiling R@pool", ""], out))
    print(table(["cells", "max |Δ score| vs float32", "mean |Δ score|", "same top-1 of 20 (%)"], errors))


def library(args: argparse.Namespace) -> None:
    from picscope import Library
    from picscope.training.data import flickr8k

    dv = flickr8k("dev")
    folder = args.library or Path(tempfile.mkdtemp(prefix="rerank-lib-"))
    with Library.open(folder, encoder="bundled") as lib:
        t0 = time.perf_counter()
        report = lib.index(args.photos or _dev_folder(dv.paths))
        print(f"indexed {report.encoded} photos in {time.perf_counter() - t0:.1f} s", flush=True)
        queries = [(c, i) for i, cs in enumerate(dv.captions) for j, c in enumerate(cs) if j != 4][: args.limit]
        id_of = {Path(r.path).name: r.id for r in lib.catalog.all("ok")}
        gold_ids = [id_of[dv.paths[i].name] for _, i in queries]
        rows = []
        for on in (False, True):
            lib.config.search.rerank = on
            ranks, secs, steps = [], [], []
            for (text, _), gid in zip(queries, gold_ids, strict=True):
                t = time.perf_counter()
                hits, info = lib.text_search(text, k=10)
                secs.append(time.perf_counter() - t)
                steps.append(info.seconds if info is not None else 0.0)
                ids = [h.id for h in hits]
                ranks.append(ids.index(gid) if gid in ids else 99)
            r = np.array(ranks)
            p50, p95 = percentiles(secs)
            s50, s95 = percentiles(steps)
            rows.append(["on" if on else "off", len(r), 100 * np.mean(r < 1), 100 * np.mean(r < 5),
                         100 * np.mean(r < 10), 1000 * p50, 1000 * p95, 1000 * s50, 1000 * s95, 1000 * min(steps)])
        print(machine())
        print(table(["re-rank", "queries", "R@1", "R@5", "R@10", "search ms p50", "p95", "re-rank step ms p50",
                     "p95", "min"], rows))


def index_cost(args: argparse.Namespace) -> None:
    """Index the same dev photos with the re-rank off (no cells) and on (cells from the encoder's pass), alternately."""
    from picscope import Library
    from picscope.training.data import flickr8k

    folder = _dev_folder(flickr8k("dev").paths[: args.photos])
    rows = []
    for rnd in range(args.rounds):
        for on in (False, True):
            path = Path(tempfile.mkdtemp(prefix="rerank-cost-")) / "lib"
            with Library.open(path, encoder="bundled") as lib:
                lib.config.search.rerank = on
                t0 = time.perf_counter()
                report = lib.index(folder)
                secs = time.perf_counter() - t0
                cells = lib.photo_cells.store if on else None
                rows.append([rnd, "on" if on else "off", report.encoded, secs, 1000 * secs / report.encoded,
                             cells.bytes_per_photo if cells is not None else 0])
    print(machine())
    print(table(["round", "re-rank (cells kept)", "photos", "index s", "ms/photo", "cell bytes/photo"], rows))


def _dev_folder(paths: list[Path]) -> Path:
    """A folder of symlinks to the dev photos (the shared folder holds train photos too)."""
    folder = Path(tempfile.mkdtemp(prefix="flickr8k-dev-"))
    for p in paths:
        (folder / p.name).symlink_to(p)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    t = sub.add_parser("tune")
    t.add_argument("--pools", type=int, nargs="+", default=[10, 20, 30, 50])
    t.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    t.add_argument("--querybank", action=argparse.BooleanOptionalAction, default=True,
                   help="candidates and encoder scores as a search gives them: minus the query-bank normalisers")
    t.add_argument("--formats", nargs="*", default=[], help="only these cell formats (name prefixes: float32 int8 …)")
    lb = sub.add_parser("library")
    lb.add_argument("--limit", type=int, default=4000)
    lb.add_argument("--library", type=Path)
    lb.add_argument("--photos", type=Path, help="the folder of dev photos the --library was indexed from")
    ic = sub.add_parser("index-cost")
    ic.add_argument("--photos", type=int, default=300)
    ic.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    {"tune": tune, "library": library, "index-cost": index_cost}[args.part](args)


if __name__ == "__main__":
    main()
