"""Query-bank normalisation: a text search's scores corrected for each photo's "hubness".

A dual encoder has hubs: photos that score high against many unrelated captions and so sit near the top of many
queries' results. Query-bank normalisation (Bogolin et al., "Cross Modal Retrieval with Querybank Normalisation",
CVPR 2022) measures each photo against a bank of typical text queries and ranks by

    score(q, i) − Z(i),   Z(i) = (1/β) · log Σ_b exp(β · score(b, i))

a soft maximum of the photo's scores over the bank (the log of the inverted softmax's denominator). A photo that
matches every bank query well gets a large Z and gives way to one that matches this query in particular.

The bank ships with the encoder (`bundled-v2-querybank.npz`, `picscope train-querybank`): the encoder's text
vectors of 5,000 Flickr8k *train* captions, stored as a rank-128 factorisation A·W (float16, 1.9 MB; Z from the
factors is within 0.07 of the full bank's on Flickr8k dev and ranks the same). Z of a photo costs two small matrix
products, so it is computed for the candidates of a query, not stored. Measured on Flickr8k dev (1,000 photos,
captions 1–4; β and the bank size chosen on the 5th captions): R@1 26.3 → 28.2 for the encoder alone, and 29.9
with the verifier re-rank on top (`benchmarks/bench_querybank.py`).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from picscope.encoders.numerics import single_threaded_blas
from picscope.errors import EncoderError

if TYPE_CHECKING:
    from picscope.store.compact import VectorCodec

FORMAT = 1
_LOCK = threading.Lock()


@dataclass(frozen=True)
class QueryBank:
    """A bank of text-query vectors as factors (`a`: n×r, `w`: r×dim) and the softmax temperature `beta`."""

    a: np.ndarray
    w: np.ndarray
    beta: float
    name: str
    _code_space: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.w.shape[1])

    def normalizers(self, vectors: np.ndarray) -> np.ndarray:
        """Z(i) for each row of `vectors` (n×dim image vectors, as the store returns them), float32."""
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"query bank {self.name} is for {self.dim}-d vectors, got {v.shape}")
        if not len(v):
            return np.zeros(0, np.float32)
        with single_threaded_blas():  # small products: a second BLAS thread only adds waiting on a busy machine
            scores = self.beta * (self.a @ (self.w @ v.T))  # (bank, n)
        top = scores.max(axis=0)
        return ((np.log(np.exp(scores - top).sum(axis=0)) + top) / self.beta).astype(np.float32)

    def normalizers_of_rows(self, rows: np.ndarray, codec: VectorCodec | None) -> np.ndarray:
        """Z(i) for what a store scores (`VectorStore.scored_rows`): full vectors (`codec` None), or a compact
        store's codes, through the codec's query transform (linear, so applied to the factors once per codec)."""
        if codec is None:
            return self.normalizers(rows)
        w, offset = self._in_code_space(codec)
        r = np.asarray(rows, np.float32)
        if not len(r):
            return np.zeros(0, np.float32)
        with single_threaded_blas():
            scores = self.beta * (self.a @ (w @ r.T + offset[:, None]))
        top = scores.max(axis=0)
        return ((np.log(np.exp(scores - top).sum(axis=0)) + top) / self.beta).astype(np.float32)

    def _in_code_space(self, codec: VectorCodec) -> tuple[np.ndarray, np.ndarray]:
        """The factor W through the codec's query transform, and W·mean; kept in the cache folder (computing it
        takes 30-150 ms, more than the rest of a text search's model work)."""
        with _LOCK:
            got = self._code_space.get(codec.name)
            if got is None:
                got = _cached_code_space(self, codec)
                self._code_space[codec.name] = got
            return got

    def corrected(self, scores: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """`scores` (one per row of `vectors`) minus the rows' normalisers."""
        return np.asarray(scores, np.float32) - self.normalizers(vectors)

    # -- files ------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, a=self.a.astype(np.float16), w=self.w.astype(np.float16),
                     beta=np.array([self.beta], np.float32), format=np.array([FORMAT], np.int32))
        tmp.replace(path)


def _cached_code_space(bank: QueryBank, codec: VectorCodec) -> tuple[np.ndarray, np.ndarray]:
    from picscope.paths import cache_dir

    key = hashlib.sha256(f"{bank.name}|{codec.name}".encode()).hexdigest()[:16]
    path = cache_dir() / f"querybank-{key}.npy"
    try:
        stored = np.load(path)
        if stored.shape == (bank.w.shape[0], codec.code_dim + 1):
            return np.ascontiguousarray(stored[:, :-1]), np.ascontiguousarray(stored[:, -1])
    except (OSError, ValueError):
        pass  # not there yet (or unreadable): computed below
    q_coarse, q_fine, offset = codec.queries(bank.w)
    w = np.concatenate([q_coarse, q_fine], axis=1).astype(np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.concatenate([w, offset[:, None]], axis=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache folder: computed again next time
    return w, offset.astype(np.float32)


def fit_querybank(text_vectors: np.ndarray, rank: int, beta: float, name: str) -> QueryBank:
    """The bank of `text_vectors` (n×dim) as its best rank-`rank` factorisation (truncated SVD)."""
    t = np.asarray(text_vectors, np.float64)
    u, s, wt = np.linalg.svd(t, full_matrices=False)
    r = min(rank, len(s))
    return QueryBank((u[:, :r] * s[:r]).astype(np.float32), wt[:r].astype(np.float32), float(beta), name)


def load_querybank(path: Path, expected_sha256: str | None = None) -> QueryBank:
    """Read a bank; with `expected_sha256`, refuse a file whose bytes differ (a pinned, shipped file)."""
    from picscope.encoders.modelcache import file_digest

    path = Path(path)
    try:
        digest = file_digest(path)  # remembered by (path, size, mtime): a later process only stats the file
    except OSError as exc:
        raise EncoderError(f"cannot read the query bank {path}: {exc}") from exc
    if expected_sha256 is not None and digest != expected_sha256:
        raise EncoderError(f"query bank {path} is corrupt (SHA-256 {digest[:16]}… is not the pinned "
                           f"{expected_sha256[:16]}…); reinstall picscope or run `picscope train-querybank`")
    from picscope.encoders.modelcache import load_arrays, save_arrays
    from picscope.paths import cache_dir

    unpacked = cache_dir() / f"{path.stem}-{digest[:16]}-unpacked"  # float32, memory-mapped by later processes
    loaded = load_arrays(unpacked)
    if loaded is not None and {"a", "w"} <= set(loaded[0]) and {"beta", "format"} <= set(loaded[1]):
        a, w = loaded[0]["a"], loaded[0]["w"]
        beta, fmt = float(loaded[1]["beta"]), int(loaded[1]["format"])
    else:
        try:
            with np.load(path) as f:
                a, w = np.asarray(f["a"], np.float32), np.asarray(f["w"], np.float32)
                beta, fmt = float(f["beta"][0]), int(f["format"][0])
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise EncoderError(f"{path} is not a query bank: {exc}") from exc
        if fmt == FORMAT:
            save_arrays(unpacked, {"a": a, "w": w}, {"beta": beta, "format": fmt})
    if fmt != FORMAT or a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0] or not beta > 0:
        raise EncoderError(f"{path}: unsupported query bank (format {fmt}, factors {a.shape} and {w.shape})")
    return QueryBank(a, w, beta, f"{path.stem}@{digest[:12]}")
