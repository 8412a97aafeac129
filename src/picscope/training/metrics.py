"""Retrieval metrics for caption/image sets with 5 captions per image (Flickr8k/30k style)."""

from __future__ import annotations

import numpy as np


def text_to_image(sim: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """`sim`: (n_captions, n_images); `caption_image[i]`: the image of caption i. One relevant image per query."""
    target = sim[np.arange(len(sim)), caption_image][:, None]
    ranks = (sim > target).sum(axis=1) + 1  # 1-based rank of the relevant image (ties favour it)
    out = {f"t2i_r@{k}": float((ranks <= k).mean() * 100) for k in ks}
    out["t2i_median_rank"] = float(np.median(ranks))
    out["t2i_mrr"] = float((1.0 / ranks).mean())
    return out


def image_to_text(sim: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Same `sim` as above; an image query hits when any of its captions is in the top k."""
    sim_it = sim.T  # (n_images, n_captions)
    order = np.argsort(-sim_it, axis=1)
    owners = caption_image[order]  # image of each ranked caption
    first = np.argmax(owners == np.arange(len(sim_it))[:, None], axis=1) + 1
    out = {f"i2t_r@{k}": float((first <= k).mean() * 100) for k in ks}
    out["i2t_median_rank"] = float(np.median(first))
    return out
