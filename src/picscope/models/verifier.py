"""The `bundled` image–text matching verifier: numpy inference (no torch), weights shipped in the package.

It reads what the pooled dual encoder throws away: EfficientNet-Lite0's 7×7 head cells (`EfficientNetTower.grid`)
and MiniLM's token states (`NumpyMiniLM.hidden`). Each word attends to the image cells; a small matching head
scores each word against what it attended to; word scores are pooled with learned weights. The architecture and
its training are in `picscope.training.verifier`; the model card is `weights/MODEL_CARD_VERIFIER.md`.

`score(cells, tokens)` gives raw match scores (higher = better match; comparable across images for one text).
`probability` turns a score into P(match) with a logistic calibration fitted on dev at training time.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.encoders.numerics import gelu, single_threaded_blas
from picscope.errors import EncoderError
from picscope.vectors import unit

if TYPE_CHECKING:
    from PIL import Image

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
VERSION = "verifier-v1"
MAX_TOKENS = 32
_lock = threading.Lock()


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


STOP_WORDS = frozenset({"a", "an", "the", "of", "in", "on", "at", "to", "with", "and", "or", "is", "are", "it",
                        "its", "this", "that", "there", "some", "his", "her", "their", "while", "for", "by", "from",
                        "into"})


@dataclass(frozen=True)
class TextFeatures:
    """One text's token vectors (T, d) in the cell space, their pooling weights (T,) summing to 1, and its words
    (each with the token positions it spans) for explanations."""

    q: np.ndarray
    w: np.ndarray
    words: tuple[tuple[str, tuple[int, ...]], ...] = ()
    members: tuple[tuple[np.ndarray, np.ndarray], ...] = ()  # (q, w) of every ensemble member (the first is q, w)


class Verifier:
    """P(match | image, text) from cell features and token states. Thread-safe (read-only weights)."""

    def __init__(self, weights: dict[str, np.ndarray], meta: dict[str, object], name: str) -> None:
        self.w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        # an ensemble stores each member's weights under "m<i>." (the cell PCA is shared); its score is the mean
        prefixes = sorted({k.split(".", 1)[0] for k in self.w if k[0] == "m" and k.split(".", 1)[0][1:].isdigit()})
        self.members = [{k[len(p) + 1:]: v for k, v in self.w.items() if k.startswith(p + ".")} for p in prefixes]
        if not self.members:
            self.members = [self.w]
        self.lam = float(meta["lam"])  # type: ignore[arg-type]
        cal: Any = meta.get("calibration", (1.0, 0.0))
        self.calibration = (float(cal[0]), float(cal[1]))
        self.meta = meta
        self.name = name

    # -- features ------------------------------------------------------------------------------------------
    def cells(self, grid: np.ndarray) -> np.ndarray:
        """(n, 49, 1280) head cells -> (n, 50, d) unit cell vectors (the 50th is the mean cell)."""
        w = self.w
        with single_threaded_blas():
            c = (np.asarray(grid, np.float32) - w["pca_mean"]) @ w["pca"].T
        c = np.concatenate([c, c.mean(axis=1, keepdims=True)], axis=1)
        return unit(c).astype(np.float32)

    def tokens(self, states: np.ndarray) -> TextFeatures:
        """(T, 384) MiniLM token states of one text -> its token vectors and weights (for every member)."""
        h = np.asarray(states[:MAX_TOKENS], np.float32)
        members = []
        for w in self.members:
            q = gelu(h @ w["t1.weight"].T + w["t1.bias"]) @ w["t2.weight"].T + w["t2.bias"] + h @ w["tskip.weight"].T
            weight = _softplus(h @ w["tw.weight"].T + w["tw.bias"])[:, 0]
            members.append((unit(q).astype(np.float32),
                            (weight / max(float(weight.sum()), 1e-6)).astype(np.float32)))
        return TextFeatures(members[0][0], members[0][1], members=tuple(members))

    # -- scoring -------------------------------------------------------------------------------------------
    def parts(self, cells: np.ndarray, text: TextFeatures, member: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(n, 50, d) cells, one text -> one member's (s_li, s_x), each (n,)."""
        w = self.members[member]
        if text.members:
            text = TextFeatures(*text.members[member])
        cells = np.asarray(cells, np.float32)
        sim = np.matmul(cells, text.q.T).transpose(0, 2, 1)  # (n, T, 50): one BLAS product, not an einsum
        att = np.exp(self.lam * (sim - sim.max(-1, keepdims=True)))
        att /= att.sum(-1, keepdims=True)
        s_li = ((att * sim).sum(-1) * text.w).sum(-1)
        mix = att @ cells  # (n, T, d)
        # h1 over [q, mix, q·mix]: the q part is the same for every image, so it is computed once
        n, t, d = mix.shape
        h1 = w["h1.weight"]
        flat = mix.reshape(n * t, d)  # 2-D products: one BLAS call each
        pre = (flat @ h1[:, d : 2 * d].T + (mix * text.q).reshape(n * t, d) @ h1[:, 2 * d :].T).reshape(n, t, -1)
        pre += text.q @ h1[:, :d].T + w["h1.bias"]
        x = gelu(pre) @ w["h2.weight"].T + w["h2.bias"]
        s_x = (x[..., 0] * text.w).sum(-1)
        return s_li, s_x

    def word_evidence(self, cells: np.ndarray, text: TextFeatures) -> list[list[tuple[str, float]]]:
        """Per image: the text's content words with how well each matched the cells it attended to (cosine of the
        attended mix), best first."""
        sim = np.einsum("td,ncd->ntc", text.q, cells)
        att = np.exp(self.lam * (sim - sim.max(-1, keepdims=True)))
        att /= att.sum(-1, keepdims=True)
        tok = (att * sim).sum(-1)  # (n, T)
        words = [(w, idx) for w, idx in text.words
                 if idx and w.lower() not in STOP_WORDS and any(ch.isalnum() for ch in w)]
        out = []
        for row in tok:
            scored = [(w, float(row[list(idx)].mean())) for w, idx in words]
            out.append(sorted(scored, key=lambda x: -x[1]))
        return out

    def score(self, cells: np.ndarray, text: TextFeatures) -> np.ndarray:
        """(n, 50, d) cells, one text -> (n,) match scores (the members' mean)."""
        total = np.zeros(len(cells), np.float64)
        with single_threaded_blas():
            for m, w in enumerate(self.members):
                s_li, s_x = self.parts(cells, text, m)
                total += s_li * float(w["scale"]) + s_x
        return (total / len(self.members)).astype(np.float32)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return (1.0 / (1.0 + np.exp(-(a * np.asarray(scores, np.float64) + b)))).astype(np.float32)

    # -- convenience: from images and strings -------------------------------------------------------------
    def text_features(self, texts: Sequence[str]) -> list[TextFeatures]:
        from picscope.encoders import towers

        model = towers.minilm().numpy
        cleaned = [" ".join(t.split()) for t in texts]
        out = []
        with single_threaded_blas():
            for text in cleaned:
                ids, words = self._tokenized(model, text)
                tok = np.asarray([ids], np.int64)
                feats = self.tokens(model.hidden(tok, np.ones(tok.shape, np.float32))[0])
                out.append(TextFeatures(feats.q, feats.w, words, feats.members))
        return out

    @staticmethod
    def _tokenized(model: Any, text: str) -> tuple[list[int], tuple[tuple[str, tuple[int, ...]], ...]]:
        """Token ids and words (with their token positions below MAX_TOKENS): ASCII text by MiniLM's
        `AsciiWordPiece` (the same ids and words, without loading the `tokenizers` library), other text by it."""
        fast = model.wordpiece.ascii_words(text)
        if fast is None:
            enc = model.tokenizer.encode(text)
            return list(enc.ids), _words(text, enc)
        ids, words = fast
        out = []
        for start, tokens in words:
            kept = [(p, end) for p, end in tokens if p < MAX_TOKENS]
            if kept:
                out.append((text[start : kept[-1][1]], tuple(p for p, _ in kept)))
        return ids, tuple(out)

    def image_cells(self, images: Sequence[Image.Image]) -> np.ndarray:
        from picscope.encoders import towers

        if not images:
            return np.zeros((0, 50, int(self.w["pca"].shape[0])), np.float32)
        batch = np.stack([towers.prepare_efficientnet(im) for im in images])
        return self.cells(towers.efficientnet().grid(batch))


