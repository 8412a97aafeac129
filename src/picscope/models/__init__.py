"""Model backends: `make_chat_model(spec)` and `make_vision_model(spec)` (see `base.py` for the roles).

Chat specs: `bundled` (best installed bundled GGUF), `bundled:<name>` (`qwen2.5-coder-0.5b`, `smollm2-135m`),
`gguf:<path>`, `openai:<base url>#<model>`. Vision specs: `socratic` (offline composition; uses the chat model
and the dual encoder), `socratic:<chat spec>`, `socratic-lite` (the LLM writes captions only),
`openai:<base url>#<model>` (a VLM behind an OpenAI API), `bundled` (our trained verifier and captioner: no LLM).
"""

from __future__ import annotations

import threading
from typing import Any

from picscope.errors import ConfigError
from picscope.models.base import ChatModel, ChatResult, Message, Usage, Verdict, VisionModel

DEFAULT_CHAT_SPEC = "bundled"
DEFAULT_VISION_SPEC = "socratic"

__all__ = [
    "DEFAULT_CHAT_SPEC",
    "DEFAULT_VISION_SPEC",
    "ChatModel",
    "ChatResult",
    "Message",
    "Usage",
    "Verdict",
    "VisionModel",
    "backend_options",
    "make_chat_model",
    "make_vision_model",
]

_shared: dict[tuple[str, str], Any] = {}
_shared_lock = threading.Lock()


def make_chat_model(spec: str | None = None, *, shared: bool = True, **kw: Any) -> ChatModel:
    """Build a ChatModel. In-process GGUF models are shared per (spec, options) unless `shared=False`."""
    spec = (spec or DEFAULT_CHAT_SPEC).strip()
    kind, _, arg = spec.partition(":")
    if kind == "openai":
        from picscope.models.openai import OpenAIChat

        return OpenAIChat(spec, **kw)
    if kind not in ("bundled", "gguf"):
        raise ConfigError(f"unknown llm spec {spec!r}: use bundled, bundled:<name>, gguf:<path> or "
                          "openai:<base url>#<model>")
    key = (spec, repr(sorted(kw.items())))
    with _shared_lock:
        if shared and key in _shared:
            return _shared[key]
        from picscope.models.gguf import GgufChat

        if kind == "bundled":
            from picscope.models.bundled import resolve

            r = resolve(arg or None)
            model: ChatModel = GgufChat(r.path, spec=f"bundled:{r.model.name}", provenance=r.provenance, **kw)
        else:
            if not arg:
                raise ConfigError("gguf spec needs a path: gguf:/path/to/model.gguf")
            model = GgufChat(arg, **kw)
        if shared:
            _shared[key] = model
        return model


def backend_options(spec: str | None, config: Any) -> dict[str, Any]:
    """Factory keywords for an HTTP (`openai:`) spec from a `ModelsConfig` (deadline and breaker); {} for other
    backends (in-process models are not cut mid-call: the request's time budget skips their later calls)."""
    if not spec or not spec.strip().startswith("openai:") or config is None:
        return {}
    out: dict[str, Any] = {"breaker_failures": config.breaker_failures,
                           "breaker_cooldown_s": config.breaker_cooldown_s}
    if config.call_deadline_s is not None:
        out["timeout"] = config.call_deadline_s
    return out


def make_vision_model(spec: str | None = None, *, chat: ChatModel | None = None, encoder: Any = None,
                      **kw: Any) -> VisionModel:
    spec = (spec or DEFAULT_VISION_SPEC).strip()
    kind, _, arg = spec.partition(":")
    if kind in ("socratic", "socratic-lite"):
        from picscope.models.socratic import SocraticVision

        if kind == "socratic-lite":  # the LLM only writes captions; verify and judge use the encoder signal
            kw.setdefault("llm_weight", 0.0)
        return SocraticVision(chat or make_chat_model(arg or None), encoder, **kw)
    if kind == "openai":
        from picscope.models.chat_vision import ChatVision

        return ChatVision(make_chat_model(spec, **kw))
    if kind == "bundled" and not arg:
        from picscope.models.bundled_vision import BundledVision

        return BundledVision()
    raise ConfigError(f"unknown vision spec {spec!r}: use bundled, socratic, socratic-lite, socratic:<llm spec> or "
                      "openai:<base url>#<model>")
