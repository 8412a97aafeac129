"""Interactive sessions: create, get, list, mark, undo, next round, back (`picscope.sessions.Session`)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Request

from picscope.server.images import version_tag
from picscope.server.models import (
    CreateSession,
    ErrorBody,
    MarkRequest,
    RemovedMark,
    RoundRequest,
    SessionList,
    SessionState,
    SessionSummary,
    ShownItem,
    UndoResponse,
)
from picscope.server.routes_search import check_text, reference_value
from picscope.server.state import AppState, get_state
from picscope.sessions import Session
from picscope.vectors import compose

router = APIRouter(prefix="/api/sessions", tags=["sessions"])
StateDep = Annotated[AppState, Depends(get_state)]
MODEL_STRATEGIES = ("caption", "rewrite", "combined")  # feedback strategies that call the LLM/VLM
SessionId = Annotated[str, Path(pattern=r"^[0-9a-f]{6,32}$", description="session id")]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 429, 503)
}


def session_state(state: AppState, s: Session) -> dict[str, Any]:
    raw = s.state()
    recs = state.library.catalog.get_many(p["id"] for p in raw["page"])
    page = []
    for p in raw["page"]:
        rec = recs.get(p["id"])
        tag = version_tag(rec) if rec is not None else None
        score = float(p["score"])
        page.append(ShownItem(number=p["number"], id=p["id"], path=p["path"], name=os.path.basename(p["path"]),
                              score=round(score, 5) if np.isfinite(score) else 0.0, round=p["round"],
                              mark=p["mark"], thumbnail_url=state.thumb_url(p["id"], tag),
                              image_url=state.image_url(p["id"], tag)))
    raw["page"] = page
    return raw


def _open(state: AppState, sid: str) -> Session:
    return Session.open(state.library, sid, llm=state.llm, vision=state.vision)


def _create(state: AppState, body: CreateSession) -> SessionState:
    vector = None
    options: dict[str, Any] = {}
    ref = reference_value(state, body.reference)
    if ref is not None:  # a composed start: text + reference photo, as the encoder pipeline combines them
        text_vec = np.asarray(state.library.embed_texts([body.query])[0], np.float32)
        ref_vec, _ = state.library.resolve_image(ref)
        vector = compose(text_vec, ref_vec)
        options["reference"] = body.reference.model_dump(exclude_none=True) if body.reference else None
    s = Session.create(state.library, body.query, strategy=body.strategy, page_size=body.page_size, vector=vector,
                       llm=state.llm, vision=state.vision, options=options)
    return SessionState(**session_state(state, s))


@router.post("", response_model=SessionState, status_code=201, responses=ERRORS, summary="Start a session")
async def create_session(state: StateDep, body: CreateSession, request: Request) -> SessionState:
    """Start a session: round 0 is searched and saved; mark results, then ask for the next round."""
    body.query = check_text(state, body.query)
    if body.strategy in MODEL_STRATEGIES:
        return await state.run_models(request, _create, state, body)
    return await state.work.run(_create, state, body)


@router.get("", response_model=SessionList, responses=ERRORS, summary="Saved sessions, newest first")
async def list_sessions(state: StateDep) -> SessionList:
    rows = Session.list_sessions(state.library, 50)
    return SessionList(sessions=[SessionSummary(**r) for r in rows])


def _get(state: AppState, sid: str) -> SessionState:
    return SessionState(**session_state(state, _open(state, sid)))


@router.get("/{session_id}", response_model=SessionState, responses=ERRORS, summary="A session's current round")
async def get_session(state: StateDep, session_id: SessionId) -> SessionState:
    return await state.work.run(_get, state, session_id)


def _mark(state: AppState, sid: str, body: MarkRequest) -> SessionState:
    s = _open(state, sid)
    s.mark(list(body.ids), body.relevant, round=body.round)
    return SessionState(**session_state(state, s))


@router.post("/{session_id}/marks", response_model=SessionState, responses=ERRORS, summary="Mark results")
async def mark(state: StateDep, session_id: SessionId, body: MarkRequest) -> SessionState:
    """Mark shown images relevant (`relevant: true`) or not relevant; the later mark of an image wins."""
    return await state.work.run(_mark, state, session_id, body)


def _undo(state: AppState, sid: str) -> UndoResponse:
    s = _open(state, sid)
    removed = s.undo()
    return UndoResponse(**session_state(state, s),
                        removed=[RemovedMark(id=m["id"], relevant=m["relevant"], round=m["round"]) for m in removed])


@router.post("/{session_id}/undo", response_model=UndoResponse, responses=ERRORS, summary="Undo the last marks")
async def undo(state: StateDep, session_id: SessionId) -> UndoResponse:
    return await state.work.run(_undo, state, session_id)


def _next(state: AppState, sid: str, body: RoundRequest) -> SessionState:
    s = _open(state, sid)
    s.next_round(round=body.round, allow_repeats=body.allow_repeats)
    return SessionState(**session_state(state, s))


@router.post("/{session_id}/next", response_model=SessionState, responses=ERRORS, summary="Refine: the next round")
async def next_round(state: StateDep, session_id: SessionId, body: RoundRequest, request: Request) -> SessionState:
    """Apply this round's marks (feedback strategy → new query) and show the next page of unseen images."""
    strategy = await state.work.run(lambda: _open(state, session_id).strategy_name)
    if strategy in MODEL_STRATEGIES:  # an LLM/VLM round: the model pool, budget and cancellation
        return await state.run_models(request, _next, state, session_id, body)
    return await state.work.run(_next, state, session_id, body)


def _back(state: AppState, sid: str, body: RoundRequest) -> SessionState:
    s = _open(state, sid)
    s.back(round=body.round)
    return SessionState(**session_state(state, s))


@router.post("/{session_id}/back", response_model=SessionState, responses=ERRORS, summary="Back one round")
async def back(state: StateDep, session_id: SessionId, body: RoundRequest) -> SessionState:
    return await state.work.run(_back, state, session_id, body)
