"""Embedding-level feedback: Rocchio, q' = α·q + β·mean(relevant) − γ·mean(not relevant), renormalised.

The original query vector stays the anchor (α), so a few clicks refine the query instead of replacing it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from picscope.feedback.base import FeedbackState


class NoFeedback:
    name = "none"

    def update(self, state: FeedbackState, new_positives: list[int], new_negatives: list[int]) -> FeedbackState:
        return dataclasses.replace(
            state,
            positives=[*state.positives, *new_positives],
            negatives=[*state.negatives, *new_negatives],
            round=state.round + 1,
            notes=[*state.notes, "no feedback: the query is unchanged"],
        )


class Rocchio:
    name = "rocchio"

    def __init__(
        self, library: Any, alpha: float = 1.0, beta: float = 0.75, gamma: float = 0.15
    ) -> None:
        self.library = library
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    def update(self, state: FeedbackState, new_positives: list[int], new_negatives: list[int]) -> FeedbackState:
        positives = [*state.positives, *new_positives]
        negatives = [*state.negatives, *new_negatives]
        original = state.anchor_vector
        if original is None:
            original = self.library.embed_texts([state.original_query])[0]
        q = self.alpha * original
        if positives:
            q = q + self.beta * self.library.vectors(positives).mean(axis=0)
        if negatives:
            q = q - self.gamma * self.library.vectors(negatives).mean(axis=0)
        q = (q / max(float(np.linalg.norm(q)), 1e-12)).astype(np.float32)
        note = f"rocchio: {len(positives)} relevant, {len(negatives)} not relevant so far"
        return dataclasses.replace(
            state,
            query_vector=q,
            positives=positives,
            negatives=negatives,
            round=state.round + 1,
            notes=[*state.notes, note],
        )
