"""Run-time faults of `picscope serve` (issue 18): token-link redirects, an empty token, stale thumbnails, a library
re-indexed by another process, upload memory, slow connections. Every test here failed on main before the fix."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient

from picscope import Library
from picscope.server import ServerSettings, create_app
from tests.feedback_test_doubles import write_colour_images
from tests.server_helpers import free_port, live_server

ENC = "test-colour"
BASE = "http://127.0.0.1"


@pytest.fixture()
def lib(tmp_path: Path) -> Iterator[Library]:
    write_colour_images(tmp_path / "photos", per_colour=4)
    library = Library.open(tmp_path / "lib", encoder=ENC)
    library.index(tmp_path / "photos")
    yield library
    library.close()


def raw_get(base: str, target: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """GET with the request target sent exactly as given (no client-side normalisation)."""
    host, port = base.removeprefix("http://").split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=30)
    con.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
    con.putheader("Host", f"127.0.0.1:{port}")
    for k, v in (headers or {}).items():
        con.putheader(k, v)
    con.endheaders()
    resp = con.getresponse()
    resp.read()
    con.close()
    return resp


# -- case 10: redirects after a token link stay on this site -------------------------------------------------------
def test_token_link_never_redirects_off_site(lib: Library) -> None:
    """On main, `GET //evil.example/?token=S` answered `303 Location: //evil.example/` (an open redirect)."""
    with live_server(create_app(lib, ServerSettings(token="s3cret"))) as base:
        for target in ("//evil.example/?token=s3cret", "/%2F%2Fevil.example?token=s3cret",
                       "/\\evil.example?token=s3cret", "///evil.example/?token=s3cret&q=red"):
            r = raw_get(base, target)
            location = r.getheader("location") or ""
            assert r.status == 303, target
            assert location.startswith("/") and not location.startswith(("//", "/\\")), (target, location)
            assert "evil.example" not in location.split("?")[0] or location.startswith("/%"), (target, location)
            assert location in ("/", "/?q=red"), (target, location)
        ok = raw_get(base, "/static/app.js?token=s3cret&v=2")
        assert ok.status == 303 and ok.getheader("location") == "/static/app.js?v=2"  # same-site paths are kept


# -- case 11: an empty token is refused ----------------------------------------------------------------------------
def test_empty_token_is_refused(lib: Library) -> None:
    """On main, `--token ""` silently turned auth off and started the server (here: it would time out)."""
    for value in ("", "   "):
        proc = subprocess.run([sys.executable, "-m", "picscope", "serve", "--library", str(lib.path), "--token",
                               value, "--port", str(free_port())], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "--token is empty" in proc.stderr and "Traceback" not in proc.stderr


# -- case 8: stale thumbnails --------------------------------------------------------------------------------------
def test_cached_thumbnail_of_deleted_or_changed_photo(lib: Library) -> None:
    """On main a cached thumbnail was served with 200 after its photo was deleted or changed on disk."""
    ids = lib.catalog.ok_ids()
    gone_id, changed_id = ids[0], ids[1]
    with TestClient(create_app(lib), base_url=BASE) as c:
        for fid in (gone_id, changed_id):
            assert c.get(f"/api/images/{fid}/thumbnail").status_code == 200  # now cached on disk
        gone, changed = lib.get(gone_id), lib.get(changed_id)
        assert gone is not None and changed is not None
        assert list((lib.path / "thumbs").glob(f"*/*/{gone_id}-*.jpg"))
        os.unlink(gone.path)
        shutil.copyfile(lib.get(ids[-1]).path, changed.path)  # type: ignore[union-attr]
        os.utime(changed.path, ns=(time.time_ns(), changed.mtime_ns + 5_000_000_000))
        r = c.get(f"/api/images/{gone_id}/thumbnail")
        assert r.status_code == 410 and r.json()["code"] == "gone"
        r = c.get(f"/api/images/{changed_id}/thumbnail")
        assert r.status_code == 409 and r.json()["code"] == "changed"
        assert c.get(f"/api/images/{changed_id}").status_code == 409  # the full image agrees
        assert c.get(f"/api/images/{ids[2]}/thumbnail").status_code == 200
