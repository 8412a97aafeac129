"""Fit a compact vector codec (`picscope.store.compact.VectorCodec`) for an encoder, from Flickr8k train only.

The codec keeps what a search needs: for a query q and a photo v the score is q · v, and only its differences
across photos matter. With C_q the second moment of queries and C_v the covariance of photo vectors, the rank-d
maps A (photos) and B (queries) minimising E (q · (v − μ) − (B q) · (A (v − μ)))² come from the SVD of
C_q^½ C_v^½ = U S Wᵀ:  A = S_d W_dᵀ C_v^−½,  B = U_dᵀ C_q^−½ (a query-aware PCA; with C_q = I it is plain PCA).
Queries are mostly texts but also photos ("more like this", feedback), so C_q mixes both.
Codes are ordered by importance: the first `scan_dim` numbers are kept as float32 and scanned for every search, the
rest are quantized and added for the best candidates only. Codec format 1 (`fine_segments=()`): `fine_dim` numbers as
int8 with per-dimension steps from the 99.9th percentile of |z| on train. Format 2: segments of (numbers, bits), each
number's step the one that minimises its squared error on train (a grid over multiples of its standard deviation).
Since z_i has variance s_i² (the i-th singular value) and every query direction has unit variance, a number's share of
the score error is its quantization error: reverse water-filling says to give the large ones more bits and to keep
many more small ones at 2 bits than to drop them (what format 1 did past 1,088 numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from picscope.store.compact import VectorCodec


@dataclass(frozen=True)
class CodecRecipe:
    scan_dim: int = 128
    fine_dim: int = 768
    image_query_share: float = 0.3  # weight of photos (vs texts) in the query distribution
    ridge: float = 1e-5  # added to both covariances' eigenvalues
    rescore: int = 256
    clip_percentile: float = 99.9
    coarse_norm_margin: float = 1.25  # graph stores lift coarse codes to this × the largest train norm
    fine_segments: tuple[tuple[int, int], ...] = ()  # format 2: (numbers, bits); () = format 1, `fine_dim` int8

    @property
    def fine_numbers(self) -> int:
        return sum(n for n, _ in self.fine_segments) if self.fine_segments else self.fine_dim

    @property
    def int8_from(self) -> int | None:
        """The first code row stored at 4 bits or fewer (its matrix rows can be int8 in the file), else None."""
        row = self.scan_dim
        for n, bits in self.fine_segments:
            if bits <= 4:
                return row
            row += n
        return None


def parse_segments(text: str) -> tuple[tuple[int, int], ...]:
    """"384x8,896x4,768x2" → ((384, 8), (896, 4), (768, 2)); a plain number → () (format 1: that many int8)."""
    if text.strip().isdigit():
        return ()
    out = []
    for part in text.split(","):
        n, _, bits = part.strip().partition("x")
        if not (n.isdigit() and bits in ("1", "2", "4", "8")) or int(n) % (8 // int(bits)):
            raise ValueError(f"{part.strip()!r} is not NUMBERSxBITS (bits 8, 4, 2 or 1, whole bytes per segment)")
        out.append((int(n), int(bits)))
    return tuple(out)


def _sqrt_and_inverse(c: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    w, q = np.linalg.eigh(c)
    w = np.maximum(w, 0.0) + ridge
    return (q * np.sqrt(w)) @ q.T, (q / np.sqrt(w)) @ q.T


def fit_codec(images: np.ndarray, texts: np.ndarray, recipe: CodecRecipe, name: str) -> VectorCodec:
    """Fit on train photo vectors (n, dim) and train query texts' vectors (m, dim) of one encoder."""
    v = np.asarray(images, np.float64)
    t = np.asarray(texts, np.float64)
    mean = v.mean(axis=0)
    x = v - mean
    cov_v = x.T @ x / len(x)
    cov_q = (1 - recipe.image_query_share) * (t.T @ t / len(t)) + recipe.image_query_share * (v.T @ v / len(v))
    lq, lq_inv = _sqrt_and_inverse(cov_q, recipe.ridge)
    lv, lv_inv = _sqrt_and_inverse(cov_v, recipe.ridge)
    u, s, wt = np.linalg.svd(lq @ lv)
    d = recipe.scan_dim + recipe.fine_numbers
    a = ((s[:d, None] * wt[:d]) @ lv_inv).astype(np.float32)
    b = (u[:, :d].T @ lq_inv).astype(np.float32)
    codes = x @ a.T
    norm = float(recipe.coarse_norm_margin * np.linalg.norm(codes[:, : recipe.scan_dim], axis=1).max())
    z = codes[:, recipe.scan_dim :]
    if recipe.fine_segments:
        bits = np.repeat([b for _, b in recipe.fine_segments], [n for n, _ in recipe.fine_segments])
        scale = np.concatenate([best_steps(z[:, bits == b], b) for b in np.unique(bits)])
        scale = scale[np.argsort(np.argsort(bits, kind="stable"), kind="stable")].astype(np.float32)
    else:
        scale = np.percentile(np.abs(z), recipe.clip_percentile, axis=0) / 127.0
    arrays = {"mean": mean.astype(np.float32), "encode": a, "query": b,
              "scan_dim": np.array([recipe.scan_dim], np.int32),
              "fine_scale": np.maximum(scale, 1e-8).astype(np.float32),
              "rescore": np.array([recipe.rescore], np.int32), "coarse_norm": np.array([norm], np.float32)}
    if recipe.fine_segments:
        arrays["fine_segments"] = np.array(recipe.fine_segments, np.int32)
    return VectorCodec.from_arrays(arrays, name)


