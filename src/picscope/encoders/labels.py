"""`labels`: zero-shot retrieval in ImageNet label space (the baseline that needs no training).

An image becomes sqrt(p), p = its EfficientNet-Lite0 class probabilities; a text becomes sqrt(w),
w = softmax over the 1000 class names of MiniLM(text)·MiniLM("a photo of a <class>") / T.
Both are unit vectors, so the dot product is the Bhattacharyya coefficient of two class
distributions, in [0, 1]. It knows only the 1000 ImageNet classes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.encoders import towers
from picscope.encoders.base import BaseEncoder
from picscope.encoders.modelcache import atomic_write, progress
from picscope.paths import cache_dir

if TYPE_CHECKING:
    from PIL import Image  # imported where an image is prepared: a text search never loads PIL


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def label_cache_key() -> str:
    """Names the cached label-prompt embeddings: the MiniLM weights' digest (remembered, so a new process only
    stats the weights file)."""
    from picscope.encoders.modelcache import file_digest

    return f"minilm-{file_digest(towers.minilm_folder() / 'model.safetensors')[:12]}"


class LabelSpaceEncoder(BaseEncoder):
    dim = 1000
    image_size = towers.IMAGE_SIZE

    def __init__(self, temperature: float = 0.05) -> None:
        self.temperature = temperature
        self.name = f"labels/efficientnet-lite0+minilm-l6/t{temperature:g}"
        self._label_emb: np.ndarray | None = None

    def label_embeddings(self) -> np.ndarray:
        if self._label_emb is None:
            cache = cache_dir() / f"labels-{label_cache_key()}.npy"
            try:
                emb = np.load(cache)
                if emb.shape != (1000, towers.MiniLMTower.dim):
                    raise ValueError("stale cache")
            except (OSError, ValueError):
                progress("preparing the label embeddings (once)…")
                prompts = [f"a photo of a {c}" for c in towers.imagenet_classes()]
                emb = towers.minilm().encode(prompts)
                buf = io.BytesIO()
                np.save(buf, emb)
                atomic_write(cache, buf.getvalue())
            self._label_emb = emb
        return self._label_emb

    def prepare_image(self, image: Image.Image) -> Any:
        return towers.prepare_efficientnet(image)

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        _, logits = towers.efficientnet().forward(np.stack(prepared))
        return np.sqrt(_softmax(logits.astype(np.float64))).astype(np.float32)

    def embed_prepared_grid(self, prepared: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        if not prepared:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 49, 1280), np.float32)
        _, logits, grid = towers.efficientnet().forward_grid(np.stack(prepared))
        return np.sqrt(_softmax(logits.astype(np.float64))).astype(np.float32), grid

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        q = towers.minilm().encode(list(texts))
        sims = q @ self.label_embeddings().T
        return np.sqrt(_softmax(sims.astype(np.float64) / self.temperature)).astype(np.float32)
