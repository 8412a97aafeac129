"""Encoder-only retrieval and embedding feedback on the shared data, through the evaluation harness.

    python benchmarks/eval_shared.py [--encoders bundled labels] [--out reports/shared]

Datasets: Flickr8k dev text→image (1,000 images, 5,000 captions) and "MSR-VTT 1k-A frames (subset)" (238 clips,
1,298 frames, all frames of a clip relevant). Feedback rows: 10 images per page, 3 rounds after the first page,
recall over all images shown so far; `none` shows the next unseen page of the original ranking.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table

from picscope.eval.builders import build_flickr8k, build_msrvtt_frames
from picscope.eval.report import write_report
from picscope.eval.runner import RunConfig, run
from picscope.paths import cache_dir, data_root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", nargs="+", default=["bundled", "labels"])
    ap.add_argument("--out", type=Path, default=Path("reports/shared"))
    ap.add_argument("--users", nargs="+", default=["oracle", "noisy", "budgeted"])
    args = ap.parse_args()
    if not (data_root() / "flickr8k").exists():
        print(f"skipped: shared data not found under {data_root()}")
        return
    ds_root = cache_dir() / "datasets"
    f8k = build_flickr8k(ds_root / "flickr8k-dev", "dev")
    msr = build_msrvtt_frames(ds_root / "msrvtt-frames")
    print(f"machine: {machine()}\n")
    rows = []
    for enc in args.encoders:
        for name, ds in (("Flickr8k dev", f8k), ("MSR-VTT 1k-A frames (subset)", msr)):
            res = run(ds, RunConfig(encoder=enc))
            write_report(res, args.out / f"{ds.name}-{enc}")
            m = res.metrics
            rows.append([name, enc, m["queries"], 100 * m["recall@1"], 100 * m["recall@5"], 100 * m["recall@10"],
                         100 * m["hits@10"], 100 * m["map@10"], m["median_rank"], 1000 * m["seconds_per_query"]])
    print(table(["dataset", "encoder", "queries", "R@1", "R@5", "R@10", "hits@10", "mAP@10", "med rank",
                 "ms/query"], rows))
    fb_rows = []
    enc = args.encoders[0]
    for name, ds in (("MSR-VTT frames", msr), ("Flickr8k dev", f8k)):
        for user in args.users:
            for strategy in ("none", "rocchio"):
                limit = None if ds == msr else 1000
                res = run(ds, RunConfig(encoder=enc, feedback=strategy, user=user, rounds=3, page_size=10, limit=limit))
                write_report(res, args.out / f"{ds.name}-{enc}-{strategy}-{user}")
                r = res.metrics["rounds"]
                fb_rows.append([name, user, strategy, res.metrics["queries"], *(100 * x["recall"] for x in r), ""])
    # relative gain of rocchio over none after 3 rounds, per (dataset, user)
    for i in range(0, len(fb_rows), 2):
        base, roc = fb_rows[i], fb_rows[i + 1]
        roc[-1] = f"{100 * (roc[-2] / base[-2] - 1):+.1f}%"
        base[-1] = ""
    print()
    print(table(["dataset", "user", "feedback", "queries", "round 0", "round 1", "round 2", "round 3",
                 "gain vs none"], fb_rows))


if __name__ == "__main__":
    main()