def _words(text: str, encoding: object) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The words of `text` with the token positions (below MAX_TOKENS) each spans."""
    spans: dict[int, list[int]] = {}
    word_ids = getattr(encoding, "word_ids", [])
    for pos, wid in enumerate(word_ids):
        if wid is not None and pos < MAX_TOKENS:
            spans.setdefault(int(wid), []).append(pos)
    offsets = getattr(encoding, "offsets", [])
    out = []
    for idx in spans.values():
        start, end = offsets[idx[0]][0], offsets[idx[-1]][1]
        out.append((text[start:end], tuple(idx)))
    return tuple(out)


def load_from(folder: Path, version: str = VERSION) -> Verifier:
    from picscope.encoders.modelcache import file_digest

    weights_file, meta_file = folder / f"{version}.npz", folder / f"{version}.json"
    try:
        meta = json.loads(meta_file.read_text())
        digest = file_digest(weights_file)  # remembered by (path, size, mtime): a search process only stats it
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load the verifier from {folder}: {exc}") from exc
    pin = meta.get("sha256")
    if pin and pin != digest:
        raise EncoderError(f"{weights_file} does not match its recorded checksum (reinstall picscope)")
    return Verifier(_unpacked(weights_file, digest), meta, f"{version}@{digest[:12]}")


def _unpacked(weights_file: Path, digest: str) -> dict[str, np.ndarray]:
    """The weights as float32, unpacked once into the cache folder and memory-mapped after that: decompressing the
    float16 archive took ~30 ms of every search process that re-ranks."""
    from picscope.encoders.modelcache import load_arrays, save_arrays
    from picscope.paths import cache_dir

    cached = cache_dir() / f"{weights_file.stem}-{digest[:16]}-unpacked"
    loaded = load_arrays(cached)
    if loaded is not None:  # a memory map has at least one dimension: scalars are read back as 0-d arrays
        arrays, meta = loaded
        scalars = set(meta.get("scalars", []))
        return {k: np.asarray(v.reshape(())) if k in scalars else v for k, v in arrays.items()}
    try:
        with np.load(weights_file) as z:
            weights = {k: np.asarray(z[k], np.float32) for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise EncoderError(f"cannot load the verifier from {weights_file}: {exc}") from exc
    with contextlib.suppress(OSError):
        save_arrays(cached, weights, {"source": weights_file.name, "sha256": digest,
                                      "scalars": [k for k, v in weights.items() if v.ndim == 0]})
    return weights


@lru_cache(maxsize=1)
def load_verifier() -> Verifier:
    with _lock:
        return load_from(WEIGHTS_DIR)