def best_steps(z: np.ndarray, bits: int, grid: int = 60) -> np.ndarray:
    """Per column of z (n, m): the step of a `bits`-bit mid-rise quantizer with the least mean squared error."""
    half = 1 << (bits - 1)
    sd = np.maximum(z.std(axis=0), 1e-12)
    factors = np.geomspace(0.004, 2.5, grid)  # step / standard deviation (Gaussian optima: 8 bits ~0.03, 1 bit ~1.6)
    best = np.full(z.shape[1], np.inf)
    out = sd.copy()
    for f in factors:
        step = f * sd
        err = (((np.clip(np.floor(z / step), -half, half - 1) + 0.5) * step - z) ** 2).mean(axis=0)
        better = err < best
        best[better], out[better] = err[better], step[better]
    return out


def score_full(codec: VectorCodec, queries: np.ndarray, images: np.ndarray, rescore: int | None = None) -> np.ndarray:
    """Scores (q, n) the way a compact store computes them: coarse for all, coarse + fine for the best `rescore`
    (the rest keep −inf). `rescore=0` adds the fine part for every photo."""
    coarse, fine = codec.encode(images)
    qc, qf, off = codec.queries(queries)
    s1 = qc @ coarse.T
    full = s1 + qf @ codec.dequantize(fine).T + off[:, None]
    r = codec.rescore if rescore is None else rescore
    if r <= 0 or r >= s1.shape[1]:
        return full
    keep = np.argpartition(-s1, r - 1, axis=1)[:, :r]
    out = np.full_like(full, -np.inf)
    np.put_along_axis(out, keep, np.take_along_axis(full, keep, axis=1), axis=1)
    return out


def top_agreement(exact: np.ndarray, approx: np.ndarray, k: int = 10) -> float:
    """Mean share of each query's exact top-k that the approximate scores also rank in their top-k."""
    a = np.argpartition(-exact, k - 1, axis=1)[:, :k]
    b = np.argpartition(-approx, k - 1, axis=1)[:, :k]
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b, strict=True)]))


def _recall(scores: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    g = scores[np.arange(len(scores)), gold][:, None]
    rank = (scores > g).sum(axis=1)
    return {f"r{k}": float(100 * (rank < k).mean()) for k in (1, 5, 10)}


def encoder_vectors(spec: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo vectors, caption vectors, caption → photo index) of Flickr8k `split` through the encoder's model."""
    from picscope.encoders import make_encoder
    from picscope.training.data import flickr8k
    from picscope.training.features import image_features, text_features

    enc = make_encoder(spec)
    model = getattr(enc, "model", None)
    data = flickr8k(split)
    texts = [c for caps in data.captions for c in caps]
    gold = np.repeat(np.arange(len(data.paths)), [len(c) for c in data.captions])
    if model is None:  # any other encoder: its own (uncached) paths
        from picscope.imageio import load_image

        imgs = enc.embed_images([load_image(str(p), target_size=enc.image_size) for p in data.paths])
        return imgs, enc.embed_texts(texts), gold
    f = image_features(list(data.paths))
    images = model.image_vectors(f["pooled"], f["logits"], f["pooled_flip"], f["logits_flip"])
    words = np.array([len(t.split()) for t in texts])
    return images, model.text_vectors(text_features(texts), words), gold


def evaluate(codec: VectorCodec, images: np.ndarray, texts: np.ndarray, gold: np.ndarray
             ) -> dict[str, dict[str, float]]:
    """Dev text→image recall with full vectors and with the codec, and the codec's top-10 agreement."""
    full = texts @ images.T
    approx = score_full(codec, texts, images)
    return {"full float32": {**_recall(full, gold), "agreement": 1.0},
            "compact": {**_recall(approx, gold), "agreement": top_agreement(full, approx)}}


def train_codec_for(spec: str, recipe: CodecRecipe) -> tuple[VectorCodec, dict[str, dict[str, float]]]:
    """Fit on Flickr8k train, evaluate on dev (never tuned on anything else)."""
    images, texts, _ = encoder_vectors(spec, "train")
    from picscope.encoders import make_encoder

    codec = fit_codec(images, texts, recipe, f"{make_encoder(spec).name.split('@')[0]}-codec")
    return codec, evaluate(codec, *encoder_vectors(spec, "dev"))
