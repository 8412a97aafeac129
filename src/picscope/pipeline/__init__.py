"""Language-guided retrieval pipelines: `make_pipeline(library, "encoder" | "imagescope")`.

    from picscope import Library
    from picscope.pipeline import Request, make_pipeline

    lib = Library.open("~/photos.picscope")
    out = make_pipeline(lib, "imagescope").run(Request("two dogs on a road"), k=10)
    out = make_pipeline(lib, "imagescope").run(Request("the same but at night", reference="ref.jpg"))
    out = make_pipeline(lib, "imagescope").run(Request("a man on a bike", turns=["is it raining? no"]))
"""

from __future__ import annotations

from typing import Any

from picscope.config import PipelineConfig
from picscope.errors import ConfigError
from picscope.library import Library
from picscope.pipeline.base import Pipeline, PipelineOutput, Request, run_deduped
from picscope.pipeline.encoder import EncoderPipeline
from picscope.pipeline.imagescope import ImageScopePipeline
from picscope.pipeline.reasoner import AUTO_RULES_NOTE, choose_reasoner, resolve_reasoner

__all__ = [
    "AUTO_RULES_NOTE",
    "EncoderPipeline",
    "ImageScopePipeline",
    "Pipeline",
    "PipelineOutput",
    "Request",
    "make_pipeline",
    "parse_stages",
    "resolve_reasoner",
    "run_deduped",
]


def parse_stages(text: str | None) -> tuple[int, ...] | None:
    """'1,2,3' / '1-3' / '12' / 'encoder' -> stages; None keeps the configured ones."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("", "encoder", "0", "none"):
        return ()
    if "-" in t:
        a, _, b = t.partition("-")
        nums = list(range(int(a), int(b) + 1)) if a.isdigit() and b.isdigit() else []
    else:
        nums = [int(c) for c in t.replace(",", " ").replace("+", " ").split()] if any(s in t for s in ", +") \
            else [int(c) for c in t if c.isdigit()]
    if not nums or any(n not in (1, 2, 3) for n in nums):
        raise ConfigError(f"--stages {text!r}: use stages 1-3, e.g. 1,2,3 or 1-2, or 'encoder'")
    return tuple(sorted(set(nums)))


def make_pipeline(library: Library, spec: str = "imagescope", *, stages: tuple[int, ...] | None = None,
                  llm: Any = None, vision: Any = None, config: PipelineConfig | None = None) -> Pipeline:
    """Build a pipeline. `llm` / `vision` are model objects or spec strings (default: the library's config);
    `stages=()` or spec `encoder` gives encoder-only retrieval."""
    spec = (spec or "imagescope").strip().lower()
    if spec == "encoder" or stages == ():
        return EncoderPipeline(library)
    if spec != "imagescope":
        raise ConfigError(f"unknown pipeline {spec!r}: use encoder or imagescope")
    cfg = (config or library.config.pipeline).model_copy()
    if stages is not None:
        cfg.stages = list(stages)
    from picscope.models import backend_options, make_chat_model, make_vision_model
    from picscope.pipeline.meter import MeteredChat

    llm_spec = llm if isinstance(llm, str) else llm.spec if llm is not None else library.config.llm
    cfg.reasoner, note = choose_reasoner(cfg.reasoner, llm_spec)  # before any model is built: rules need no LLM
    chat = None
    if cfg.reasoner == "llm" or vision is None or isinstance(vision, str):
        chat_spec = llm or library.config.llm
        chat_obj = llm if llm is not None and not isinstance(llm, str) else make_chat_model(
            chat_spec, **backend_options(chat_spec, library.config.models))
        chat = chat_obj if isinstance(chat_obj, MeteredChat) else MeteredChat(chat_obj)
    if vision is None or isinstance(vision, str):
        vision_spec = vision or library.config.vision
        vision = make_vision_model(vision_spec, chat=chat, encoder=library.encoder,
                                   **backend_options(vision_spec, library.config.models))
    pipe = ImageScopePipeline(library, cfg, chat=chat if cfg.reasoner == "llm" else None, vision=vision,
                              meter=chat)
    if note:
        pipe.standing_notes.append(note)
    return pipe
