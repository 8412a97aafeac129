"""Indexing throughput on real photos vs a naive baseline (same encoder, same run), and the time to re-index an
unchanged 10k-file folder.

    python benchmarks/bench_index.py --images 1000 [--encoder SPEC]

Photos: the first N Flickr8k images from ../shared/data (skipped with a message if absent).
Naive baseline: for each file, full PIL decode, resize, encode one image at a time (no batching, no threads).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_mb, table

from picscope import Library
from picscope.encoders import default_encoder_spec, make_encoder
from picscope.paths import data_root


def flickr_paths(n: int) -> list[Path]:
    root = data_root() / "flickr8k"
    rows = [json.loads(line) for line in (root / "captions.jsonl").open(encoding="utf-8")]
    return [root / r["image"] for r in rows[:n]]


def naive(paths: list[Path], spec: str, runtime: str) -> float:
    """Full decode, resize, encode one image at a time. `runtime` = "torch" (the model's PyTorch reference, what a
    naive script runs) or "default" (picscope's fastest runtime for the same weights)."""
    from PIL import Image

    from picscope.encoders import towers

    enc = make_encoder(spec)
    tower = towers.efficientnet()
    saved = tower._ort
    if runtime == "torch":
        tower._ort = None
    try:
        t0 = time.perf_counter()
        for p in paths:
            img = Image.open(p).convert("RGB").resize((enc.image_size, enc.image_size))
            enc.embed_images([img])
        return time.perf_counter() - t0
    finally:
        tower._ort = saved


def ours(paths: list[Path], spec: str, tmp: Path) -> tuple[float, float]:
    folder = tmp / "photos"
    folder.mkdir()
    for p in paths:
        (folder / p.name).symlink_to(p)
    with Library.open(tmp / "lib", encoder=spec) as lib:
        _ = lib.encoder.embed_texts(["warm up"])
        t0 = time.perf_counter()
        report = lib.index(folder)
        elapsed = time.perf_counter() - t0
        assert report.added == len(paths), report
        t1 = time.perf_counter()
        again = lib.index(folder)
        assert again.unchanged == len(paths)
        return elapsed, time.perf_counter() - t1


def reindex_10k(spec: str, tmp: Path, n_files: int = 10_000) -> tuple[float, float]:
    """10k files (10 distinct tiny photos, copied): first index (hash reuse), then unchanged re-index."""
    from PIL import Image

    from picscope.demo import sample_images

    folder = tmp / "many"
    uniques = [im.resize((64, 48)) for im, _ in list(sample_images().values())[:10]]
    for i in range(n_files):
        sub = folder / f"d{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        uniques[i % len(uniques)].save(sub / f"p{i:05d}.jpg", quality=80)
    del Image
    with Library.open(tmp / "lib10k", encoder=spec) as lib:
        t0 = time.perf_counter()
        first = lib.index(folder)
        t_first = time.perf_counter() - t0
        assert first.scanned == n_files
        t1 = time.perf_counter()
        again = lib.index(folder)
        t_again = time.perf_counter() - t1
        assert again.unchanged == n_files and again.encoded == 0
    return t_first, t_again


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--skip-10k", action="store_true")
    args = ap.parse_args()
    spec = args.encoder or default_encoder_spec()
    if not (data_root() / "flickr8k" / "captions.jsonl").exists():
        print(f"skipped: Flickr8k not found under {data_root()} (set PICSCOPE_DATA)")
        return
    paths = flickr_paths(args.images)
    print(f"machine: {machine()}; encoder: {spec}; {len(paths)} Flickr8k photos\n")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        t_ours, t_reindex = ours(paths, spec, tmp)
        t_naive = naive(paths, spec, "torch")
        t_naive_rt = naive(paths, spec, "default")
        rows = [
            ["naive: full decode, resize, encode 1 by 1 (PyTorch)", len(paths) / t_naive, t_naive, "1.00x"],
            [
                "naive loop on picscope's runtime (ONNX Runtime)",
                len(paths) / t_naive_rt,
                t_naive_rt,
                f"{t_naive / t_naive_rt:.2f}x",
            ],
            [
                "picscope index (threads, draft decode, batches, ORT)",
                len(paths) / t_ours,
                t_ours,
                f"{t_naive / t_ours:.2f}x",
            ],
        ]
        print(table(["indexer", "images/s", "seconds", "speed-up"], rows))
        print(f"\nre-index of the same {len(paths)} unchanged files: {t_reindex:.2f} s")
        if not args.skip_10k:
            t_first, t_again = reindex_10k(spec, tmp)
            print(
                f"10,000-file folder: first index {t_first:.1f} s (10 distinct photos: hash reuse), "
                f"unchanged re-index {t_again:.2f} s"
            )
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
