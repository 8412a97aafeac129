"""The three-stage pipeline against encoder-only retrieval, per stage, with its cost; and weight tuning on train.

    python benchmarks/bench_pipeline.py                               # all parts, default sizes
    python benchmarks/bench_pipeline.py --parts t2i --t2i-limit 1000 --llm-limit 40
    python benchmarks/bench_pipeline.py --parts tune                  # fusion weights on Flickr8k *train*

Parts (each through the evaluation harness, `picscope.eval.runner.run`, on datasets built from ../shared/data):
- `t2i`: Flickr8k dev text→image (1,000 images; queries = captions 1-4 of each image, the 5th is for tuning):
  the encoder alone (no query bank; the ΔR@1 baseline), the encoder with the query bank, the default search
  (bank + verifier re-rank, with its pool's ceiling), then stage 1, stages 1-2, stages 1-3 with
  the `rules` reasoner and `socratic-lite` vision on `--t2i-limit` queries, and the offline default models
  (bundled LLM reasoner, `socratic` vision) on a `--llm-limit` subsample.
- `cir`: templated composed triplets from Flickr8k dev (reference + templated change → target).
- `dialog`: caption-as-dialogue on Flickr8k dev: cumulative Hits@10 per round (round r adds the r-th caption).
- `tune`: stage 1's `anchor_weight` (0 / 0.5 / 1), then the stage-2/3 weights and α, chosen on the held-out 5th dev
  captions by a grid over signals gathered once.
Every row reports model calls, tokens and seconds per query (p50/p95, warm: one process for all queries). The
t2i baseline is the encoder alone on the same queries; the cir and dialog baselines are the encoder rows of the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table

from picscope.config import PipelineConfig
from picscope.eval.builders import build_caption_dialog, build_flickr8k, build_templated_cir
from picscope.eval.runner import RunConfig, run
from picscope.paths import cache_dir, data_root

FAST = {"reasoner": "rules"}
FAST_VISION = "socratic-lite"


def dataset(kind: str, split: str = "dev", limit: int | None = None) -> Path:
    root = cache_dir() / "datasets" / f"bench-{kind}-{split}{'' if limit is None else f'-{limit}'}"
    if not (root / "queries.jsonl").exists():
        builder = {"t2i": build_flickr8k, "cir": build_templated_cir, "dialog": build_caption_dialog}[kind]
        builder(root, split, limit)
    return root


def row(name: str, m: dict[str, Any], base: dict[str, Any] | None) -> list[Any]:
    d = "" if base is None else f"{100 * (m['recall@1'] - base['recall@1']):+.1f}"
    return [name, m["queries"], 100 * m["recall@1"], 100 * m["recall@5"], 100 * m["recall@10"], d,
            m.get("model_calls_per_query", 0.0), m.get("tokens_per_query", 0.0), m.get("seconds_p50", 0.0),
            m.get("seconds_p95", 0.0)]


HEAD = ["configuration", "queries", "R@1", "R@5", "R@10", "ΔR@1", "calls/q", "tokens/q", "s p50", "s p95"]


def split_ids(ds: Path) -> tuple[frozenset[str], frozenset[str]]:
    """Flickr8k dev queries: the 5th caption of each image tunes the weights; captions 1-4 are reported."""
    ids = [json.loads(line)["id"] for line in (ds / "queries.jsonl").read_text().splitlines() if line.strip()]
    tune = frozenset(i for i in ids if i.endswith("#4"))
    return tune, frozenset(ids) - tune


def evaluate(ds: Path, limit: int | None, stages: tuple[int, ...] | None, *, llm: str | None = None,
             vision: str | None = None, cfg: PipelineConfig | None = None, seed: int = 0,
             ids: frozenset[str] | None = None) -> dict[str, Any]:
    if ids is None and ds.name.startswith("bench-t2i"):
        ids = split_ids(ds)[1]
    rc = RunConfig(pipeline="encoder" if stages is None else "imagescope", stages=stages, limit=limit, seed=seed,
                   llm=llm, vision=vision, pipeline_config=cfg, query_ids=ids)
    t0 = time.perf_counter()
    m = run(ds, rc).metrics
    m["wall"] = time.perf_counter() - t0
    print(f"  {ds.name} {rc.pipeline} stages={stages} llm={'rules' if cfg and cfg.reasoner == 'rules' else 'llm'}: "
          f"{m['queries']} queries, R@1 {100 * m['recall@1']:.1f}, {m['wall']:.0f} s", file=sys.stderr, flush=True)
    return m


def search_rows(ds_path: Path, limit: int | None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The same queries as `evaluate` picks, ranked by the product's search without the query bank (the encoder
    alone) and by the default search (query bank + verifier re-rank), with the pool's ceiling (the wanted photo
    among the re-rank's candidates)."""
    from picscope.eval.dataset import load_dataset
    from picscope.eval.runner import _Index, _select, library_for

    ds = load_dataset(ds_path)
    ids = split_ids(ds_path)[1]
    queries = _select([q for q in ds.queries if q.id in ids], limit, seed)
    lib = library_for(ds, cfg_encoder())
    idx = _Index(lib, ds)
    settings = lib.rerank_for()
    pool = settings.pool if settings is not None else 50
    ranks: dict[str, list[list[bool]]] = {"plain": [], "default": [], "ceiling": []}
    secs = []
    for q in queries:
        rel = set(q.relevant)
        v = lib.embed_texts([q.text])[0]
        plain = [idx.key_of[h.id] in rel for h in lib.search_vector(v, 10, querybank=False)]
        banked = [idx.key_of[h.id] in rel for h in lib.search_vector(v, pool, querybank=True)]
        t0 = time.perf_counter()
        default = [idx.key_of[h.id] in rel for h in lib.text_search(q.text, 10)[0]]
        secs.append(time.perf_counter() - t0)
        ranks["plain"].append(plain)
        ranks["default"].append(default)
        ranks["ceiling"].append([any(banked)])
    lib.close()
    out = {}
    for name in ("plain", "default"):
        hits = np.array(ranks[name])
        out[name] = {"queries": len(queries), **{f"recall@{k}": float(hits[:, :k].any(1).mean()) for k in (1, 5, 10)},
                     "seconds_p50": float(np.percentile(secs, 50)) if name == "default" else 0.0,
                     "seconds_p95": float(np.percentile(secs, 95)) if name == "default" else 0.0}
    out["default"]["ceiling"] = float(np.mean([c[0] for c in ranks["ceiling"]]))
    return out


