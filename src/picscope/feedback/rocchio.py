"""Embedding-level feedback: Rocchio, q' = α⊙q + β⊙mean(relevant) − γ⊙mean(not relevant), renormalised.

The original query vector stays the anchor (α), so a few clicks refine the query instead of replacing it.

`rocchio` (the default) adapts its weights to what the clicks say:
- **Coherent positives** (mutually similar, like frames of one video clip): the classic weights, α=1, β=0.75,
  γ=0.15, on the whole vector. Pulling the query towards near-duplicates of what the user liked pays off.
- **Diverse positives** (one concept, very different photos, like "dog snow"): the mean of the relevant vectors
  is a weak direction, so it gets a smaller weight and the not-relevant images a larger one. When the encoder
  names the parts of its vectors (`DualEncoder.vector_parts`, as the bundled encoder does), each part gets its
  own weights: the positives move the caption-memory part most and the ImageNet-label part not at all, and
  the negatives push hardest on the labels.
The blend is set by the positives' mean pairwise cosine similarity c: t = clip((c − 0.55) / 0.20, 0, 1) and
weights = t·coherent + (1 − t)·diverse. One positive counts as diverse (t = 0); no positive gives t = 0.5.

The not-relevant images push only with what they do *not* share with the request: `rocchio` subtracts the part of
their mean that lies outside the span of the original query and the relevant images' mean (`outside`). A snow
photo without a dog marked not relevant for "a dog running in the snow" then pushes away "no dog", not "snow"
(the whole mean pushed the next page off snow: 0.9 → 0.6 of page 2 with snow, `bench_session_attributes.py
--negatives`; 0.9 kept with the projection). It also measured better on MSR-VTT (docs/sessions.md).

`rocchio-classic` keeps the fixed classic weights. The weights were chosen on Flickr8k dev concept queries and
the MSR-VTT frames in shared data; docs/sessions.md has the measurements, including a held-out query set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from picscope.feedback.base import FeedbackState, VectorSource
from picscope.vectors import outside, unit


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


@dataclass(frozen=True)
class Weights:
    alpha: float  # the original query
    beta: float  # the mean of the relevant vectors
    gamma: float  # the mean of the not-relevant vectors


CLASSIC = Weights(1.0, 0.75, 0.15)
# per vector part; "*" is every column no named part covers (the whole vector of an encoder without parts)
DIVERSE: dict[str, Weights] = {
    "*": Weights(1.0, 0.25, 0.5),
    "heads": Weights(1.0, 0.25, 0.5),
    "memory": Weights(1.0, 0.75, 0.5),
    "labels": Weights(0.5, 0.0, 0.75),
    "hub": Weights(1.0, 0.0, 0.0),
}
COHERENCE_RANGE = (0.55, 0.75)  # mean pairwise cosine of the positives: diverse at or below, coherent at or above
NO_POSITIVE_BLEND = 0.5


def weight_columns(dim: int, parts: Mapping[str, tuple[int, int]] | None, table: Mapping[str, Weights]
                   ) -> np.ndarray:
    """(3, dim): α, β, γ per column, from per-part weights (`table["*"]` for columns of no named part)."""
    default = table.get("*", CLASSIC)
    out = np.tile(np.array([[default.alpha], [default.beta], [default.gamma]], np.float32), (1, dim))
    for name, (start, stop) in (parts or {}).items():
        w = table.get(name, default)
        out[:, start:stop] = np.array([[w.alpha], [w.beta], [w.gamma]], np.float32)
    return out


def coherence(vectors: np.ndarray) -> float | None:
    """Mean pairwise cosine similarity of the rows (None for fewer than two)."""
    n = len(vectors)
    if n < 2:
        return None
    rows = unit(vectors)
    sims = rows @ rows.T
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def blend(c: float | None, n_positives: int, lo: float = COHERENCE_RANGE[0], hi: float = COHERENCE_RANGE[1]
          ) -> float:
    """t in [0, 1]: 1 = classic (coherent) weights, 0 = diverse weights."""
    if n_positives == 0:
        return NO_POSITIVE_BLEND
    if c is None:
        return 0.0
    return float(np.clip((c - lo) / max(hi - lo, 1e-9), 0.0, 1.0))


class Rocchio:
    """Adaptive Rocchio (see the module docstring). Passing alpha/beta/gamma, or `adaptive=False`, gives fixed
    classic weights on the whole vector."""

    name = "rocchio"

    def __init__(
        self,
        library: VectorSource,
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        *,
        adaptive: bool | None = None,
        diverse: Mapping[str, Weights] | None = None,
        coherence_range: tuple[float, float] = COHERENCE_RANGE,
        negatives_outside: bool | None = None,
    ) -> None:
        self.library = library
        fixed = alpha is not None or beta is not None or gamma is not None
        self.adaptive = (not fixed) if adaptive is None else adaptive
        self.classic = Weights(CLASSIC.alpha if alpha is None else alpha, CLASSIC.beta if beta is None else beta,
                               CLASSIC.gamma if gamma is None else gamma)
        self.diverse = dict(DIVERSE if diverse is None else diverse)
        self.coherence_range = coherence_range
        # the adaptive default pushes only with what the not-relevant images do not share with the request
        self.negatives_outside = self.adaptive if negatives_outside is None else negatives_outside
        self._columns: tuple[int, np.ndarray, np.ndarray] | None = None
        if not self.adaptive:
            self.name = "rocchio-classic" if not fixed else "rocchio"

    def _weights(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(classic, diverse) weight columns for vectors of `dim` columns (cached)."""
        if self._columns is None or self._columns[0] != dim:
            parts = self.library.encoder.vector_parts
            if parts and max(stop for _, stop in parts.values()) > dim:
                parts = None  # stored vectors of another layout: weight them as one space
            self._columns = (dim, weight_columns(dim, None, {"*": self.classic}),
                             weight_columns(dim, parts, self.diverse))
        return self._columns[1], self._columns[2]

    def update(self, state: FeedbackState, new_positives: list[int], new_negatives: list[int]) -> FeedbackState:
        positives = [*state.positives, *new_positives]
        negatives = [*state.negatives, *new_negatives]
        original = state.anchor_vector
        if original is None:
            original = self.library.embed_texts([state.original_query])[0]
        original = np.asarray(original, np.float32)
        pos = self.library.vectors(positives) if positives else None
        classic, diverse = self._weights(len(original))
        how = ""
        if self.adaptive:
            c = coherence(pos) if pos is not None else None
            t = blend(c, len(positives), *self.coherence_range)
            w = t * classic + (1.0 - t) * diverse
            kind = "coherent" if t >= 0.999 else "diverse" if t <= 0.001 else f"{t:.2f} coherent"
            how = f" (relevant images' mutual similarity {c:.2f}: {kind} weights)" if c is not None else \
                f" ({kind} weights)"
        else:
            w = classic
        q = w[0] * original
        if pos is not None:
            q = q + w[1] * pos.mean(axis=0)
        if negatives:
            neg = self.library.vectors(negatives).mean(axis=0)
            if self.negatives_outside:
                neg = outside(neg, [original] if pos is None else [original, pos.mean(axis=0)])
            q = q - w[2] * neg
        q = unit(q)
        note = f"{self.name}: {len(positives)} relevant, {len(negatives)} not relevant so far{how}"
        return dataclasses.replace(
            state,
            query_vector=q,
            positives=positives,
            negatives=negatives,
            round=state.round + 1,
            notes=[*state.notes, note],
        )
