"""Keep the person's words: the next page's candidates are checked against the original request.

Feedback moves the query vector towards the photos marked relevant, but a pooled vector does not say which of
their traits the person asked for: after "a dog running in the snow" with snowy dog photos marked, a move towards
"dogs" in general loses the snow. `RequestCheck` re-ranks the top `candidates` unseen results of the moved query
by a vision model's judgement of the *original request* — with the bundled verifier each word of the request
attends to the photo's 7×7 cells, evidence the pooled vectors do not have — fused as stage 3 of the pipeline
fuses its judge: z(feedback score) + weight · z(judge log-odds), within the candidates.

Only a vision model with evidence of its own runs the check (`answers_from_encoder` False: `bundled`, `openai:`
VLMs); `socratic` answers from the same vectors, so it would add nothing. A failing model leaves the order as it
was and says why (`last_error`). Measured in docs/sessions.md ("Keeping the request").
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from picscope.library import Library, SearchResult

CANDIDATES = 30  # unseen results re-ranked per round (the bundled verifier: ~20 ms per photo not seen before)
WEIGHT = 1.0  # of the judge's z-score against the feedback score's (tuned on dev: docs/sessions.md)


def _z(values: list[float]) -> np.ndarray:
    a = np.asarray(values, np.float64)
    sd = float(a.std()) if a.size else 0.0
    return (a - a.mean()) / sd if sd > 1e-9 else np.zeros_like(a)


def _log_odds(p: float) -> float:
    p = min(max(float(p), 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


@dataclasses.dataclass
class RequestCheck:
    """Re-ranks a round's candidates by the vision model's judgement of `request` (see the module docstring)."""

    vision: Any
    request: str
    candidates: int = CANDIDATES
    weight: float = WEIGHT
    last_error: str | None = None

    @staticmethod
    def usable(vision: Any) -> bool:
        """Whether `vision` brings evidence of its own (a model that answers from the encoder's vectors does not)."""
        return vision is not None and not vision.answers_from_encoder

    def rerank(self, library: Library, results: list[SearchResult]) -> list[SearchResult]:
        """`results` with the top `candidates` re-ordered (the rest unchanged); ranks renumbered from 1."""
        from picscope.pipeline.captions import load_view  # the one safe decode path for vision models

        self.last_error = None
        top, rest = results[: self.candidates], results[self.candidates :]
        if len(top) < 2 or self.weight == 0.0:
            return results
        try:  # the library's stored evidence (the bundled verifier: cells, no decode), else the decoded photos
            verdicts = self.vision.judge_ids(library, self.request, [r.id for r in top])
            if verdicts is None:
                verdicts = self.vision.judge(self.request, [load_view(library, r.id) for r in top])
            if len(verdicts) != len(top):
                raise ValueError(f"the judge scored {len(verdicts)} of {len(top)} candidates")
        except Exception as exc:  # the check is a refinement: without it the feedback order stands
            self.last_error = f"request check skipped ({type(exc).__name__}: {exc})"
            return results
        fused = _z([r.score for r in top]) + self.weight * _z([_log_odds(v.score) for v in verdicts])
        order = np.argsort(-fused, kind="stable")
        out = [top[int(i)] for i in order] + rest
        return [dataclasses.replace(r, rank=n) for n, r in enumerate(out, start=1)]
