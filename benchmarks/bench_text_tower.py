"""MiniLM text tower: picscope's torch-free runtimes against sentence-transformers, same texts, same run.

    python benchmarks/bench_text_tower.py [--captions 2000]

Batch throughput (texts/s, batches of 64 sorted by length) on Flickr8k captions and on the 1000 label prompts of
the `labels` encoder, single-query latency (p50 of 30), and the largest difference from sentence-transformers.
Needs sentence-transformers (the `train` extra) for the reference rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, percentiles, table

from picscope.encoders import towers
from picscope.paths import data_root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=2000)
    args = ap.parse_args()
    rows_json = (data_root() / "flickr8k" / "captions.jsonl").open(encoding="utf-8")
    captions = [c for line in rows_json for c in json.loads(line)["captions"]][: args.captions]
    prompts = [f"a photo of a {c}" for c in towers.imagenet_classes()]
    tower = towers.minilm()
    runtimes = {"picscope numpy (queries)": tower.numpy.encode, "picscope ONNX Runtime (batches)": tower.encode_onnx}
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(tower.folder), device="cpu")
        runtimes["sentence-transformers (torch)"] = lambda t: st.encode(
            list(t), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    except ImportError:
        print("sentence-transformers is not installed: no reference rows")
    ref = {}
    rows = []
    for name, fn in runtimes.items():
        fn(["warm up"] * 70)
        cells: list[object] = [name]
        for label, texts in (("captions", captions), ("prompts", prompts)):
            t0 = time.perf_counter()
            out = np.asarray(fn(texts), np.float32)
            cells.append(len(texts) / (time.perf_counter() - t0))
            ref.setdefault(label, {})[name] = out
        lat = []
        for i in range(30):
            t0 = time.perf_counter()
            fn([f"a dog number {i} running on the beach"])
            lat.append(time.perf_counter() - t0)
        cells.append(percentiles(lat)[0] * 1000)
        rows.append(cells)
    st_name = "sentence-transformers (torch)"
    for cells in rows:
        name = str(cells[0])
        diff = max(float(np.abs(ref[k][name] - ref[k][st_name]).max()) for k in ref) if st_name in runtimes else 0.0
        cells.append(f"{diff:.1e}")
    print(f"{len(captions)} captions, {len(prompts)} prompts; {machine()}")
    print(table(["runtime", "captions texts/s", "prompts texts/s", "1 query p50 ms", "max |Δ| vs s-t"], rows))


if __name__ == "__main__":
    main()
