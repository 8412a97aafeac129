"""Health, library status, and the web UI (a fixed set of files: no route maps a URL onto the file system)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response

from picscope import __version__
from picscope.server.models import ErrorBody, Health, LibraryStatusOut
from picscope.server.state import AppState, get_state
from picscope.sessions.store import SessionStore

api = APIRouter(prefix="/api", tags=["library"])
ui = APIRouter(include_in_schema=False)
StateDep = Annotated[AppState, Depends(get_state)]

MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def load_static() -> dict[str, tuple[bytes, str]]:
    """The UI's files, read once from the package: name -> (bytes, media type)."""
    out: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("picscope.server") / "static"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in MEDIA:
            out[entry.name] = (entry.read_bytes(), MEDIA[suffix])
    return out


STATIC = load_static()
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 429: {"model": ErrorBody},
                                          503: {"model": ErrorBody}}


@api.get("/health", response_model=Health, responses=ERRORS, summary="Liveness")
async def health() -> Health:
    return Health(version=__version__)


def _status(state: AppState) -> LibraryStatusOut:
    st = state.library.status()
    # a read-only library has no session store (sessions write); its search and images still work
    sessions = 0 if state.library.readonly else len(SessionStore.for_library(state.library).list(10_000))
    return LibraryStatusOut(path=st.path, encoder=st.encoder, encoder_name=st.encoder_name, store=st.store,
                            dim=st.dim, files=st.files, errors=st.errors, stale=st.stale, vectors=st.vectors,
                            roots=st.roots, sessions=sessions, uploads=len(state.uploads),
                            thumbnail_cache=str(state.images.thumb_dir) if state.images.cache_ok else None)


@api.get("/status", response_model=LibraryStatusOut, responses=ERRORS, summary="Library status")
async def status(state: StateDep) -> LibraryStatusOut:
    """Encoder, store, counts of indexed and problem files, sessions and uploads."""
    return await state.work.run(_status, state)


def _file(name: str) -> Response:
    item = STATIC.get(name)
    if item is None:
        raise HTTPException(404, f"no such file: {name!r}")
    data, media = item
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if media.startswith("text/html"):
        headers.update({"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"})
    return Response(data, media_type=media, headers=headers)


@ui.get("/")
async def index() -> Response:
    return _file("index.html")


@ui.get("/static/{name}")
async def static(name: Annotated[str, Path(max_length=64)]) -> Response:
    return _file(name)