def part_t2i(args: argparse.Namespace, cfg: PipelineConfig, results: dict[str, Any]) -> None:
    ds = dataset("t2i")
    rows = []
    direct = search_rows(ds, args.t2i_limit)
    rows.append(row("encoder alone (no query bank)", direct["plain"], None))
    base = evaluate(ds, 1 if args.no_rules else args.t2i_limit, None)
    rows.append(row("encoder + query bank", base, direct["plain"]))
    rows.append(row(f"default search: bank + verifier re-rank (pool ceiling {100 * direct['default']['ceiling']:.1f})",
                    direct["default"], direct["plain"]))
    results["t2i-search"] = direct
    base = direct["plain"]
    for st in () if args.no_rules else ((1,), (1, 2), (1, 2, 3)):
        m = evaluate(ds, args.t2i_limit, st, vision=args.vision, cfg=cfg)
        rows.append(row(f"rules + {args.vision}, stages {'-'.join(map(str, st))}", m, base))
        results[f"t2i-rules-{len(st)}"] = m
    results["t2i-encoder"] = base
    if args.llm_limit:
        lbase = evaluate(ds, args.llm_limit, None, seed=1)
        rows.append(row("encoder only (LLM subsample, seed 1)", lbase, None))
        full = cfg.model_copy(update={"reasoner": "llm"})
        for st in ((1,), (1, 2), (1, 2, 3)):
            m = evaluate(ds, args.llm_limit, st, cfg=full, seed=1)
            rows.append(row(f"bundled LLM + socratic, stages {'-'.join(map(str, st))}", m, lbase))
            results[f"t2i-llm-{len(st)}"] = m
    print("\nFlickr8k dev, text→image (1,000-image gallery)")
    print(table(HEAD, rows))


def part_cir(args: argparse.Namespace, cfg: PipelineConfig, results: dict[str, Any]) -> None:
    ds = dataset("cir")
    base = evaluate(ds, 1 if args.no_rules else args.cir_limit, None)
    text_only = cfg.model_copy(update={"granularities": 1})
    rows = [row("encoder only (reference + text embeddings)", base, None)]
    for name, st, c in () if args.no_rules else (
            ("rules, stage 1", (1,), cfg), ("rules, stage 1, core description only", (1,), text_only),
            (f"rules + {args.vision}, stages 1-3", (1, 2, 3), cfg)):
        m = evaluate(ds, args.cir_limit, st, vision=args.vision, cfg=c)
        rows.append(row(name, m, base))
        results[f"cir-{name}"] = m
    if args.llm_limit:
        lbase = evaluate(ds, args.llm_limit, None, seed=1)
        rows.append(row("encoder only (LLM subsample, seed 1)", lbase, None))
        for st in ((1,), (1, 2, 3)):
            m = evaluate(ds, args.llm_limit, st, cfg=cfg.model_copy(update={"reasoner": "llm"}), seed=1)
            rows.append(row(f"bundled LLM + socratic, stages {'-'.join(map(str, st))}", m, lbase))
            results[f"cir-llm-{len(st)}"] = m
    results["cir-encoder"] = base
    print("\nTemplated composed triplets (Flickr8k dev; reference + templated change → target)")
    print(table(HEAD, rows))


