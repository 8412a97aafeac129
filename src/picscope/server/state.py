"""What every route shares: the open library, the image and upload stores, the work limiters, the pipelines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from picscope.library import Library, SearchResult
from picscope.models.deadline import CallScope, call_scope
from picscope.server.follow import LibraryFollower
from picscope.server.images import LibraryImages, version_tag
from picscope.server.limits import WorkLimiter
from picscope.server.models import ResultItem
from picscope.server.settings import ServerSettings
from picscope.server.uploads import UploadStore


@dataclass
class AppState:
    library: Library
    settings: ServerSettings
    images: LibraryImages
    uploads: UploadStore
    work: WorkLimiter
    thumbs: WorkLimiter
    models: WorkLimiter  # LLM/VLM work: its own pool, never the encoder-only searches' slots
    follower: LibraryFollower | None = None  # notices another process re-indexing the library
    llm: Any = None  # model objects (or specs) for imagescope and the caption/rewrite session strategies
    vision: Any = None
    _pipelines: dict[tuple[str, tuple[int, ...] | None], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _scopes: set[CallScope] = field(default_factory=set)
    closing: bool = False

    def model_budget(self) -> float | None:
        if self.settings.model_budget_s is not None:
            return self.settings.model_budget_s
        return self.library.config.pipeline.max_seconds

    async def run_models(self, request: Request | None, fn: Callable[..., T], *args: Any) -> T:
        """Run model work in the model pool under one request scope (deadline = the model budget), cancelled
        when the client goes away or the server shuts down (calls in flight are cut; later ones fall back)."""
        scope = CallScope(self.model_budget())
        with self._lock:
            self._scopes.add(scope)
        if self.closing:
            scope.cancel()
        watcher = asyncio.ensure_future(_watch_disconnect(request, scope)) if request is not None else None
        try:
            return await self.models.run(_in_scope, scope, fn, *args)
        finally:
            if watcher is not None:
                watcher.cancel()
            with self._lock:
                self._scopes.discard(scope)

    def cancel_model_work(self) -> int:
        """Cut every model call in flight (shutdown). Returns how many requests were cancelled."""
        self.closing = True
        with self._lock:
            scopes = list(self._scopes)
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    def pipeline(self, spec: str, stages: tuple[int, ...] | None) -> Any:
        """A pipeline per (spec, stages), built once (imagescope loads models) and shared by requests."""
        from picscope.pipeline import make_pipeline

        key = (spec, stages if spec == "imagescope" else None)
        with self._lock:
            pipe = self._pipelines.get(key)
            if pipe is None:
                pipe = make_pipeline(self.library, spec, stages=stages, llm=self.llm, vision=self.vision)
                self._pipelines[key] = pipe
            return pipe

    def thumb_url(self, file_id: int, tag: str | None = None) -> str:
        return f"/api/images/{file_id}/thumbnail" + (f"?v={tag}" if tag else "")

    def image_url(self, file_id: int, tag: str | None = None) -> str:
        return f"/api/images/{file_id}" + (f"?v={tag}" if tag else "")

    def items(self, results: list[SearchResult]) -> list[ResultItem]:
        recs = self.library.catalog.get_many(r.id for r in results)
        out = []
        for r in results:
            rec = recs.get(r.id)
            tag = version_tag(rec) if rec is not None else None
            out.append(ResultItem(id=r.id, score=round(float(r.score), 5), rank=r.rank, path=r.path,
                                  relevance=None if r.relevance is None else round(r.relevance, 4),
                                  match=None if r.match is None else round(r.match, 4),
                                  similar_count=r.similar_count, similar_ids=list(r.similar_ids),
                                  name=os.path.basename(r.path), thumbnail_url=self.thumb_url(r.id, tag),
                                  image_url=self.image_url(r.id, tag)))
        return out


T = TypeVar("T")


def _in_scope(scope: CallScope, fn: Callable[..., T], *args: Any) -> T:
    with call_scope(scope=scope):
        return fn(*args)


async def _watch_disconnect(request: Request, scope: CallScope, every: float = 0.2) -> None:
    with contextlib.suppress(Exception):
        while not scope.cancelled.is_set():
            await asyncio.sleep(every)
            if await request.is_disconnected():
                scope.cancel()
                return


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.picscope
    if state.follower is not None:
        state.follower.check()  # a few stat calls; reopens the store when another process re-indexed
    return state
