"""Default-encoder-shaped data for the store benchmarks: the `bundled` encoder's real vectors of the shared photos
(Flickr8k train+dev) and of Flickr8k dev captions, and two generators that grow them to any size.

`sampled` (the default): a smoothed bootstrap. Row i is normalise(v_a + h · Σ_j g_j (v_{n_j} − v_a) / √K) for a
random real photo a, its K = 16 nearest real photos n_j and g ~ N(0, 1): a draw from a kernel density estimate of
the real photos that follows their local directions. h = 1.1 was chosen so that 7,000 generated rows have the
nearest-neighbour cosines of the 7,000 real ones (median 0.678 vs 0.682, p10 0.52 vs 0.57, p90 0.84 vs 0.83, 2.2%
vs 1.8% of rows with a neighbour above 0.9) and the same gap between a caption's 10th and 11th score (0.0023 vs
0.0022); `describe()` prints that comparison. At 1M it is as dense as 1M draws from that density are.

`tiled` (the stress set of earlier rounds): row i is normalise((1 − w)·v_a + w·v_b) for two random real photos a, b
and w ~ U(0, 0.3). Rows sharing the photo a are near-copies (cosine > 0.9), so it is much denser than real photos at
any size: already at 7,000 rows 63% of them have a neighbour above 0.9 (real: 1.8%); at 1M each photo has ~140.
Both generators start with the real rows themselves.
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


KDE_NEIGHBOURS = 16
KDE_BANDWIDTH = 1.1


def sampled(base: np.ndarray, n: int, *, chunk: int = 50_000, seed: int = 0, h: float = KDE_BANDWIDTH
            ) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, rows) chunks of an n-row smoothed-bootstrap set (see the module docstring); the first len(base)
    rows are the real vectors."""
    nbr = _neighbours(base, KDE_NEIGHBOURS)
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        a = rng.integers(0, len(base), m)
        g = (rng.standard_normal((m, KDE_NEIGHBOURS)) / np.sqrt(KDE_NEIGHBOURS)).astype(np.float32)
        rows = base[a] * (1 - h * g.sum(axis=1, keepdims=True))
        for j in range(KDE_NEIGHBOURS):  # Σ_j g_j v_{n_j}, one neighbour at a time (no (m, K, dim) array)
            rows += h * g[:, j : j + 1] * base[nbr[a, j]]
        real = np.arange(start, start + m) < len(base)
        rows[real] = base[np.arange(start, start + m)[real]]
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield start, rows.astype(np.float32)


def _neighbours(base: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(base), k), np.int64)
    for s in range(0, len(base), 2048):
        sim = base[s : s + 2048] @ base.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        out[s : s + 2048] = np.argsort(-sim, axis=1)[:, :k]
    return out


GENERATORS = {"sampled": sampled, "tiled": tiled}


def describe(base: np.ndarray, queries: np.ndarray, n: int | None = None, seed: int = 7) -> list[list[object]]:
    """Rows (statistic, real, sampled, tiled) for a table: n (default len(base)) generated rows — the generated ones
    only, never the real rows they start with — against the n real ones, same statistics."""
    n = n or len(base)
    sets = {"real": base[np.random.default_rng(seed).choice(len(base), n, replace=False)] if n < len(base) else base}
    for name, gen in GENERATORS.items():
        _, rows = next(gen(base, len(base) + n, chunk=len(base) + n, seed=seed))
        sets[name] = rows[len(base):]
    stats = {name: neighbour_stats(x, queries[:300]) for name, x in sets.items()}
    return [[label, *(round(stats[name][j], 4) for name in sets)] for j, label in enumerate(STAT_LABELS)]


STAT_LABELS = ["nearest-neighbour cosine p10", "nearest-neighbour cosine median", "nearest-neighbour cosine p90",
               "share of rows with a neighbour above 0.9", "caption query: 10th − 11th score (median)",
               "caption query: best score (median)"]


def neighbour_stats(x: np.ndarray, queries: np.ndarray) -> list[float]:
    """`STAT_LABELS` of the rows x among themselves (nearest neighbours) and for real caption queries."""
    nn = np.empty(len(x), np.float32)
    for s in range(0, len(x), 2048):
        sim = x[s : s + 2048] @ x.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        nn[s : s + 2048] = sim.max(axis=1)
    top = -np.sort(-(queries @ x.T), axis=1)[:, :11]
    return [float(np.percentile(nn, 10)), float(np.median(nn)), float(np.percentile(nn, 90)), float((nn > 0.9).mean()),
            float(np.median(top[:, 9] - top[:, 10])), float(np.median(top[:, 0]))]
