"""Relevance-feedback strategies behind one interface (`FeedbackStrategy`), built by name.

Available now: `none` (keep the original query: the next round shows the next unseen page of the original
ranking) and `rocchio` (embedding feedback with positive and negative terms). The caption-expansion and LLM
query-rewriting strategies of the interactive-retrieval paper need the model backends and register here
when present.
"""

from __future__ import annotations

from typing import Any

from picscope.errors import ConfigError
from picscope.feedback.base import FeedbackState, FeedbackStrategy
from picscope.feedback.rocchio import NoFeedback, Rocchio

__all__ = ["FeedbackState", "FeedbackStrategy", "make_strategy"]

PLANNED = {"caption", "rewrite", "combined"}


def make_strategy(name: str, library: Any, **kw: Any) -> FeedbackStrategy:
    if name == "none":
        return NoFeedback()
    if name == "rocchio":
        return Rocchio(library, **kw)
    if name in PLANNED:
        raise ConfigError(
            f"feedback strategy {name!r} needs the caption/LLM backends, which this build does not have yet; "
            "available: none, rocchio"
        )
    raise ConfigError(f"unknown feedback strategy {name!r}; available: none, rocchio")
