"""What every route shares: the open library, the image and upload stores, the work limiters, the pipelines."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from picscope.library import Library, SearchResult
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
    llm: Any = None  # model objects (or specs) for imagescope and the caption/rewrite session strategies
    vision: Any = None
    _pipelines: dict[tuple[str, tuple[int, ...] | None], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
                                  similar_count=r.similar_count, similar_ids=list(r.similar_ids),
                                  name=os.path.basename(r.path), thumbnail_url=self.thumb_url(r.id, tag),
                                  image_url=self.image_url(r.id, tag)))
        return out


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.picscope
    return state
