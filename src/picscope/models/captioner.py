"""The `bundled` captioner: a caption for a photo in a few tens of milliseconds, offline, without torch.

A small transformer decoder over EfficientNet-Lite0's 7×7 head cells (`picscope.models.caption_decoder`),
trained on Flickr8k train by `picscope train-captioner` (`picscope.training.captioner`); beam search 3,
length-normalised. The weights (`models/weights/captioner-v1.npz`, int8/float16, SHA-256 pinned in
`captioner-v1.sha256`) are read on first use. See `models/weights/MODEL_CARD_CAPTIONER.md`.

    from picscope.models.captioner import load_captioner
    load_captioner().caption_images([Image.open("dog.jpg")])   # ["a black dog runs through the snow"]
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from picscope.errors import PicscopeError

if TYPE_CHECKING:
    from PIL import Image

    from picscope.models.caption_decoder import Decoder

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
VERSION = "captioner-v1"
WEIGHTS_NAME = f"{VERSION}.npz"


class CaptionerError(PicscopeError):
    """The captioner's weights are missing, corrupt or unreadable, or its input has the wrong shape."""


def _pinned_digest(path: Path) -> str:
    sums = path.with_suffix(".sha256")
    if not sums.exists():
        raise CaptionerError(f"captioner: {sums} is missing (reinstall picscope or re-run `picscope train-captioner`)")
    return sums.read_text().split()[0]


class BundledCaptioner:
    """Captions from the 7×7 cells (`caption_grids`) or from photos (`caption_images`). The weights load on the
    first caption; `name` pins them (`captioner-v1@<first 12 hex of their SHA-256>`)."""

    def __init__(self, weights: Path | str | None = None, *, beam: int = 3, max_words: int = 20,
                 batch_size: int = 32) -> None:
        self.path = Path(weights) if weights is not None else WEIGHTS_DIR / WEIGHTS_NAME
        if not self.path.exists():
            raise CaptionerError(f"captioner: weights file {self.path} is missing")
        self.digest = _pinned_digest(self.path)
        self.name = f"{VERSION}@{self.digest[:12]}"
        if beam < 1 or max_words < 1 or batch_size < 1:
            raise ValueError("beam, max_words and batch_size must be at least 1")
        self.beam, self.max_words, self.batch_size = beam, max_words, batch_size
        self._decoder: Decoder | None = None
        self._lock = threading.Lock()

    @property
    def decoder(self) -> Decoder:
        with self._lock:
            if self._decoder is None:
                self._decoder = self._load()
            return self._decoder

    def _load(self) -> Decoder:
        from picscope.models.caption_decoder import Decoder, unpack

        data = self.path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != self.digest:
            raise CaptionerError(f"captioner: {self.path} is corrupt (SHA-256 {actual[:16]}… does not match the "
                                 f"pinned {self.digest[:16]}…); reinstall picscope or re-run "
                                 "`picscope train-captioner`")
        import io

        try:
            with np.load(io.BytesIO(data)) as z:
                weights, vocab, cfg = unpack({k: z[k] for k in z.files})
        except (OSError, ValueError, KeyError) as exc:
            raise CaptionerError(f"captioner: cannot read {self.path}: {exc}") from exc
        return Decoder(weights, vocab, cfg)

    def caption_grids(self, grids: np.ndarray) -> list[str]:
        """(n, 49, 1280) cells (float16 or float32, `EfficientNetTower.grid`) → n captions."""
        grids = np.asarray(grids)
        dec = self.decoder
        shape = (dec.cfg.cells, dec.cfg.cell_dim)
        if grids.ndim != 3 or grids.shape[1:] != shape:
            raise CaptionerError(f"captioner: grids must have shape (n, {shape[0]}, {shape[1]}), not {grids.shape}")
        out: list[str] = []
        for start in range(0, len(grids), self.batch_size):
            chunk = np.asarray(grids[start : start + self.batch_size], np.float32)
            out.extend(dec.words(ids) for ids in dec.beam_search(chunk, self.beam, self.max_words))
        return out

    def caption_images(self, images: Sequence[Image.Image]) -> list[str]:
        """Photos (any mode or size; resized as the encoder resizes them) → captions."""
        if not images:
            return []
        from picscope.encoders import towers

        tower = towers.efficientnet()
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([towers.prepare_efficientnet(im) for im in images[start : start + self.batch_size]])
            out.extend(self.caption_grids(tower.grid(batch)))
        return out


@lru_cache(maxsize=1)
def load_captioner() -> BundledCaptioner:
    """The shipped captioner (one per process; its weights load on the first caption)."""
    return BundledCaptioner()


__all__ = ["BundledCaptioner", "CaptionerError", "load_captioner"]
