"""`create_app(library, settings)`: the FastAPI application (REST API + the web UI) for `picscope serve`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from picscope import __version__
from picscope.errors import (
    ConfigError,
    EncoderError,
    ImageDecodeError,
    ImageNotFoundError,
    LibraryLockedError,
    PicscopeError,
)
from picscope.library import Library
from picscope.server import routes_images, routes_misc, routes_search, routes_sessions
from picscope.server.auth import Guard
from picscope.server.follow import LibraryFollower
from picscope.server.images import ImageRefused, LibraryImages
from picscope.server.limits import WorkLimiter
from picscope.server.settings import ServerSettings
from picscope.server.state import AppState
from picscope.server.uploads import UploadRefused, UploadStore
from picscope.sessions import NotShownError, SessionError, SessionNotFoundError, StaleRoundError

log = logging.getLogger("picscope.server")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 410: "gone", 413: "too_large", 415: "unsupported_media_type", 422: "invalid",
         429: "too_many_requests", 503: "busy"}


def error(status: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code or CODES.get(status, "error")}, status_code=status,
                        headers=headers)


# The one table from picscope's typed errors to HTTP statuses: the first class the error is an instance of wins
# (so subclasses come before their bases); any other PicscopeError is a 400.
STATUS_OF_ERROR: tuple[tuple[type[PicscopeError], int, str], ...] = (
    (SessionNotFoundError, 404, "not_found"),
    (StaleRoundError, 409, "stale"),
    (NotShownError, 400, "not_shown"),
    (SessionError, 400, "bad_request"),
    (ImageNotFoundError, 404, "not_found"),
    (LibraryLockedError, 503, "busy"),
    (ImageDecodeError, 415, "not_an_image"),
    (ConfigError, 503, "unavailable"),
    (EncoderError, 503, "unavailable"),
)


def picscope_status(exc: PicscopeError) -> tuple[int, str]:
    for cls, status, code in STATUS_OF_ERROR:
        if isinstance(exc, cls):
            return status, code
    return 400, "bad_request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), None, dict(exc.headers or {}))

    @app.exception_handler(ImageRefused)
    async def _image(request: Request, exc: ImageRefused) -> JSONResponse:
        return error(exc.status, exc.detail, exc.code)

    @app.exception_handler(UploadRefused)
    async def _upload(request: Request, exc: UploadRefused) -> JSONResponse:
        return error(exc.status, exc.detail, exc.code)

    @app.exception_handler(PicscopeError)
    async def _picscope(request: Request, exc: PicscopeError) -> JSONResponse:
        status, code = picscope_status(exc)
        return error(status, str(exc), code)

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> JSONResponse:
        return error(400, str(exc) or "invalid request", "bad_request")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__} (see the server log)", "internal")


def create_app(library: Library | str | Path, settings: ServerSettings | None = None, *, llm: Any = None,
               vision: Any = None) -> FastAPI:
    """The app for one library. `llm`/`vision`: model objects or specs for the imagescope pipeline and the
    caption/rewrite session strategies (default: the library's configuration, built on first use)."""
    settings = settings or ServerSettings()
    own = not isinstance(library, Library)
    lib = Library.open(library, create=False) if not isinstance(library, Library) else library
    if lib.dim is not None:
        _ = lib.store  # opened once here, not lazily by concurrent requests
    state = AppState(
        library=lib, settings=settings, images=LibraryImages(lib),
        uploads=UploadStore(settings.upload_dir, lib.path, max_bytes=settings.max_upload_bytes,
                            max_pixels=settings.max_upload_pixels, max_count=settings.max_uploads,
                            ttl_s=settings.upload_ttl_s, max_decode_bytes=settings.max_upload_decode_bytes,
                            max_decodes=settings.upload_decodes),
        work=WorkLimiter("search", settings.work_slots, settings.work_queue, settings.queue_timeout_s),
        thumbs=WorkLimiter("image", settings.thumb_slots, settings.thumb_queue, settings.queue_timeout_s),
        models=WorkLimiter("model", settings.model_slots, settings.model_queue, settings.queue_timeout_s),
        llm=llm, vision=vision)
    state.follower = LibraryFollower(lib, on_change=lambda: state.images.roots(refresh=True))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.work._sem = None  # the semaphores belong to this event loop
        state.thumbs._sem = None
        state.models._sem = None
        state.closing = False
        if lib.dim is not None:
            await to_thread.run_sync(lambda: lib.embed_texts(["warm up"]))  # load the text tower before serving
        try:
            yield
        finally:
            state.cancel_model_work()
            state.uploads.close()
            if own:
                lib.close()

    app = FastAPI(title="picscope", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search a photo library by text, by example, by example plus a change, in dialogue, "
                              "or in rounds of relevance feedback. Images are served by library id only.")
    app.state.picscope = state
    install_error_handlers(app)
    for router in (routes_search.router, routes_images.router, routes_sessions.router, routes_misc.api,
                   routes_misc.ui):
        app.include_router(router)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type",
                                                                                    "X-Picscope-Token"])

    def body_limit(path: str) -> int:
        return settings.max_upload_bytes + 64 * 1024 if path == "/api/uploads" else settings.max_json_bytes

    app.add_middleware(Guard, token=settings.token, hosts=settings.hosts(), cors_origins=settings.cors_origins,
                       body_limit=body_limit)
    return app
