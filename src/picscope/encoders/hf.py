"""`hf:<repo id or local folder>`: CLIP / SigLIP dual encoders through Hugging Face transformers.

Weights come from a local folder or the user's Hugging Face cache; nothing is downloaded unless
`PICSCOPE_ALLOW_DOWNLOAD=1` is set. Example: `hf:openai/clip-vit-base-patch32`, `hf:/models/siglip2-base`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from picscope.encoders.base import BaseEncoder, l2_normalise
from picscope.encoders.towers import configure_torch_threads
from picscope.errors import EncoderError


def _features(out: Any) -> Any:
    """transformers returns a tensor (<5) or a model output (>=5) from get_*_features."""
    if hasattr(out, "pooler_output") and out.pooler_output is not None:
        return out.pooler_output
    if hasattr(out, "image_embeds"):
        return out.image_embeds
    if hasattr(out, "text_embeds"):
        return out.text_embeds
    if isinstance(out, tuple | list):
        return out[0]
    return out


class HFDualEncoder(BaseEncoder):
    def __init__(self, model_id: str, device: str | None = None) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoProcessor
        except ImportError as exc:  # pragma: no cover
            raise EncoderError(f"hf: needs transformers and torch: pip install 'picscope[train]' ({exc})") from exc
        configure_torch_threads()
        local_only = os.environ.get("PICSCOPE_ALLOW_DOWNLOAD") != "1"
        try:
            self.model = AutoModel.from_pretrained(model_id, local_files_only=local_only).eval()
            self.processor = AutoProcessor.from_pretrained(model_id, local_files_only=local_only)
        except Exception as exc:
            raise EncoderError(
                f"hf:{model_id}: cannot load model/processor ({type(exc).__name__}: {exc}). "
                "Give a local folder or a repo already in the Hugging Face cache "
                "(set PICSCOPE_ALLOW_DOWNLOAD=1 to let transformers download it)."
            ) from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self._torch = torch
        cfg = self.model.config
        self.model_type = getattr(cfg, "model_type", "clip")
        proj = getattr(cfg, "projection_dim", None)
        text_cfg = getattr(cfg, "text_config", None)
        self.dim = int(proj or getattr(text_cfg, "hidden_size", 0) or 0)
        vision_cfg = getattr(cfg, "vision_config", None)
        self.image_size = int(getattr(vision_cfg, "image_size", 224))
        self.max_text_tokens = int(getattr(text_cfg, "max_position_embeddings", 77))
        self.name = f"hf:{model_id}"

    def prepare_image(self, image: Image.Image) -> Any:
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixel = self.processor(images=[image], return_tensors="np")["pixel_values"][0]
        return np.asarray(pixel, np.float32)

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        with torch.inference_mode():
            pixels = torch.from_numpy(np.stack(prepared)).to(self.device)
            feats = _features(self.model.get_image_features(pixel_values=pixels))
        return l2_normalise(feats.float().cpu().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        padding: Any = "max_length" if self.model_type.startswith("siglip") else True
        tok = self.processor(
            text=list(texts),
            return_tensors="pt",
            padding=padding,
            truncation=True,
            max_length=self.max_text_tokens,
        )
        inputs = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            feats = _features(self.model.get_text_features(**inputs))
        return l2_normalise(feats.float().cpu().numpy())
