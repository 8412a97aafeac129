"""The full recipe behind the `bundled` encoder: features → heads → caption memory → hubness → evaluation → files.

    picscope train-encoder            # ~5 min on 2 cores from scratch (features cached afterwards: ~2 min)

The shipped model (numpy at inference time, `picscope.encoders.bundled_model`) has five parts:
1. an ensemble of projection heads (4-bit) (frozen EfficientNet-Lite0 pooled features + class log-probabilities →
   256-d; frozen MiniLM → 256-d), each trained with symmetric multi-positive InfoNCE from its own seed; the
   vector concatenates them, so one inner product is the mean of the members' cosines;
2. a caption memory: for each Flickr8k *train* image, the first two members' head embeddings (keys) and the mean MiniLM
   embedding of its five captions (value). An image's pseudo-caption is the softmax-weighted mean of the values
   of its k nearest keys (averaged over the key sets), compared with the query's own MiniLM embedding;
3. the zero-shot ImageNet-label space of the `labels` encoder, with a small weight (everyday objects outside
   Flickr8k's world stay findable);
4. horizontal-flip test-time augmentation of the image side;
5. a hubness correction: an image's mean similarity to its nearest train-caption "bank" texts, above the train
   images' 25th percentile, is subtracted (a per-image constant folded into one extra coordinate).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from picscope.encoders.bundled_model import (
    BundledModel,
    MemoryConfig,
    apply_head,
    image_input,
    pack_heads,
    pack_memory,
)
from picscope.training.data import flickr8k
from picscope.training.features import image_features, text_features
from picscope.training.metrics import image_to_text, text_to_image
from picscope.training.train import Features, TrainConfig, labels_baseline, train

VERSION = "bundled-v2"
HUB_PERCENTILE = 25  # r0: train images less "hubby" than this are not corrected
FILE_NAMES = (f"{VERSION}-heads.npz", f"{VERSION}-memory.npz")

__all__ = ["VERSION", "BundledModel", "MemoryConfig", "RecipeConfig", "evaluate_model", "load_features", "run_recipe"]


@dataclass(frozen=True)
class RecipeConfig:
    members: int = 4  # heads in the ensemble (seeds seed, seed+1, ...)
    memory_members: int = 2  # members whose memory keys ship (a 4-bit key set is 0.8 MB)
    head_bits: int = 4  # 4-bit heads and keys: half the size of 8-bit, within 0.1 R@1 (measured)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(hidden=512, dropout=0.5, weight_decay=0.2))
    memory: MemoryConfig = field(default_factory=MemoryConfig)


Bar = Callable[[str, int], Callable[[int], None]]  # (description, total) → advance(n)


def load_features(split: str, progress: Callable[[str], None] = print, bar: Bar | None = None) -> Features:
    data = flickr8k(split)
    n_caps = sum(map(len, data.captions))
    progress(f"{split}: image features for {len(data.paths)} photos (cached after the first run)")
    img = image_features(data.paths, progress=bar(f"{split} images", len(data.paths)) if bar else None)
    progress(f"{split}: MiniLM features for {n_caps} captions")
    txt = text_features([c for caps in data.captions for c in caps],
                        progress=bar(f"{split} captions", n_caps) if bar else None)
    words = np.array([len(c.split()) for caps in data.captions for c in caps])
    return Features(img["pooled"], img["logits"], img["pooled_flip"], img["logits_flip"], txt, words)


def member_keys(w: dict[str, np.ndarray], f: Features, flip_tta: bool) -> np.ndarray:
    """One member's memory keys: its head embedding of each train image (and mirror)."""
    use = bool(w["use_logits"][0])
    z = apply_head(w, "img", image_input(f.pooled, f.logits, use))
    if flip_tta:
        z = z + apply_head(w, "img", image_input(f.pooled_flip, f.logits_flip, use))
        z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z.astype(np.float32)


