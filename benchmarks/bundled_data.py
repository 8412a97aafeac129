"""Default-encoder-shaped data for the store benchmarks: the `bundled` encoder's real vectors of the shared photos
(Flickr8k train+dev) and of Flickr8k dev captions, and a generator that tiles the photos to any size.

Tiling: photo i of the tiled set is normalise((1 − w)·v_a + w·v_b) for two random real photos a, b and w ~ U(0, 0.3):
every row stays on the real data's manifold (the parts keep their signs and scales, the label part stays a
non-negative square-root distribution) while the copies differ from each other. `describe()` prints statistics of
real and tiled rows side by side so that the match can be checked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import numpy as np


def real_vectors(limit_captions: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(photo vectors (7000, dim), dev caption vectors (limit_captions, dim)) of the default encoder, cached."""
    from picscope.encoders import make_encoder
    from picscope.paths import cache_dir, data_root
    from picscope.training.data import flickr8k
    from picscope.training.features import image_features, text_features

    enc = make_encoder("bundled")
    root = data_root()
    if not (root / "flickr8k" / "captions.jsonl").exists():
        raise SystemExit(f"shared data not found at {root} (set PICSCOPE_DATA)")
    key = hashlib.sha256(f"{enc.name}:{limit_captions}".encode()).hexdigest()[:12]
    cache = cache_dir() / "bench" / f"bundled-vectors-{key}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["images"], z["captions"]
    model = enc.model  # type: ignore[attr-defined]
    images = []
    captions: list[str] = []
    for split in ("train", "dev"):
        data = flickr8k(split, root)
        f = image_features(list(data.paths))
        images.append(model.image_vectors(f["pooled"], f["logits"], f["pooled_flip"], f["logits_flip"]))
        if split == "dev":
            captions = [c for caps in data.captions for c in caps][:limit_captions]
    texts = [" ".join(t.split()) for t in captions]
    words = np.array([len(t.split()) for t in texts])
    cap_vecs = model.text_vectors(text_features(texts), words)
    out = np.concatenate(images).astype(np.float32), cap_vecs.astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=out[0], captions=out[1])
    os.replace(tmp, cache)
    return out


def tiled(base: np.ndarray, n: int, *, chunk: int = 50_000, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, rows) chunks of an n-row tiled set; the first len(base) rows are the real vectors."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        a = rng.integers(0, len(base), m)
        b = rng.integers(0, len(base), m)
        w = rng.uniform(0.0, 0.3, (m, 1)).astype(np.float32)
        rows = (1 - w) * base[a] + w * base[b]
        real = np.arange(start, start + m) < len(base)
        rows[real] = base[np.arange(start, start + m)[real]]
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield start, rows.astype(np.float32)


def describe(base: np.ndarray, queries: np.ndarray, sample: int = 1000) -> list[list[object]]:
    """Rows (statistic, real, tiled) for a table: score distribution of real queries and nearest-neighbour cosine."""
    _, t = next(tiled(base, len(base) + sample, chunk=len(base) + sample, seed=7))
    t = t[len(base):]
    rng = np.random.default_rng(1)
    r = base[rng.choice(len(base), sample, replace=False)]
    out: list[list[object]] = []
    for name, fn in (
        ("query·photo mean", lambda x: float((queries[:200] @ x.T).mean())),
        ("query·photo p99", lambda x: float(np.percentile(queries[:200] @ x.T, 99))),
        ("nearest real photo cosine (median)", lambda x: float(np.median(np.sort(x @ base.T, axis=1)[:, -2]))),
        ("photo·photo mean", lambda x: float((x @ base[:2000].T).mean())),
    ):
        out.append([name, round(fn(r), 4), round(fn(t), 4)])
    return out

