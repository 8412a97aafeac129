"""Relevance-feedback strategies behind one interface (`FeedbackStrategy`), built by name.

- `none`: keep the original query; the next round shows the next unseen page of the original ranking.
- `rocchio`: embedding feedback with positive and negative terms on the query vector; its weights adapt to how
  alike the relevant images are (and, with the bundled encoder, differ per vector part).
- `rocchio-classic`: the same with fixed weights (α=1, β=0.75, γ=0.15) on the whole vector.
- `caption`: captions of the images marked relevant appended to the query (no denoiser).
- `rewrite`: captions + an LLM denoiser that rewrites the query around the user's words (falls back to rocchio
  when the LLM fails, and says so).
- `combined`: rewrite + rocchio.

`caption`, `rewrite` and `combined` need a vision model (captions) and, for the last two, a chat model; pass them
as `vision=` / `llm=`, or leave them out to build the offline defaults through `picscope.models`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from picscope.errors import ConfigError
from picscope.feedback.base import FeedbackState, FeedbackStrategy
from picscope.feedback.rocchio import NoFeedback, Rocchio
from picscope.feedback.text import CaptionExpansion, Combined, LLMRewrite

if TYPE_CHECKING:
    from picscope.library import Library

__all__ = ["NAMES", "FeedbackState", "FeedbackStrategy", "default_models", "make_strategy"]

NAMES = ("none", "rocchio", "rocchio-classic", "caption", "rewrite", "combined")


def default_models(library: Library, *, need_llm: bool = True) -> tuple[Any, Any]:
    """(chat model, vision model) from the offline defaults of `picscope.models`, or a clear ConfigError."""
    try:
        from picscope.models import DEFAULT_CHAT_SPEC, DEFAULT_VISION_SPEC, make_chat_model, make_vision_model
    except ImportError as exc:
        raise ConfigError(f"the model backends are not available in this build ({exc}); pass llm= and vision=") from exc
    chat = make_chat_model(DEFAULT_CHAT_SPEC)
    vision = make_vision_model(DEFAULT_VISION_SPEC, chat=chat, encoder=library.encoder)
    return chat, vision


def make_strategy(name: str, library: Library, *, llm: Any = None, vision: Any = None, **kw: Any) -> FeedbackStrategy:
    if name == "none":
        return NoFeedback()
    if name == "rocchio":
        return Rocchio(library, **kw)
    if name == "rocchio-classic":
        return Rocchio(library, adaptive=False, **kw)
    if name in ("caption", "rewrite", "combined"):
        if vision is None or (llm is None and name != "caption"):
            d_llm, d_vision = default_models(library)
            llm = llm if llm is not None else d_llm
            vision = vision if vision is not None else d_vision
        if name == "caption":
            return CaptionExpansion(library, vision, **kw)
        if name == "rewrite":
            return LLMRewrite(library, llm, vision, **kw)
        return Combined(library, llm, vision, **kw)
    raise ConfigError(f"unknown feedback strategy {name!r}; available: {', '.join(NAMES)}")
