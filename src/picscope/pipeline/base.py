"""Shared types of the retrieval pipeline (issue: the unified language-guided pipeline).

A `Request` is any way a person asks: text, reference image + change, or dialogue turns.
`make_pipeline(spec, library, ...)` (in `picscope.pipeline`) returns a `Pipeline`; `spec` is
`encoder` (plain dual-encoder search) or `imagescope` (stages 1-3) or a config file path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from picscope.library import Library, SearchResult


@dataclass
class Request:
    text: str
    reference: int | str | Path | Image.Image | None = None  # library id, file path, or image
    turns: list[str] = field(default_factory=list)  # dialogue turns after the opening `text`
    # query arithmetic (encoder pipeline): terms as `picscope.arithmetic.parse_term` reads them
    add: list[Any] = field(default_factory=list)
    subtract: list[Any] = field(default_factory=list)


@dataclass
class Candidate:
    """One candidate through the stages: its scores, the evidence of each stage and its rank after each
    (`ranks`: `stage1`, `stage2`, `stage3`, `final`)."""

    id: int
    path: str
    image_sim: float
    caption_sim: float | None = None
    caption: str | None = None
    match: float | None = None  # the verifier's P(match) when stage 1's re-rank scored it
    s1: float = 0.0
    s2: float | None = None
    s3: float | None = None
    answers: list[float] = field(default_factory=list)
    log_odds: float | None = None
    judge: float | None = None
    reason: str | None = None
    ranks: dict[str, int] = field(default_factory=dict)
    similar_ids: tuple[int, ...] | None = None  # set when near-duplicates were folded into this one

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "path": self.path, "ranks": dict(self.ranks),
                               "stage1": {"score": round(self.s1, 4), "image_sim": round(self.image_sim, 4)}}
        if self.match is not None:
            out["stage1"]["match"] = round(self.match, 4)
        if self.caption is not None:
            out["stage1"].update(caption=self.caption, caption_sim=round(float(self.caption_sim or 0), 4))
        if self.answers:
            out["stage2"] = {"p_yes": [round(p, 3) for p in self.answers], "log_odds": round(self.log_odds or 0.0, 3),
                             "score": round(self.s2 or 0.0, 3)}
        if self.judge is not None:
            out["stage3"] = {"judge": round(self.judge, 3), "reason": self.reason, "score": round(self.s3 or 0.0, 3)}
        if self.similar_ids is not None:
            out["similar_ids"] = list(self.similar_ids)
        return out


def stage_orders(candidates: list[Candidate], stages: list[int]) -> dict[int, list[int]]:
    """Candidate ids in their order after each stage that ran. A candidate outside a stage's window comes after
    it, in the previous stage's order."""
    orders: dict[int, list[int]] = {}
    for stage in stages:
        key = f"stage{stage}"

        def pos(c: Candidate, key: str = key) -> tuple[int, int]:
            if key in c.ranks:
                return (0, c.ranks[key])
            prev = [c.ranks[k] for k in ("stage2", "stage1") if k in c.ranks and k < key]
            return (1, prev[0] if prev else c.ranks.get("final", 10**6))

        orders[stage] = [c.id for c in sorted(candidates, key=pos)]
    return orders


@dataclass
class PipelineOutput:
    """What a pipeline returns. `candidates` (final order) and `stage_orders` are typed; `explanation` holds the
    rest of the account (request, intent, propositions, skipped stages, notes, config, cost). `to_dict()` is the
    one JSON form: `search --json --explain`, the REST API's `explanation` and static/explain.js read it."""

    results: list[SearchResult]
    stages: list[int] = field(default_factory=list)  # stages that actually ran
    explanation: dict[str, Any] = field(default_factory=dict)
    model_calls: int = 0
    tokens: int = 0
    seconds: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)
    stage_orders: dict[int, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.explanation, "candidates": [c.to_dict() for c in self.candidates]}


def run_deduped(library: Library, pipeline: Pipeline, request: Request, k: int, *,
                exclude_ids: tuple[int, ...] = (), stages: tuple[int, ...] | None = None) -> PipelineOutput:
    """Run `pipeline` for more than `k` results, fold near-duplicates together (`similar_ids`), keep `k`."""
    out = pipeline.run(request, 3 * k + 16, exclude_ids=exclude_ids, stages=stages)
    out.results = library.collapse_duplicates(out.results)[:k]
    kept = {r.id: r for r in out.results}
    # the explanation describes the folded ranking, not the longer one behind it
    shown = [c for c in out.candidates if c.id in kept]
    for c in shown:
        c.ranks = {**c.ranks, "final": kept[c.id].rank}
        c.similar_ids = tuple(kept[c.id].similar_ids)
    out.candidates = sorted(shown, key=lambda c: c.ranks["final"])
    return out


@runtime_checkable
class Pipeline(Protocol):
    name: str

    def run(self, request: Request, k: int = 10, *, exclude_ids: tuple[int, ...] = (),
            stages: tuple[int, ...] | None = None) -> PipelineOutput: ...
