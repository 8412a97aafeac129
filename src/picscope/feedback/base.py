"""Shared types of relevance feedback (issue: interactive retrieval sessions).

A `FeedbackStrategy` turns the marks of one round into a new query state. Strategies are built by
`picscope.feedback.make_strategy(name, library, ...)`; names: `none`, `rocchio`, `caption`
(captions without the LLM denoiser), `rewrite` (captions + LLM denoiser), `combined`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class FeedbackState:
    original_query: str
    query_text: str  # the current (possibly rewritten) text query
    query_vector: np.ndarray  # the vector the next round searches with
    positives: list[int] = field(default_factory=list)  # every id marked relevant so far
    negatives: list[int] = field(default_factory=list)  # every id marked not relevant so far
    negative_propositions: list[str] = field(default_factory=list)  # "expected false" checks for stage 2
    round: int = 0
    notes: list[str] = field(default_factory=list)  # why the query changed, one line per round
    model_calls: int = 0
    anchor_vector: np.ndarray | None = None  # the round-0 query vector (e.g. of a composed query)
    fallback: str | None = None  # set when the last update fell back (e.g. the LLM failed → embedding feedback)
    captions: dict[int, str] = field(default_factory=dict)  # captions computed so far (id → text), reused


@runtime_checkable
class FeedbackStrategy(Protocol):
    name: str

    def update(self, state: FeedbackState, new_positives: list[int], new_negatives: list[int]) -> FeedbackState:
        """Return the next state (never mutate `state`); must not raise on model failures (fall back)."""
        ...


class HasVectorParts(Protocol):
    @property
    def vector_parts(self) -> dict[str, tuple[int, int]] | None: ...


@runtime_checkable
class VectorSource(Protocol):
    """What embedding feedback (Rocchio) reads: stored vectors by id, text embeddings, and the encoder's named
    vector parts. A `Library` is one; so is a small in-memory test double."""

    @property
    def encoder(self) -> HasVectorParts: ...

    def vectors(self, ids: Sequence[int]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
