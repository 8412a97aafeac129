"""What a score threshold keeps, raw vs calibrated: "a dog" over Flickr8k dev (1,000 photos, the bundled encoder).

A photo counts as a dog photo when at least 3 of its 5 captions say "dog". The dev photos are symlinked into a
folder and indexed once into LIBRARY (default /tmp/picscope-relevance/lib).

    python benchmarks/bench_relevance.py [--library DIR] [--query "a dog"] [--word dog]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from picscope import Library
from picscope.training.data import flickr8k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", type=Path, default=Path("/tmp/picscope-relevance/lib"))
    ap.add_argument("--query", default="a dog")
    ap.add_argument("--word", default="dog", help="a photo is relevant when 3 of its 5 captions contain this word")
    args = ap.parse_args()
    data = flickr8k("dev")
    folder = args.library.parent / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for p in data.paths:
        if not (folder / p.name).exists():
            os.symlink(p, folder / p.name)
    word = f" {args.word}"
    relevant = {p.name for p, caps in zip(data.paths, data.captions, strict=True)
                if sum(word in " " + c.lower() for c in caps) >= 3}
    t0 = time.perf_counter()
    with Library.open(args.library, encoder="bundled") as lib:
        if lib.status().files < len(data.paths):
            lib.index(folder)
        print(f"library ready in {time.perf_counter() - t0:.0f} s; {len(relevant)} dev photos with {args.word!r} "
              f"in 3+ of 5 captions; query {args.query!r}")
        print("\n| threshold | results | relevant among them | share of all relevant |\n|---|---|---|---|")
        for label, kw in [("--min-score 0.45", {"min_score": 0.45}), ("--min-score 0.3", {"min_score": 0.3}),
                          ("--min-relevance 0.5", {"min_relevance": 0.5}),
                          ("--min-relevance 0.9", {"min_relevance": 0.9})]:
            hits = lib.search(args.query, len(data.paths), **kw)  # type: ignore[arg-type]
            good = sum(Path(h.path).name in relevant for h in hits)
            print(f"| `{label}` | {len(hits)} | {good} | {good / max(len(relevant), 1):.0%} |")


if __name__ == "__main__":
    main()
