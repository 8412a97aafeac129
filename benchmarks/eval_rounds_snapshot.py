"""Per-query, per-round recall of the evaluation harness's simulated feedback sessions, as JSON, to compare two
checkouts byte for byte (the round loop must not change the figures).

    PYTHONPATH=OLD/src python benchmarks/eval_rounds_snapshot.py before.json
    PYTHONPATH=NEW/src python benchmarks/eval_rounds_snapshot.py after.json && cmp before.json after.json

The dataset: the scikit-image sample photos, each with a mirrored and a byte-identical copy (copies score exactly
the same, the case where the page depends on how many results are ranked), written once to `--dataset`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from picscope.demo import sample_images
from picscope.eval.dataset import Query, write_dataset
from picscope.eval.runner import RunConfig, run


def dataset(root: Path) -> Path:
    if (root / "queries.jsonl").exists():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    queries = []
    for name, (img, desc) in sample_images().items():
        stem = Path(name).stem
        img.save(root / "images" / f"{stem}.png")
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "images" / f"{stem}-mirror.png")
        img.save(root / "images" / f"{stem}-copy.png")
        queries.append(Query(stem, desc, (f"images/{stem}.png", f"images/{stem}-mirror.png")))
    queries.append(Query("composed", "but in black and white", ("images/cat-mirror.png",), reference="images/cat.png"))
    return write_dataset(root, queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--dataset", type=Path, default=Path("/tmp/picscope-eval-rounds"))
    ap.add_argument("--encoder", default="labels")
    args = ap.parse_args()
    root = dataset(args.dataset)
    out = {}
    for feedback in ("none", "rocchio", "rocchio-classic"):
        for page_size in (2, 3, 5):
            cfg = RunConfig(encoder=args.encoder, feedback=feedback, rounds=3, page_size=page_size)
            out[f"{feedback}-{page_size}"] = [row["rounds"] for row in run(root, cfg).per_query]
    args.out.write_text(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
