"""The compact codec on real vectors: Flickr8k dev text→image recall with full float32 vectors and with codes, and
top-10 agreement with full precision for caption queries and photo queries over all 7,000 shared photos.

    python benchmarks/eval_codec.py [CODEC.npz ...]     # default: the bundled encoder's shipped codec
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import real_vectors
from common import machine, table

from picscope.encoders import make_encoder
from picscope.store.compact import VectorCodec
from picscope.training.codec import _recall, encoder_vectors, score_full, top_agreement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("codecs", type=Path, nargs="*")
    args = ap.parse_args()
    paths = args.codecs or [make_encoder("bundled").codec_path]
    dev_images, dev_texts, gold = encoder_vectors("bundled", "dev")
    photos, _ = real_vectors()
    full = dev_texts @ dev_images.T
    base = _recall(full, gold)
    rows: list[list[object]] = [["full float32", 9640, base["r1"], base["r5"], base["r10"], 1.0, 1.0]]
    t2i_full, i2i_full = dev_texts @ photos.T, dev_images @ photos.T
    for path in paths:
        codec = VectorCodec.load(path)
        r = _recall(score_full(codec, dev_texts, dev_images), gold)
        rows.append([f"{codec.name} (format {codec.format}, re-score {codec.rescore})", codec.bytes_per_vector,
                     r["r1"], r["r5"], r["r10"],
                     round(top_agreement(t2i_full, score_full(codec, dev_texts, photos)), 4),
                     round(top_agreement(i2i_full, score_full(codec, dev_images, photos)), 4)])
    print(f"machine: {machine()}; Flickr8k dev: {len(dev_images):,} photos, {len(dev_texts):,} captions")
    print(table(["vectors", "bytes/photo", "T→I R@1", "R@5", "R@10",
                 f"caption top-10 agreement ({len(photos):,} photos)", "photo→photo top-10 agreement"], rows))


if __name__ == "__main__":
    main()