def part_dialog(args: argparse.Namespace, cfg: PipelineConfig, results: dict[str, Any]) -> None:
    ds = dataset("dialog")
    rows = []
    base = evaluate(ds, args.dialog_limit, None)
    rows.append(["encoder only (all turns joined)", base["queries"], *[100 * h for h in base["dialog_hits@10"]]])
    for st in ((1,), (1, 2, 3)):
        m = evaluate(ds, args.dialog_limit, st, vision=args.vision, cfg=cfg)
        rows.append([f"rules + {args.vision}, stages {'-'.join(map(str, st))}", m["queries"],
                     *[100 * h for h in m["dialog_hits@10"]]])
        results[f"dialog-rules-{len(st)}"] = m
    results["dialog-encoder"] = base
    width = max(len(r) for r in rows) - 2
    print("\nCaption-as-dialogue (Flickr8k dev): cumulative Hits@10 per round (round 0 = first caption only)")
    print(table(["configuration", "queries", *[f"round {r}" for r in range(width)]], rows))


def part_tune(args: argparse.Namespace, cfg: PipelineConfig, results: dict[str, Any]) -> PipelineConfig:
    """Grid over the stage-2 weight, the stage-3 weight and α on held-out dev queries (the 5th caption of each
    image), from signals gathered once (stages 1-3 with both weights 0 and α = K, so every candidate of the top K
    has its answers and its judge score; the bundled verifier scores each image on its own, so any α can be
    replayed). Train queries cannot tune them: the bundled encoder's caption memory holds the train images, so
    train retrieval is near-perfect (R@1 81%) and says nothing about unseen photos."""
    from picscope.eval.dataset import load_dataset
    from picscope.eval.runner import _Index, library_for
    from picscope.models import make_vision_model
    from picscope.pipeline import Request
    from picscope.pipeline.imagescope import ImageScopePipeline

    ds_path = dataset("t2i")
    ds = load_dataset(ds_path)
    tune_ids = split_ids(ds_path)[0]
    lib = library_for(ds, cfg_encoder())
    idx = _Index(lib, ds)
    queries = [q for q in ds.queries if q.id in tune_ids][: args.tune_limit]
    vision = make_vision_model(args.vision, encoder=lib.encoder)
    # stage 1 alone for each weight of the request's own words against the reasoner's descriptions
    anchors = {}
    for aw in (0.0, 0.5, 1.0):
        pipe = ImageScopePipeline(lib, cfg.model_copy(update={"anchor_weight": aw}), chat=None, vision=vision)
        anchors[aw] = float(np.mean([idx.key_of[pipe.run(Request(q.text), k=10, stages=(1,)).results[0].id]
                                     in set(q.relevant) for q in queries]))
        print(f"  stage 1, anchor_weight {aw}: R@1 {100 * anchors[aw]:.1f}", file=sys.stderr, flush=True)
    best_aw = max(anchors, key=lambda a: (anchors[a], a))
    cfg = cfg.model_copy(update={"anchor_weight": best_aw})
    print(f"\nStage 1 on {len(queries)} held-out queries: R@1 by anchor_weight "
          + ", ".join(f"{a}: {100 * r:.1f}" for a, r in anchors.items()) + f" (chosen {best_aw})")
    results["tune-anchor"] = anchors
    gather_cfg = cfg.model_copy(update={"verify_weight": 0.0, "judge_weight": 0.0, "alpha": cfg.verify_k})
    pipe = ImageScopePipeline(lib, gather_cfg, chat=None, vision=vision)
    gathered = []
    for q in queries:
        out = pipe.run(Request(q.text), k=cfg.verify_k, stages=(1, 2, 3))
        cands = sorted((c for c in out.to_dict()["candidates"] if "stage2" in c), key=lambda c: c["ranks"]["stage1"])
        gathered.append(([idx.key_of[c["id"]] for c in cands], np.array([c["stage1"]["score"] for c in cands]),
                         np.array([c["stage2"]["log_odds"] for c in cands]),
                         np.array([c.get("stage3", {}).get("judge", 0.0) for c in cands]), set(q.relevant)))
    grid = [(vw, jw, a) for vw in (0.0, 0.1, 0.2, 0.3, 0.5, 0.8) for jw in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)
            for a in (5, 10, 20)]
    scored = {g: _replay(gathered, *g) for g in grid}
    best = max(grid, key=lambda g: (scored[g][0], scored[g][1], -g[0], -g[1]))
    rows = [[vw, jw, a, 100 * r1, 100 * r5] for (vw, jw, a), (r1, r5) in scored.items() if a == best[2] or jw == 0]
    print(f"\nTuning stage-2/3 weights on {len(queries)} held-out Flickr8k dev queries (5th captions), "
          f"vision {args.vision}")
    print(table(["verify_weight", "judge_weight", "alpha", "R@1", "R@5"], rows))
    print(f"best: verify_weight {best[0]}, judge_weight {best[1]}, alpha {best[2]}")
    results["tune"] = {"grid": [[*g, *scored[g]] for g in grid], "best": best}
    lib.close()
    return cfg.model_copy(update={"verify_weight": best[0], "judge_weight": best[1], "alpha": best[2],
                                  "anchor_weight": best_aw})


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / (a.std() + 1e-9)


