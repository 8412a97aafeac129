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
class PipelineOutput:
    results: list[SearchResult]
    stages: list[int] = field(default_factory=list)  # stages that actually ran
    explanation: dict[str, Any] = field(default_factory=dict)
    model_calls: int = 0
    tokens: int = 0
    seconds: float = 0.0


def run_deduped(library: Library, pipeline: Pipeline, request: Request, k: int, *,
                exclude_ids: tuple[int, ...] = (), stages: tuple[int, ...] | None = None) -> PipelineOutput:
    """Run `pipeline` for more than `k` results, fold near-duplicates together (`similar_ids`), keep `k`."""
    out = pipeline.run(request, 3 * k + 16, exclude_ids=exclude_ids, stages=stages)
    out.results = library.collapse_duplicates(out.results)[:k]
    kept = {r.id: r for r in out.results}
    cands = out.explanation.get("candidates")
    if isinstance(cands, list):  # the explanation describes the folded ranking, not the longer one behind it
        shown = [c for c in cands if isinstance(c, dict) and c.get("id") in kept]
        for c in shown:
            r = kept[c["id"]]
            c["ranks"] = {**c.get("ranks", {}), "final": r.rank}
            c["similar_ids"] = list(r.similar_ids)
        out.explanation["candidates"] = sorted(shown, key=lambda c: c["ranks"]["final"])
    return out


@runtime_checkable
class Pipeline(Protocol):
    name: str

    def run(self, request: Request, k: int = 10, *, exclude_ids: tuple[int, ...] = (),
            stages: tuple[int, ...] | None = None) -> PipelineOutput: ...
