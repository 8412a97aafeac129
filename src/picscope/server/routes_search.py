"""Search (every request type) and "more like this"."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from PIL import Image

from picscope.arithmetic import QueryTerm, parse_term
from picscope.errors import ConfigError
from picscope.server.models import (
    MAX_K,
    MAX_QUERY,
    Digits,
    ErrorBody,
    QueryTermIn,
    Reference,
    SearchRequest,
    SearchResponse,
)
from picscope.server.state import AppState, get_state

router = APIRouter(prefix="/api", tags=["search"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 429, 503)
}

StateDep = Annotated[AppState, Depends(get_state)]


def jsonable(x: Any) -> Any:
    """A plain-JSON copy: numpy scalars become numbers, NaN/inf become null, unknown objects strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set):
        return [jsonable(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if hasattr(x, "dtype") and x.dtype.kind in "iu":
        return int(x)
    return f if math.isfinite(f) else None


def check_window(state: AppState, k: int, offset: int) -> None:
    limit = min(MAX_K, state.settings.max_k)
    if k + offset > limit:
        raise HTTPException(400, f"k + offset = {k + offset} exceeds the limit of {limit} results per request")


def check_text(state: AppState, text: str) -> str:
    if len(text) > state.settings.max_query_chars:
        raise HTTPException(400, f"query too long ({len(text)} characters; the limit is "
                            f"{state.settings.max_query_chars})")
    if not text.strip():
        raise HTTPException(400, "empty query: type what you are looking for")
    return text.strip()


def reference_value(state: AppState, ref: Reference | None) -> int | Image.Image | None:
    if ref is None:
        return None
    if ref.id is not None:
        state.images.record(ref.id)  # 404 for an unknown id
        return ref.id
    assert ref.upload is not None
    return state.uploads.image(ref.upload)


def query_terms(state: AppState, terms: list[QueryTermIn | str]) -> list[QueryTerm]:
    """REST terms → query-arithmetic terms: text, `WEIGHT:text`, `id:N`, or objects; never a server file."""
    out: list[QueryTerm] = []
    for t in terms:
        try:
            check_text(state, t if isinstance(t, str) else t.text or "-")  # the server's length limit
            if isinstance(t, str):
                term = parse_term(t, files=False)
                if isinstance(term.value, int):
                    state.images.record(term.value)  # 404 for an unknown id
                out.append(term)
            elif t.text is not None:
                out.append(QueryTerm(t.text, t.weight, "text"))
            elif t.id is not None:
                state.images.record(t.id)
                out.append(QueryTerm(t.id, t.weight))
            else:
                assert t.upload is not None
                out.append(QueryTerm(state.uploads.image(t.upload), t.weight))
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
    return out


def run_search(state: AppState, req: SearchRequest) -> SearchResponse:
    from picscope.pipeline import Request as PipelineRequest
    from picscope.pipeline import run_deduped

    spec = req.pipeline or state.settings.default_pipeline
    if spec not in state.settings.pipelines:
        raise HTTPException(400, f"this server does not run the {spec} pipeline (it runs: "
                            f"{', '.join(state.settings.pipelines)})")
    stages = tuple(sorted(set(req.stages))) if req.stages is not None else None
    if spec == "encoder" and stages:
        raise HTTPException(400, "stages apply to the imagescope pipeline; leave them out for encoder search")
    if spec != "encoder" and (req.add or req.subtract or req.min_relevance is not None):
        raise HTTPException(400, "add, subtract and min_relevance apply to the encoder pipeline")
    if req.min_relevance is not None and state.library.calibration is None:
        raise HTTPException(400, "this library's encoder has no relevance calibration; leave out min_relevance")
    if req.min_relevance is not None and (req.reference is not None or req.add or req.subtract):
        raise HTTPException(400, "relevance is calibrated for text queries only (no reference, add or subtract)")
    t0 = time.perf_counter()
    ref = reference_value(state, req.reference)
    pipe = state.pipeline(spec, stages)
    preq = PipelineRequest(req.text, reference=ref, turns=list(req.turns), add=query_terms(state, req.add),
                           subtract=query_terms(state, req.subtract))
    want = req.k + req.offset
    try:
        if req.dedupe:
            out = run_deduped(state.library, pipe, preq, want, exclude_ids=tuple(req.exclude_ids), stages=stages)
        else:
            out = pipe.run(preq, want, exclude_ids=tuple(req.exclude_ids), stages=stages)
    except ConfigError as exc:  # e.g. terms that cancel the query out
        raise HTTPException(400, str(exc)) from None
    results = out.results
    if req.min_relevance is not None:
        results = [r for r in results if r.relevance is not None and r.relevance >= req.min_relevance]
    results = results[req.offset : req.offset + req.k]
    return SearchResponse(results=state.items(results), query=req.text, pipeline=getattr(pipe, "name", spec),
                          stages=list(out.stages), model_calls=int(out.model_calls),
                          seconds=round(time.perf_counter() - t0, 4), explanation=jsonable(out.to_dict()))


@router.get("/search", response_model=SearchResponse, responses=ERRORS, summary="Text search")
async def search_get(
    state: StateDep,
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, pattern=r"\S", description="what you are looking for")],
    k: Annotated[int, Digits, Query(ge=1, le=MAX_K)] = 24,
    offset: Annotated[int, Digits, Query(ge=0, le=MAX_K)] = 0,
    ref: Annotated[int | None, Digits, Query(ge=1, le=2**62, description="library id of a reference photo")] = None,
    upload: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$", description="uploaded reference photo")] = None,
    add: Annotated[list[str] | None, Query(max_length=MAX_QUERY, description="query arithmetic: add a term "
                                           "(text, WEIGHT:text or id:N; repeatable)")] = None,
    subtract: Annotated[list[str] | None, Query(max_length=MAX_QUERY, description="query arithmetic: subtract a "
                                                "term (repeatable)")] = None,
    min_relevance: Annotated[float | None, Query(ge=0, le=1, description="calibrated relevance threshold")] = None,
    dedupe: Annotated[bool, Query(description="fold copies and near-identical images into one result")] = False,
) -> SearchResponse:
    """`GET /api/search?q=TEXT&k=N` (encoder pipeline). With `ref` or `upload` it is a composed search."""
    text = check_text(state, q)
    check_window(state, k, offset)
    if ref is not None and upload is not None:
        raise HTTPException(400, "give ref or upload, not both")
    reference = Reference(id=ref) if ref is not None else Reference(upload=upload) if upload is not None else None
    if len(add or []) + len(subtract or []) > 40:
        raise HTTPException(400, "at most 20 added and 20 subtracted terms")
    req = SearchRequest(text=text, k=k, offset=offset, reference=reference, add=list(add or []),
                        subtract=list(subtract or []), min_relevance=min_relevance, dedupe=dedupe)
    if uses_models(state, req):
        return await state.run_models(request, run_search, state, req)
    return await state.work.run(run_search, state, req)