def _replay(gathered: list[Any], vw: float, jw: float, alpha: int) -> tuple[float, float]:
    """R@1 and R@5 of the stage-2 then stage-3 fusion (as `ImageScopePipeline` computes it) from gathered signals."""
    r1, r5 = [], []
    for keys, s1, lo, judge, rel in gathered:
        order = np.argsort(-(_z(s1) + vw * lo), kind="stable")
        s2 = (_z(s1) + vw * lo)[order]
        top = order[:alpha]
        head = top[np.argsort(-(_z(s2[:alpha]) + jw * _z(judge[top])), kind="stable")]
        final = [keys[i] for i in [*head, *order[alpha:]]]
        r1.append(float(final[0] in rel))
        r5.append(float(any(k in rel for k in final[:5])))
    return float(np.mean(r1)), float(np.mean(r5))


def cfg_encoder() -> str:
    from picscope.encoders import default_encoder_spec

    return default_encoder_spec()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["t2i", "cir", "dialog"],
                    choices=["tune", "t2i", "cir", "dialog"])
    ap.add_argument("--t2i-limit", type=int, default=1000)
    ap.add_argument("--cir-limit", type=int, default=500)
    ap.add_argument("--dialog-limit", type=int, default=300)
    ap.add_argument("--llm-limit", type=int, default=30, help="queries for the bundled-LLM rows (0: skip)")
    ap.add_argument("--tune-limit", type=int, default=500)
    ap.add_argument("--no-rules", action="store_true", help="skip the rules/socratic-lite rows (LLM rows only)")
    ap.add_argument("--verify-weight", type=float, default=None)
    ap.add_argument("--judge-weight", type=float, default=None)
    ap.add_argument("--alpha", type=int, default=None, help="candidates judged by stage 3")
    ap.add_argument("--vision", default=FAST_VISION, help="vision spec of the rules rows (bundled, socratic-lite…)")
    ap.add_argument("--json", type=Path, default=None, help="write every metric here")
    ap.add_argument("--plot", type=Path, default=None, help="write a PNG of R@1/5/10 per configuration here")
    args = ap.parse_args()
    if not (data_root() / "flickr8k" / "captions.jsonl").exists():
        print(f"skip: Flickr8k not found under {data_root()} (set PICSCOPE_DATA)")
        return 0
    print(machine())
    cfg = PipelineConfig(**FAST)
    for key in ("verify_weight", "judge_weight", "alpha"):
        if getattr(args, key) is not None:
            cfg = cfg.model_copy(update={key: getattr(args, key)})
    results: dict[str, Any] = {}
    if "tune" in args.parts:
        cfg = part_tune(args, cfg, results)
    for part in ("t2i", "cir", "dialog"):
        if part in args.parts:
            {"t2i": part_t2i, "cir": part_cir, "dialog": part_dialog}[part](args, cfg, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.plot:
        plot(results, args.plot)
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: R@1/5/10 for every configuration that was run, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {"t2i": "Flickr8k dev text→image", "cir": "templated composed"}
    fig, axes = plt.subplots(1, len(groups), figsize=(13, 4.5), squeeze=False)
    for ax, (prefix, title) in zip(axes[0], groups.items(), strict=True):
        names = [k for k, m in results.items() if k.startswith(prefix) and isinstance(m, dict) and "recall@1" in m]
        x = np.arange(len(names))
        for j, k in enumerate((1, 5, 10)):
            ax.bar(x + (j - 1) * 0.27, [100 * results[n][f"recall@{k}"] for n in names], 0.27, label=f"R@{k}")
        ax.set_xticks(x, [n.removeprefix(prefix + "-") for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel("%")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
