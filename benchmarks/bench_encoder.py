"""Encoder speed: images/s (batched, after decode) and single text-query latency, for `bundled` and `labels`,
with the image tower on ONNX Runtime and on PyTorch (same weights) in the same run.

    python benchmarks/bench_encoder.py --images 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, percentiles, table

from picscope.demo import sample_images
from picscope.encoders import make_encoder, towers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    base = [im.convert("RGB").resize((224, 224)) for im, _ in sample_images().values()]
    images = [base[i % len(base)] for i in range(args.images)]
    queries = [f"a photo of a dog number {i} running on grass" for i in range(50)]
    tower = towers.efficientnet()
    rows = []
    for spec in ("bundled", "labels"):
        enc = make_encoder(spec)
        enc.embed_images(images[:8])
        enc.embed_texts(["warm up"])
        for runtime in ("onnxruntime", "torch"):
            saved = tower._ort
            if runtime == "torch":
                tower._ort = None
            elif saved is None:
                continue
            try:
                t0 = time.perf_counter()
                for s in range(0, len(images), args.batch):
                    enc.embed_images(images[s : s + args.batch])
                ips = len(images) / (time.perf_counter() - t0)
            finally:
                tower._ort = saved
            lat = []
            for q in queries:
                t1 = time.perf_counter()
                enc.embed_texts([q])
                lat.append(time.perf_counter() - t1)
            p50, p95 = percentiles(lat)
            rows.append([spec, runtime, ips, p50 * 1e3, p95 * 1e3, 1 / p50])
    print(f"machine: {machine()}; {len(images)} images of 224x224 (decode excluded), batch {args.batch}\n")
    print(table(["encoder", "image tower", "images/s", "text p50 ms", "text p95 ms", "text queries/s"], rows))


if __name__ == "__main__":
    main()
