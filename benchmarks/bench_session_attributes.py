"""Does a feedback round keep what the person asked for? Attribute requests in a session on Flickr8k dev.

    python benchmarks/bench_session_attributes.py                       # 1,000-photo gallery, all strategies
    python benchmarks/bench_session_attributes.py --negatives            # also mark page 1's other photos
    python benchmarks/bench_session_attributes.py --gallery 300 --strategies none rocchio caption

The cases, the marking and the measure are `picscope.eval.attributes` (a dog running in the snow: page 1's photos
with a dog and snow in their human captions marked relevant; the share of snow photos on page 1 and page 2).
Sessions re-rank each round against the request (`picscope.feedback.check`) by default; a strategy name with
`-nocheck` runs without it. `none` (the next page of the original ranking) is the baseline of the same run.
Captions come from the offline `bundled` captioner (`caption`, `rewrite`, `combined`); `rewrite`/`combined` rewrite
the request with the rules denoiser (no LLM call) unless the library's reasoner settings choose an LLM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import cfg_encoder, dataset
from common import machine, table

from picscope.paths import data_root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery", type=int, default=1000, help="first N Flickr8k dev photos")
    ap.add_argument("--strategies", nargs="+",
                    default=["none", "rocchio-nocheck", "rocchio", "rocchio-classic", "caption"])
    ap.add_argument("--negatives", action="store_true", help="also mark the other photos of page 1 not relevant")
    args = ap.parse_args()
    if not (data_root() / "flickr8k" / "captions.jsonl").exists():
        print(f"skip: Flickr8k not found under {data_root()} (set PICSCOPE_DATA)")
        return 0
    from picscope.eval.attributes import CASES, attribute_round
    from picscope.eval.dataset import load_dataset
    from picscope.eval.runner import _Index, library_for
    from picscope.models import make_vision_model
    from picscope.training.data import flickr8k

    print(machine())
    ds = load_dataset(dataset("t2i", limit=None if args.gallery >= 1000 else args.gallery))
    lib = library_for(ds, cfg_encoder())
    idx = _Index(lib, ds)
    dev = flickr8k("dev")
    human = {p.name: " ".join(c).lower() for p, c in zip(dev.paths, dev.captions, strict=True)}

    def captions_of(i: int) -> str:
        return human[os.path.basename(idx.key_of[i])]

    vision = make_vision_model("bundled")
    rows = []
    for name in args.strategies:
        strategy = name.removesuffix("-nocheck")
        for case in CASES:
            t0 = time.perf_counter()
            r = attribute_round(lib, captions_of, case, strategy, negatives=args.negatives, vision=vision,
                                check=not name.endswith("-nocheck"))
            rows.append([name, case.request, f"{r.marked}/10", f"{r.page1:.1f}", f"{r.page2:.1f}",
                         "yes" if r.kept else "no", f"{time.perf_counter() - t0:.1f}"])
    print(f"\nFlickr8k dev, first {min(args.gallery, 1000)} photos; page 1 marked by the human captions"
          f"{' (others marked not relevant)' if args.negatives else ''}")
    print(table(["strategy", "request", "marked", "attribute share p1", "p2", "p2 ≥ p1", "s"], rows))
    lib.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
