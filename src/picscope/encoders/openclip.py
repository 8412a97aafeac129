"""`open-clip:<arch>/<pretrained>`: OpenCLIP models (e.g. `open-clip:ViT-B-32/laion2b_s34b_b79k`).

open_clip imports torchvision; PyPI torchvision does not import beside the CPU torch 2.13 build
(`operator torchvision::nms does not exist`). We install a tiny shim that skips torchvision's
fake-kernel registration before importing it, which is enough for open_clip's transforms. `pretrained`
may also be a local checkpoint path. Weights are never downloaded unless PICSCOPE_ALLOW_DOWNLOAD=1.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from picscope.encoders.base import BaseEncoder, l2_normalise
from picscope.encoders.towers import configure_torch_threads
from picscope.errors import EncoderError


def _import_open_clip() -> Any:
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    try:
        import open_clip
    except Exception as exc:
        raise EncoderError(
            "open-clip: needs `open-clip-torch` and torch (pip install 'picscope[train]' open-clip-torch "
            f"torch==2.13.0 in one command so pip does not replace torch): {type(exc).__name__}: {exc}"
        ) from exc
    return open_clip


class OpenClipEncoder(BaseEncoder):
    def __init__(self, arch: str, pretrained: str | None) -> None:
        open_clip = _import_open_clip()
        import torch

        configure_torch_threads()
        if os.environ.get("PICSCOPE_ALLOW_DOWNLOAD") == "1":
            os.environ["HF_HUB_OFFLINE"] = "0"
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        except Exception as exc:
            raise EncoderError(f"open-clip:{arch}/{pretrained}: cannot load: {type(exc).__name__}: {exc}") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self._torch = torch
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["x"])).shape[-1])
        self.image_size = 224
        self.name = f"open-clip:{arch}/{pretrained or 'random-init'}"

    def prepare_image(self, image: Image.Image) -> Any:
        return self.preprocess(image.convert("RGB")).numpy()

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        with torch.inference_mode():
            feats = self.model.encode_image(torch.from_numpy(np.stack(prepared)))
        return l2_normalise(feats.float().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        with torch.inference_mode():
            feats = self.model.encode_text(self.tokenizer(list(texts)))
        return l2_normalise(feats.float().numpy())
