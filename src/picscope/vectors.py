"""The one home of vector arithmetic on embeddings: L2 normalisation and the composed-query vector.

Stored vectors and query vectors are float32 and unit length, so inner products are cosine similarities
(`picscope.store.base`). Every place that normalises a vector, builds a composed query ("like this photo,
but …") or takes the part of a vector outside a span (relevance feedback's negatives) calls these functions.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # a zero vector stays zero instead of becoming NaN


def unit(x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """`x` scaled to unit L2 length along its last axis (a vector, or each row of a matrix), as float32."""
    x = np.asarray(x)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


def compose(text: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The query vector of a composed request (a reference photo plus a change in words): the normalised sum of
    the text embedding and the reference photo's embedding — the encoder baseline for composed retrieval, used by
    the encoder pipeline, the evaluation harness and composed sessions alike."""
    return unit(np.asarray(text, np.float32) + np.asarray(reference, np.float32))


def outside(v: np.ndarray, basis: list[np.ndarray], eps: float = 1e-6) -> np.ndarray:
    """The part of `v` orthogonal to the span of `basis` (Gram–Schmidt; near-parallel basis vectors are skipped)."""
    out = np.asarray(v, np.float64).copy()
    done: list[np.ndarray] = []
    for b in basis:
        u = np.asarray(b, np.float64).copy()
        for d in done:
            u -= (u @ d) * d
        n = float(np.linalg.norm(u))
        if n > eps:
            done.append(u / n)
            out -= (out @ done[-1]) * done[-1]
    return out.astype(np.float32)