def build_model(members: list[dict[str, np.ndarray]], train_f: Features, cfg: MemoryConfig,
                label_emb: np.ndarray | None = None, memory_members: int | None = None) -> BundledModel:
    """Memory (keys of the first `memory_members` members, shared values) + the hubness threshold r0 measured
    on the train images."""
    keys = [member_keys(w, train_f, cfg.flip_tta) for w in members[: memory_members or len(members)]]
    values = train_f.text.reshape(len(keys[0]), 5, -1).mean(axis=1)
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    model = BundledModel(members, keys, values.astype(np.float32), replace(cfg, hub_center=0.0), label_emb)
    if cfg.hub:
        r = model.hub_scores(model.image_main(train_f.pooled, train_f.logits, train_f.pooled_flip,
                                              train_f.logits_flip))
        model.mem = replace(cfg, hub_center=round(float(np.percentile(r, HUB_PERCENTILE)), 6))
    return model


def evaluate_model(model: BundledModel, f: Features) -> dict[str, float]:
    zi = model.image_vectors(f.pooled, f.logits, f.pooled_flip, f.logits_flip)
    zt = model.text_vectors(f.text, f.words)
    owner = np.repeat(np.arange(len(zi)), 5)
    sim = zt @ zi.T
    return {**text_to_image(sim, owner), **image_to_text(sim, owner)}


def _roundtrip(members: list[dict[str, np.ndarray]], model: BundledModel, bits: int
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The arrays as written (quantised heads and memory), so what is evaluated is exactly what ships."""
    return pack_heads(members, bits), pack_memory(model.keys, model.values, model.mem, bits)


def run_recipe(
    out_dir: Path,
    cfg: RecipeConfig | None = None,
    log: Callable[[str], None] = print,
    bar: Bar | None = None,
) -> dict[str, Any]:
    """Train from scratch (features cached), evaluate on dev against the labels baseline, write the files.

    `bar(description, total)` returns a callback advanced as feature extraction goes (a progress bar)."""
    started = time.perf_counter()
    cfg = cfg or RecipeConfig()
    train_f, dev_f = load_features("train", log, bar), load_features("dev", log, bar)
    from picscope.encoders.labels import LabelSpaceEncoder

    label_emb = LabelSpaceEncoder().label_embeddings()
    members: list[dict[str, np.ndarray]] = []
    member_rows: list[dict[str, Any]] = []
    for j in range(cfg.members):
        tcfg = replace(cfg.train, seed=cfg.train.seed + j)
        log(f"training projection heads {j + 1}/{cfg.members} (seed {tcfg.seed}, early stopping on dev)")
        result = train(train_f, dev_f, tcfg, log=log)
        members.append(result.weights)
        member_rows.append({"seed": tcfg.seed, "best_epoch": result.best_epoch, "heads_only_dev": result.dev})
    log("building the caption memory and the hubness correction")
    draft = build_model(members, train_f, cfg.memory, label_emb, cfg.memory_members)
    heads, memory = _roundtrip(members, draft, cfg.head_bits)
    model = BundledModel.from_arrays(heads, memory, label_emb)
    dev = evaluate_model(model, dev_f)
    ablation = {
        "no hubness fix": evaluate_model(model.variant(replace(model.mem, hub_beta=0.0)), dev_f),
        "hub fix for every query length": evaluate_model(model.variant(replace(model.mem, hub_words=(0, 0))), dev_f),
        "one head": evaluate_model(model.variant(members=1), dev_f),
        "one head, no hub fix": evaluate_model(model.variant(replace(model.mem, hub_beta=0.0), members=1), dev_f),
    }
    baseline = labels_baseline(dev_f, label_emb)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, arrays in zip(FILE_NAMES, (heads, memory), strict=True):
        path = out_dir / name
        np.savez(path, **arrays)  # type: ignore[arg-type]
        files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out_dir / f"{VERSION}.sha256").write_text("".join(f"{h}  {n}\n" for n, h in sorted(files.items())))
    summary = {
        "version": VERSION,
        "dev": dev,
        "labels_baseline_dev": baseline,
        "ablation_dev": ablation,
        "members": member_rows,
        "memory_members": cfg.memory_members,
        "head_bits": cfg.head_bits,
        "train_config": cfg.train.__dict__,
        "memory_config": model.mem.__dict__,
        "dim": model.dim,
        "seconds": time.perf_counter() - started,
        "files": files,
    }
    (out_dir / f"{VERSION}-metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
