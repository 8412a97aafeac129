"""Frozen-tower features, computed once and cached on disk (a re-run of training is then cheap).

Image: EfficientNet-Lite0 pooled 1280-d features and 1000 logits, for the image and its horizontal flip
(a cheap augmentation for training). Text: MiniLM 384-d embeddings of every caption.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from picscope.encoders import towers
from picscope.imageio import load_image
from picscope.paths import cache_dir

FEATURE_VERSION = "v1"


def _key(items: Sequence[str], kind: str) -> str:
    h = hashlib.sha256()
    h.update(f"{kind}:{FEATURE_VERSION}".encode())
    for it in items:
        h.update(it.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _cached(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return data


def image_features(
    paths: Sequence[Path], *, batch_size: int = 16, progress: Callable[[int], None] | None = None
) -> dict[str, np.ndarray]:
    """{"pooled": (n,1280), "logits": (n,1000), "pooled_flip", "logits_flip"} for the images, cached."""
    cache = cache_dir() / "features" / f"img-{_key([str(p) for p in paths], 'effl0')}.npz"

    def build() -> dict[str, np.ndarray]:
        tower = towers.efficientnet()

        def prep(p: Path) -> tuple[np.ndarray, np.ndarray]:
            img = load_image(str(p), target_size=towers.IMAGE_SIZE)
            return towers.prepare_efficientnet(img), towers.prepare_efficientnet(ImageOps.mirror(img))

        out: dict[str, list[np.ndarray]] = {"pooled": [], "logits": [], "pooled_flip": [], "logits_flip": []}
        with ThreadPoolExecutor(2) as pool:
            for start in range(0, len(paths), batch_size):
                pairs = list(pool.map(prep, paths[start : start + batch_size]))
                a, la = tower.forward(np.stack([p[0] for p in pairs]))
                b, lb = tower.forward(np.stack([p[1] for p in pairs]))
                out["pooled"].append(a)
                out["logits"].append(la)
                out["pooled_flip"].append(b)
                out["logits_flip"].append(lb)
                if progress:
                    progress(len(pairs))
        return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}

    return _cached(cache, build)


def text_features(texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
    cache = cache_dir() / "features" / f"txt-{_key(list(texts), 'minilm')}.npz"

    def build() -> dict[str, np.ndarray]:
        tower = towers.minilm()
        parts = []
        for start in range(0, len(texts), 512):
            parts.append(tower.encode(list(texts[start : start + 512]), batch_size=128))
            if progress:
                progress(len(parts[-1]))
        return {"emb": np.concatenate(parts).astype(np.float32)}

    return _cached(cache, build)["emb"]


del Image
