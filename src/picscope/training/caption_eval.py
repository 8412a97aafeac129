"""The captioner against the nearest-neighbour baseline on Flickr8k dev (BLEU-4, CIDEr-D), and its speed.

Baseline: for each dev photo, the closest *train* photo by the bundled dual encoder (image–image cosine of the
vectors the index stores, mirror-averaged as the encoder does), and of that photo's 5 captions the one with the
highest CIDEr-D against the other 4 (`eval.captionscore.consensus_indices`). Both are scored against the dev
photo's 5 human captions, on all 1,000 dev photos and on photos 500–999, which training never looked at (photos
0–499 picked the epoch).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from picscope.eval.captionscore import caption_scores, consensus_indices
from picscope.training.captioner import DEV_STOP
from picscope.training.data import CaptionedImages, flickr8k


def baseline_captions(train: CaptionedImages, dev: CaptionedImages, dev_rows: np.ndarray) -> list[str]:
    """The nearest-neighbour caption for each of `dev_rows` (see the module docstring)."""
    from picscope.encoders.bundled import BundledEncoder
    from picscope.training.features import image_features

    model = BundledEncoder().model

    def vectors(paths: list[Path]) -> np.ndarray:
        f = image_features(paths)
        return model.image_vectors(f["pooled"], f["logits"], f["pooled_flip"], f["logits_flip"])

    train_vec = vectors(train.paths)
    dev_vec = vectors(dev.paths)[dev_rows]
    nearest = np.argmax(dev_vec @ train_vec.T, axis=1)
    groups = [train.captions[j] for j in nearest]
    return [caps[k] for caps, k in zip(groups, consensus_indices(groups), strict=True)]


def measure_speed(captioner: Any, paths: list[Path], repeats: int = 1) -> dict[str, float]:
    """Captions per second from decoded photos: the 7×7 cells (ONNX Runtime) plus beam search, timed apart."""
    from picscope.encoders import towers
    from picscope.imageio import load_image

    images = [load_image(str(p), target_size=towers.IMAGE_SIZE) for p in paths]
    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    tower = towers.efficientnet()
    captioner.caption_grids(tower.grid(np.stack([towers.prepare_efficientnet(images[0])])))  # warm up
    grid_s = decode_s = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        grids = np.concatenate([tower.grid(np.stack([towers.prepare_efficientnet(im) for im in images[i : i + 32]]))
                                for i in range(0, len(images), 32)])
        t1 = time.perf_counter()
        captioner.caption_grids(grids)
        t2 = time.perf_counter()
        grid_s += t1 - t0
        decode_s += t2 - t1
    n = len(images) * repeats
    return {"photos": n, "grid_ms": 1000 * grid_s / n, "decode_ms": 1000 * decode_s / n,
            "captions_per_s": n / (grid_s + decode_s), "threads": os.cpu_count() or 1, "load_before": load_before}


def evaluate_captioner(weights: Path | None = None, *, limit: int | None = None, beam: int = 3,
                       samples: int = 0, speed_photos: int = 64) -> dict[str, Any]:
    """Scores of the captioner and the baseline on dev (all and held-out), speed, and sample captions."""
    from picscope.models.captioner import BundledCaptioner
    from picscope.training.grid import image_grids

    train, dev = flickr8k("train"), flickr8k("dev")
    n = len(dev.paths) if limit is None else max(1, min(limit, len(dev.paths)))
    rows = np.arange(n)
    captioner = BundledCaptioner(weights, beam=beam)
    grids = image_grids(train.paths + dev.paths)  # the cached cells (rows 6000… are dev)
    model = captioner.caption_grids(np.asarray(grids[len(train.paths) : len(train.paths) + n]))
    base = baseline_captions(train, dev, rows)
    refs = [dev.captions[i] for i in rows]
    scores: dict[str, Any] = {}
    for part, sel in (("all", rows), ("held_out", rows[rows >= DEV_STOP])):
        if len(sel) == 0:
            scores[part] = {}
            continue
        scores[part] = {"photos": len(sel),
                        "model": caption_scores([model[i] for i in sel], [refs[i] for i in sel]),
                        "baseline": caption_scores([base[i] for i in sel], [refs[i] for i in sel])}
    picked = random.Random(0).sample(range(n), min(samples, n))
    report = {
        "names": {"model": f"{captioner.name}, beam {beam}", "baseline": "nearest neighbour (bundled encoder)"},
        "scores": scores,
        "speed": measure_speed(captioner, dev.paths[:speed_photos]) if speed_photos > 0 else {},
        "samples": [{"image": dev.paths[i].name, "model": model[i], "human": dev.captions[i][0],
                     "baseline": base[i]} for i in picked],
    }
    return report
