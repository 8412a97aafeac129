"""Does a feedback round keep what the person asked for? Attribute queries in a session on Flickr8k dev.

    python benchmarks/bench_session_attributes.py                       # 1,000-photo gallery, all strategies
    python benchmarks/bench_session_attributes.py --gallery 300 --strategies none rocchio caption

For each query (say "a dog running in the snow"), round 0 shows 10 photos; the photos whose human captions show
the wanted thing (a dog and snow) are marked relevant (with `--negatives`, the others not relevant); round 1
shows the next 10 unseen photos. The table gives, per strategy, the share of photos with the attribute ("snow",
by their five human captions) on page 1 and on page 2. `none` (the next page of the original ranking) is the
baseline of the same run. Captions come from the offline `bundled` captioner (the `caption`, `rewrite` and
`combined` strategies); `rewrite`/`combined` also call the bundled LLM.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import cfg_encoder, dataset
from common import machine, table

from picscope.paths import data_root

CASES = [  # request, words a photo's captions need to be marked relevant, the attribute counted
    ("a dog running in the snow", ("dog", "snow"), "snow"),
    ("a child playing in the water", ("child|boy|girl|kid", "water"), "water"),
    ("a man riding a bike", ("man", "bike|bicycl|cycl"), "bike|bicycl|cycl"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery", type=int, default=1000, help="first N Flickr8k dev photos")
    ap.add_argument("--strategies", nargs="+", default=["none", "rocchio", "rocchio-classic", "caption"])
    ap.add_argument("--negatives", action="store_true", help="also mark the other photos of page 1 not relevant")
    args = ap.parse_args()
    if not (data_root() / "flickr8k" / "captions.jsonl").exists():
        print(f"skip: Flickr8k not found under {data_root()} (set PICSCOPE_DATA)")
        return 0
    from picscope.eval.dataset import load_dataset
    from picscope.eval.runner import _Index, library_for
    from picscope.models import make_vision_model
    from picscope.sessions.session import Session
    from picscope.training.data import flickr8k

    print(machine())
    ds = load_dataset(dataset("t2i", limit=None if args.gallery >= 1000 else args.gallery))
    lib = library_for(ds, cfg_encoder())
    idx = _Index(lib, ds)
    dev = flickr8k("dev")
    captions = {p.name: " ".join(c).lower() for p, c in zip(dev.paths, dev.captions, strict=True)}

    def has(i: int, pattern: str) -> bool:
        return bool(re.search(rf"\b(?:{pattern})", captions[os.path.basename(idx.key_of[i])]))

    vision = make_vision_model("bundled")
    rows = []
    for strategy in args.strategies:
        for request, wanted, attribute in CASES:
            t0 = time.perf_counter()
            s = Session.create(lib, request, strategy=strategy, page_size=10, vision=vision)
            first = [x.id for x in s.page()]
            relevant = [i for i in first if all(has(i, w) for w in wanted)]
            if relevant:
                s.mark(relevant, True)
            others = [i for i in first if i not in relevant]
            if args.negatives and others:
                s.mark(others, False)
            second = [x.id for x in s.next_round()]
            p1 = sum(has(i, attribute) for i in first) / len(first)
            p2 = sum(has(i, attribute) for i in second) / max(len(second), 1)
            rows.append([strategy, request, f"{len(relevant)}/10", f"{p1:.1f}", f"{p2:.1f}",
                         "yes" if p2 >= p1 else "no", f"{time.perf_counter() - t0:.1f}"])
    print(f"\nFlickr8k dev, first {min(args.gallery, 1000)} photos; page 1 marked by the human captions"
          f"{' (others marked not relevant)' if args.negatives else ''}")
    print(table(["strategy", "request", "marked", "attribute share p1", "p2", "p2 ≥ p1", "s"], rows))
    lib.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
