"""Which reasoner writes the target descriptions and propositions: the one place `auto` is resolved.

`rules` (deterministic templates), `llm` (the chat model), `auto` (default): the LLM when it is one the user
configured (an `openai:` endpoint or a `gguf:` file), the rules when the chat backend declares itself a weak
reasoner (the bundled tiny models, whose descriptions cost recall; see docs/pipeline.md).
"""

from __future__ import annotations

from collections.abc import Callable

from picscope.errors import ConfigError
from picscope.models import CHATS, WEAK_REASONER
from picscope.specs import SpecRegistry

AUTO_RULES_NOTE = ("reasoner auto: the rules reasoner, because the bundled LLM's descriptions measured below the "
                   "rules on Flickr8k dev (set [pipeline] reasoner = \"llm\" to use it anyway)")

ReasonerChoice = Callable[[str | None], str]
REASONERS: SpecRegistry[ReasonerChoice] = SpecRegistry("reasoner", ConfigError)


@REASONERS.register("rules", summary="deterministic templates over the request (no model calls)")
def _rules(chat_spec: str | None) -> str:
    return "rules"


@REASONERS.register("llm", summary="the chat model rewrites the request and writes the propositions")
def _llm(chat_spec: str | None) -> str:
    return "llm"


@REASONERS.register("auto", summary="llm, unless there is none or its backend declares itself a weak reasoner")
def _auto(chat_spec: str | None) -> str:
    return "rules" if not chat_spec or CHATS.has(chat_spec, WEAK_REASONER) else "llm"


def resolve_reasoner(reasoner: str, chat_spec: str | None) -> str:
    """`rules` or `llm` for the configured `reasoner` and the chat model's spec (None: no chat model)."""
    return REASONERS.entry(reasoner).build(chat_spec)


def choose_reasoner(reasoner: str, chat_spec: str | None) -> tuple[str, str | None]:
    """(the reasoner, the note to show with every result when `auto` fell back to the rules)."""
    chosen = resolve_reasoner(reasoner, chat_spec)
    return chosen, (AUTO_RULES_NOTE if reasoner == "auto" and chosen == "rules" else None)
