"""Typed errors → HTTP statuses, in one table (`picscope.server.app.STATUS_OF_ERROR`), through a real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from picscope import Library
from picscope.errors import (
    ConfigError,
    ImageDecodeError,
    ImageNotFoundError,
    LibraryError,
    LibraryLockedError,
    PicscopeError,
)
from picscope.server import ServerSettings, create_app
from picscope.server.app import picscope_status
from picscope.sessions import NotShownError, SessionNotFoundError, StaleRoundError
from tests.feedback_test_doubles import write_colour_images
from tests.server_helpers import live_server


@pytest.mark.parametrize(("exc", "status", "code"), [
    (ImageNotFoundError("no indexed image with id 7"), 404, "not_found"),
    (SessionNotFoundError("no session abc"), 404, "not_found"),
    (StaleRoundError("stale"), 409, "stale"),
    (NotShownError("not shown"), 400, "not_shown"),
    (LibraryLockedError("locked"), 503, "busy"),
    (ImageDecodeError("not an image"), 415, "not_an_image"),
    (ConfigError("bad spec"), 503, "unavailable"),
    (LibraryError("no indexed image, said as text only"), 400, "bad_request"),  # the type decides, not the text
    (PicscopeError("anything else"), 400, "bad_request"),
])
def test_status_of_each_typed_error(exc: PicscopeError, status: int, code: str) -> None:
    assert picscope_status(exc) == (status, code)


def test_image_not_found_is_a_library_error() -> None:
    assert issubclass(ImageNotFoundError, LibraryError)  # callers that catch LibraryError keep working


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    root = tmp_path_factory.mktemp("errors")
    write_colour_images(root / "photos", per_colour=2)
    library = Library.open(root / "lib", encoder="test-colour")
    library.index(root / "photos")
    yield library
    library.close()


def _get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_unknown_image_id_from_the_library_is_a_404_over_http(lib: Library, tmp_path: Path) -> None:
    """The library raises `ImageNotFoundError`; the server's one handler answers 404 with the message."""
    app = create_app(lib, ServerSettings())

    @app.get("/api/test-vector/{fid}")
    def vector_of(fid: int) -> dict[str, int]:
        lib.resolve_image(fid)  # raises ImageNotFoundError for an id that is not indexed
        return {"ok": fid}

    known = lib.catalog.all("ok")[0].id
    with live_server(app) as base:
        assert _get(f"{base}/api/test-vector/{known}") == (200, {"ok": known})
        status, body = _get(f"{base}/api/test-vector/999999")
    assert status == 404
    assert body == {"detail": "no indexed image with id 999999", "code": "not_found"}
