"""REST search extras (issue 17): query arithmetic (`add`/`subtract`), `min_relevance`, `dedupe` and the
`relevance`/`similar_count` fields, over a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from picscope import Library
from picscope.server import ServerSettings, create_app
from tests.feedback_test_doubles import write_colour_images
from tests.server_helpers import live_server


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    root = tmp_path_factory.mktemp("terms")
    images = write_colour_images(root / "photos", per_colour=6)
    shutil.copyfile(images["red"][0], root / "photos" / "red00-copy.png")  # a byte-identical copy
    library = Library.open(root / "lib", encoder="test-colour")
    library.index(root / "photos")
    yield library
    library.close()


@pytest.fixture(scope="module")
def base(lib: Library) -> Iterator[str]:
    with live_server(create_app(lib, ServerSettings())) as url:
        yield url


def colours(body: dict[str, object]) -> list[str]:
    return [re.match(r"[a-z]+", str(r["name"])).group(0) for r in body["results"]]  # type: ignore[union-attr]


def test_add_and_subtract_move_the_ranking(base: str, lib: Library) -> None:
    plain = httpx.post(f"{base}/api/search", json={"text": "red", "k": 3}).json()
    assert colours(plain) == ["red"] * 3
    added = httpx.post(f"{base}/api/search", json={"text": "red", "k": 3,
                                                   "add": [{"text": "blue", "weight": 3}]}).json()
    assert colours(added)[0] == "blue"
    light = httpx.post(f"{base}/api/search", json={"text": "red", "k": 3, "add": ["0.1:blue"]}).json()
    assert colours(light)[0] == "red"  # the weight matters
    minus = httpx.post(f"{base}/api/search", json={"text": "red blue", "k": 3, "subtract": ["red"]}).json()
    assert colours(minus)[0] == "blue"
    got = httpx.get(f"{base}/api/search", params=[("q", "red"), ("k", "3"), ("add", "3:green")]).json()
    assert colours(got)[0] == "green"
    green = next(r for r in lib.catalog.all("ok") if Path(r.path).name.startswith("green"))
    by_id = httpx.post(f"{base}/api/search", json={"text": "red", "k": 5,
                                                   "add": [{"id": green.id, "weight": 3}]}).json()
    assert colours(by_id)[0] == "green" and green.id not in {r["id"] for r in by_id["results"]}
    as_string = httpx.post(f"{base}/api/search", json={"text": "red", "k": 5, "add": [f"3:id:{green.id}"]}).json()
    assert [r["id"] for r in as_string["results"]] == [r["id"] for r in by_id["results"]]


def test_bad_terms_are_clear_4xx(base: str) -> None:
    r = httpx.post(f"{base}/api/search", json={"text": "red", "add": [{"text": "blue", "id": 1}]})
    assert r.status_code in (400, 422)
    r = httpx.post(f"{base}/api/search", json={"text": "red", "add": [{"text": "blue", "weight": 0}]})
    assert r.status_code in (400, 422)
    r = httpx.post(f"{base}/api/search", json={"text": "red", "subtract": ["red"]})
    assert r.status_code == 400 and "cancel" in r.json()["detail"]
    r = httpx.post(f"{base}/api/search", json={"text": "red", "add": [{"id": 999999}]})
    assert r.status_code == 404


def test_min_relevance_needs_a_calibrated_encoder(base: str) -> None:
    r = httpx.post(f"{base}/api/search", json={"text": "red", "min_relevance": 0.5})
    assert r.status_code == 400 and "calibration" in r.json()["detail"]
    r = httpx.post(f"{base}/api/search", json={"text": "red", "reference": {"id": 1}, "min_relevance": 0.5})
    assert r.status_code == 400
    body = httpx.post(f"{base}/api/search", json={"text": "red", "k": 3}).json()
    assert all(r["relevance"] is None for r in body["results"])  # no calibration: no relevance, never a guess


def test_dedupe_folds_the_copy(base: str) -> None:
    plain = httpx.post(f"{base}/api/search", json={"text": "red", "k": 20}).json()["results"]
    names = [r["name"] for r in plain]
    assert "red00.png" in names and "red00-copy.png" in names
    folded = httpx.post(f"{base}/api/search", json={"text": "red", "k": 20, "dedupe": True}).json()["results"]
    heads = [r for r in folded if r["name"] in ("red00.png", "red00-copy.png")]
    assert len(heads) == 1 and heads[0]["similar_count"] == 1
    assert len(folded) == len(plain) - 1  # only the copy went: different shades are not near-duplicates
    got = httpx.get(f"{base}/api/search", params={"q": "red", "k": 20, "dedupe": "true"}).json()["results"]
    assert [r["id"] for r in got] == [r["id"] for r in folded]
