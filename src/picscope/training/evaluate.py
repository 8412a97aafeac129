"""Evaluate any dual encoder on Flickr8k (text→image and image→text), through its real image and text paths."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from picscope.encoders import make_encoder
from picscope.imageio import load_image
from picscope.training.data import flickr8k
from picscope.training.metrics import image_to_text, text_to_image


def evaluate_encoder(
    spec: str, split: str = "dev", limit: int | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    enc = make_encoder(spec)
    data = flickr8k(split)
    paths, captions = data.paths[:limit], data.captions[:limit]
    t0 = time.perf_counter()
    vecs = []
    for start in range(0, len(paths), 16):
        imgs = [load_image(str(p), target_size=enc.image_size) for p in paths[start : start + 16]]
        vecs.append(enc.embed_images(imgs))
        if progress:
            progress(len(imgs))
    zi = np.concatenate(vecs)
    t_img = time.perf_counter() - t0
    flat = [c for caps in captions for c in caps]
    t1 = time.perf_counter()
    zt = enc.embed_texts(flat)
    t_txt = time.perf_counter() - t1
    owner = np.repeat(np.arange(len(zi)), 5)
    sim = zt @ zi.T
    return {
        "encoder": enc.name,
        "split": split,
        "images": len(zi),
        "queries": len(flat),
        **text_to_image(sim, owner),
        **image_to_text(sim, owner),
        "images_per_second": len(zi) / t_img,
        "texts_per_second": len(flat) / t_txt,
    }
