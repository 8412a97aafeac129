"""Frozen-tower features for the vision models, computed once and cached on disk.

Image: EfficientNet-Lite0's 7×7 head cells before pooling, (n, 49, 1280) float16 (about 125 KB per photo in
the cache; the models project them to a small width). Text: MiniLM's last-layer token states, ragged:
(tokens, 384) float16 rows plus (n + 1) offsets and the token ids. Both are computed exactly as the models'
inference paths compute them (`EfficientNetTower.grid`, `NumpyMiniLM.hidden`), so training sees the numbers
users' queries will produce.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from picscope.encoders import towers
from picscope.encoders.effnet import ONNX_VERSION
from picscope.imageio import load_image
from picscope.paths import cache_dir
from picscope.training.features import _key

GRID_VERSION = f"grid-1-{ONNX_VERSION}"


def image_grids(paths: Sequence[Path], *, batch_size: int = 16,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n, 49, 1280) float16 cells for the images (memory-mapped from the cache once computed)."""
    cache = cache_dir() / "features" / f"grid-{_key([str(p) for p in paths], GRID_VERSION)}.npy"
    if cache.exists():
        return np.load(cache, mmap_mode="r")
    tower = towers.efficientnet()

    def prep(p: Path) -> np.ndarray:
        return towers.prepare_efficientnet(load_image(str(p), target_size=towers.IMAGE_SIZE))

    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(paths), 49, 1280))
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(paths), batch_size):
            batch = np.stack(list(pool.map(prep, paths[start : start + batch_size])))
            out[start : start + len(batch)] = tower.grid(batch).astype(np.float16)
            if progress:
                progress(len(batch))
    out.flush()
    del out
    os.replace(tmp, cache)
    return np.load(cache, mmap_mode="r")


def token_states(texts: Sequence[str], *, batch_size: int = 64,
                 progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """{"states": (tokens, 384) float16, "offsets": (n + 1,) int64, "ids": (tokens,) int32} for the texts."""
    cache = cache_dir() / "features" / f"tok-{_key(list(texts), 'minilm-hidden-1')}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    model = towers.minilm().numpy
    ids = model.tokenize(texts)
    lengths = np.array([len(t) for t in ids], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    states = np.zeros((int(offsets[-1]), model.dim), np.float16)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        length = int(lengths[chunk].max())
        tok = np.zeros((len(chunk), length), np.int64)
        mask = np.zeros((len(chunk), length), np.float32)
        for row, j in enumerate(chunk):
            tok[row, : lengths[j]] = ids[j]
            mask[row, : lengths[j]] = 1
        hidden = model.hidden(tok, mask)
        for row, j in enumerate(chunk):
            states[offsets[j] : offsets[j + 1]] = hidden[row, : lengths[j]]
        if progress:
            progress(len(chunk))
    data = {"states": states, "offsets": offsets,
            "ids": np.concatenate([np.asarray(t, np.int32) for t in ids]) if ids else np.zeros(0, np.int32)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)  # type: ignore[arg-type]
    os.replace(tmp, cache)
    return data
