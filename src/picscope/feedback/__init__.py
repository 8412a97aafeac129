"""Relevance-feedback strategies behind one interface (`FeedbackStrategy`), built by name.

- `none`: keep the original query; the next round shows the next unseen page of the original ranking.
- `rocchio`: embedding feedback with positive and negative terms on the query vector; its weights adapt to how
  alike the relevant images are (and, with the bundled encoder, differ per vector part).
- `rocchio-classic`: the same with fixed weights (α=1, β=0.75, γ=0.15) on the whole vector.
- `caption`: the direction of the relevant images' captions added to the query vector (no denoiser).
- `rewrite`: captions + a denoiser that rewrites the query around the user's words; the rewritten text's vector is
  fused with the request's. The denoiser is `rules` (no model call) or `llm` (the chat model; falls back to
  rocchio when it fails, and says so), chosen as the pipeline chooses its reasoner (`choose_denoiser`).
- `combined`: rewrite + rocchio.

`caption`, `rewrite` and `combined` need a vision model (captions); `rewrite` and `combined` with the `llm`
denoiser also a chat model. Pass them as `vision=` / `llm=`, or leave them out to build the offline defaults
through `picscope.models`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from picscope.errors import ConfigError
from picscope.feedback.base import FeedbackState, FeedbackStrategy
from picscope.feedback.rocchio import NoFeedback, Rocchio
from picscope.feedback.text import CaptionExpansion, Combined, LLMDenoiser, Rewrite, RulesDenoiser

if TYPE_CHECKING:
    from picscope.library import Library

__all__ = ["NAMES", "FeedbackState", "FeedbackStrategy", "choose_denoiser", "default_models", "make_strategy"]

NAMES = ("none", "rocchio", "rocchio-classic", "caption", "rewrite", "combined")


def default_models(library: Library, *, need_llm: bool = True) -> tuple[Any, Any]:
    """(chat model, vision model) from the offline defaults of `picscope.models`, or a clear ConfigError;
    `need_llm=False` builds no chat model (None)."""
    try:
        from picscope.models import DEFAULT_CHAT_SPEC, DEFAULT_VISION_SPEC, make_chat_model, make_vision_model
    except ImportError as exc:
        raise ConfigError(f"the model backends are not available in this build ({exc}); pass llm= and vision=") from exc
    chat = make_chat_model(DEFAULT_CHAT_SPEC) if need_llm else None
    vision = make_vision_model(DEFAULT_VISION_SPEC, chat=chat, encoder=library.encoder)
    return chat, vision


def choose_denoiser(library: Library, llm: Any = None, denoiser: str | None = None) -> tuple[str, str | None]:
    """(`rules` or `llm`, the chat spec it was decided on) for `rewrite`/`combined`, resolved exactly as the
    pipeline resolves its reasoner (`picscope.pipeline.reasoner`): `denoiser` if given, else the library's
    `[pipeline] reasoner` (default `auto`); `auto` is the LLM only when the chat model is one the user configured
    (`openai:`, `gguf:`, or a model object passed as `llm=`), the rules for the bundled tiny LLM or none."""
    from picscope.pipeline.reasoner import resolve_reasoner

    config = getattr(library, "config", None)
    choice = denoiser or getattr(getattr(config, "pipeline", None), "reasoner", None) or "auto"
    if llm is None:
        spec = getattr(config, "llm", None)
    else:
        spec = llm if isinstance(llm, str) else getattr(llm, "spec", None) or "model-object"
    return resolve_reasoner(choice, spec), spec


def _chat_model(spec: str) -> Any:
    try:
        from picscope.models import make_chat_model
    except ImportError as exc:
        raise ConfigError(f"the model backends are not available in this build ({exc}); pass llm=") from exc
    return make_chat_model(spec)


def make_strategy(name: str, library: Library, *, llm: Any = None, vision: Any = None, denoiser: str | None = None,
                  **kw: Any) -> FeedbackStrategy:
    """The strategy `name` (see `NAMES`). `denoiser` (`auto`, `rules`, `llm`) picks how `rewrite`/`combined`
    rewrite the request (default: the library's `[pipeline] reasoner`, see `choose_denoiser`)."""
    if name == "none":
        return NoFeedback()
    if name == "rocchio":
        return Rocchio(library, **kw)
    if name == "rocchio-classic":
        return Rocchio(library, adaptive=False, **kw)
    if name == "caption":
        if vision is None:
            vision = default_models(library, need_llm=False)[1]
        return CaptionExpansion(library, vision, **kw)
    if name in ("rewrite", "combined"):
        chosen, spec = choose_denoiser(library, llm, denoiser)
        if chosen == "llm" and (llm is None or isinstance(llm, str)):
            llm = _chat_model(spec) if spec else default_models(library)[0]
        if vision is None:
            vision = default_models(library, need_llm=False)[1]
        limits = {k: kw.pop(k) for k in ("max_words", "timeout") if k in kw}
        rewriter: RulesDenoiser | LLMDenoiser
        if chosen == "llm":
            rewriter = LLMDenoiser(llm, **limits)
        else:
            rewriter = RulesDenoiser(**{k: v for k, v in limits.items() if k == "max_words"})
        if name == "rewrite":
            return Rewrite(library, vision, rewriter, **kw)
        return Combined(library, vision, rewriter, **kw)
    raise ConfigError(f"unknown feedback strategy {name!r}; available: {', '.join(NAMES)}")