@router.post("/search", response_model=SearchResponse, responses=ERRORS, summary="Any search")
async def search_post(state: StateDep, body: SearchRequest, request: Request) -> SearchResponse:
    """Text, composed (`reference` + the change as `text`) or dialogue (`turns`) search through a pipeline;
    `pipeline: imagescope` with `stages` runs the language-guided stages (slow; needs the model backends: they
    run in their own pool, under the model budget, and are cancelled when the client goes away)."""
    body.text = check_text(state, body.text)
    check_window(state, body.k, body.offset)
    for t in body.turns:
        check_text(state, t)
    if uses_models(state, body):
        return await state.run_models(request, run_search, state, body)
    return await state.work.run(run_search, state, body)


def uses_models(state: AppState, req: SearchRequest) -> bool:
    spec = req.pipeline or state.settings.default_pipeline
    return spec == "imagescope" and req.stages != []


def run_similar(state: AppState, file_id: int | None, upload: str | None, k: int, offset: int) -> SearchResponse:
    t0 = time.perf_counter()
    lib = state.library
    if file_id is not None:
        state.images.record(file_id)
        hits = lib.similar(file_id, k + offset)
        source: dict[str, Any] = {"id": file_id}
    else:
        assert upload is not None
        hits = lib.similar(state.uploads.image(upload), k + offset)
        source = {"upload": upload}
    results = hits[offset : offset + k]
    return SearchResponse(results=state.items(results), query="", pipeline="similar", stages=[], model_calls=0,
                          seconds=round(time.perf_counter() - t0, 4),
                          explanation={"pipeline": "similar", "reference": source,
                                       "query_text": "images that look like the reference (image embedding)"})


@router.get("/similar", response_model=SearchResponse, responses=ERRORS, summary="More like this")
async def similar(
    state: StateDep,
    id: Annotated[int | None, Digits, Query(ge=1, le=2**62, description="library id")] = None,
    upload: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$", description="upload id")] = None,
    k: Annotated[int, Digits, Query(ge=1, le=MAX_K)] = 24,
    offset: Annotated[int, Digits, Query(ge=0, le=MAX_K)] = 0,
) -> SearchResponse:
    """Images that look like a library image (`id`) or an uploaded photo (`upload`); the image itself is left out."""
    if (id is None) == (upload is None):
        raise HTTPException(400, "give exactly one of id or upload")
    check_window(state, k, offset)
    return await state.work.run(run_similar, state, id, upload, k, offset)
