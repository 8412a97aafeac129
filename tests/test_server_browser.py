"""The web app in a real browser: Debian's Chromium (headless, driven by playwright) against `picscope serve` on
127.0.0.1 with a small real library (the scikit-image sample photos, bundled encoder).

Screenshots of each main screen go to `test-output/browser/` (gitignored; `$PICSCOPE_TEST_OUTPUT` overrides).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from picscope import Library
from tests.feedback_test_doubles import ColourCaptionerTestDouble
from tests.server_helpers import free_port, live_server

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
pytest.importorskip("fastapi", reason="the web app needs the server extra")
from picscope.server import ServerSettings, create_app  # noqa: E402

SHOTS = Path(os.environ.get("PICSCOPE_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output")) / "browser"


@pytest.fixture(scope="module")
def library_path(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web") / "lib"
    with Library.open(path) as lib:
        lib.index(demo_folder)
    return path


@pytest.fixture(scope="module")
def server(library_path: Path) -> Iterator[str]:
    """The real command: `picscope serve LIBRARY --port P` in a subprocess."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "picscope", "serve", str(library_path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"picscope serve exited early ({proc.returncode}):\n{out}")
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("picscope serve did not answer within 120 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def session_server(library_path: Path) -> Iterator[str]:
    """In-process server whose `caption` feedback uses a test-double captioner, so refining rewrites the query."""
    lib = Library.open(library_path, create=False)
    app = create_app(lib, ServerSettings(), vision=ColourCaptionerTestDouble())
    with live_server(app) as base:
        yield base
    lib.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert not errors, errors


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def search(page: Any, base: str, text: str) -> None:
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_selector("#results .card")


def names(page: Any) -> list[str]:
    return [str(x) for x in page.locator("#results .card .name").all_inner_texts()]


def test_search_shows_thumbnails_and_the_explanation(page: Any, server: str) -> None:
    search(page, server, "a cat")
    assert names(page)[0] == "cat.jpg"
    first = page.locator("#results .thumb img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=first.element_handle())
    assert first.get_attribute("alt") == "cat.jpg" and first.get_attribute("loading") == "lazy"
    panel = page.locator("#explain-body")
    assert "Query sent to the encoder" in panel.inner_text() and "a cat" in panel.inner_text()
    assert "17 photos indexed" in page.locator("#library-status").inner_text()
    # accessible markup: every form control has a label, every image alt text
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select')]
        .filter(e => e.type !== 'radio' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).length""")
    assert unlabelled == 0
    assert page.evaluate("[...document.querySelectorAll('img')].filter(i => !i.hasAttribute('alt')).length") == 0
    shot(page, "1-search")


def test_open_a_photo_keyboard_and_more_like_this(page: Any, server: str) -> None:
    search(page, server, "a cat")
    page.locator("#results .thumb").first.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    viewer = page.locator("#viewer")
    viewer.wait_for(state="visible")
    assert page.locator("#viewer-path").inner_text().endswith("/cat.jpg")
    page.wait_for_function("() => document.getElementById('viewer-image').naturalWidth > 0")
    page.wait_for_function("() => document.getElementById('viewer-caption').textContent.length > 0")
    assert "451×300" in page.locator("#viewer-meta").inner_text()
    shot(page, "2-photo")
    page.keyboard.press("ArrowRight")  # the next result in the large view
    page.wait_for_function("() => !document.getElementById('viewer-path').textContent.endsWith('/cat.jpg')")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.getElementById('viewer-path').textContent.endsWith('/cat.jpg')")
    page.click("#similar-button")
    page.wait_for_selector("#viewer", state="hidden")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('photos like cat.jpg')")
    similar = names(page)
    assert "cat.jpg" not in similar and len(similar) == 16
    assert "image embedding" in page.locator("#explain-body").inner_text()
    shot(page, "3-more-like-this")


def test_like_this_but_and_an_uploaded_photo(page: Any, server: str, demo_folder: Path) -> None:
    search(page, server, "a horse")
    first = names(page)[0]
    page.locator("#results .thumb").first.click()
    page.click("#likebut-button")
    assert page.locator("#reference").is_visible()
    assert f"Like {first}, but" in page.locator("#reference-label").inner_text()
    page.fill("#q", "a photo in colour")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('a photo in colour')")
    assert first not in names(page)  # the reference itself is left out
    assert "library id" in page.locator("#explain-body").inner_text()
    shot(page, "4-like-this-but")
    page.click("#reference-clear")
    page.set_input_files("#upload", str(demo_folder / "coffee.jpg"))
    page.wait_for_function("() => document.getElementById('reference-label').textContent.includes('your photo')")
    page.click("#reference-similar")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('photos like')")
    assert names(page)[0] == "coffee.jpg"  # an uploaded copy of a library photo finds it first


def test_session_mark_two_relevant_and_refine(page: Any, session_server: str) -> None:
    page.goto(session_server + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.check("input[name=mode][value=session]")
    page.select_option("#strategy", "caption")
    page.select_option("#page-size", "6")
    page.fill("#q", "a horse")
    page.press("#q", "Enter")
    page.wait_for_selector("#session-bar:not([hidden])")
    assert page.locator("#session-round").inner_text() == "0"
    assert page.locator("#session-query").inner_text() == "a horse"
    round0 = names(page)
    assert len(round0) == 6
    for i in (0, 1):
        page.locator("#results .mark-yes").nth(i).click()
        page.wait_for_selector(f"#results .card:nth-child({i + 1}).is-relevant")
    assert page.locator("#results .mark-yes[aria-pressed=true]").count() == 2
    assert "2 relevant" in page.locator("#session-counts").inner_text()
    shot(page, "5-session-marked")
    page.click("#refine-button")
    page.wait_for_function("() => document.getElementById('session-round').textContent === '1'")
    new_query = page.locator("#session-query").inner_text()
    assert new_query != "a horse" and new_query.startswith("a horse")  # the captions of the marked photos
    round1 = names(page)
    assert round1 and not set(round1) & set(round0)
    panel = page.locator("#explain-body").inner_text()
    assert "Rewritten query" in panel and new_query in panel
    shot(page, "6-session-refined")
    page.click("#back-button")
    page.wait_for_function("() => document.getElementById('session-round').textContent === '0'")
    assert names(page) == round0


# -- phone layout, controls per mode, the Why panel follows the request (issue 17) ---------------------------------
PHONE = {"width": 390, "height": 844}


@pytest.fixture()
def phone(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert not errors, errors


def overflow(page: Any) -> list[str]:
    """Visible elements whose right edge is past the viewport, and the page's horizontal overflow."""
    return list(page.evaluate("""() => {
        const w = document.documentElement.clientWidth;
        const out = [...document.querySelectorAll('header *, main *')]
          .filter(e => e.offsetParent !== null && e.getBoundingClientRect().right > w + 1)
          .map(e => `${e.tagName.toLowerCase()}#${e.id || ''}.${e.className || ''}`);
        const sw = document.documentElement.scrollWidth;
        if (sw > w + 1) out.push(`page scrollWidth ${sw} > ${w}`);
        return out;
    }"""))


def test_phone_layout_fits_390_px(phone: Any, server: str) -> None:
    search(phone, server, "a cat")
    assert names(phone)[0] == "cat.jpg"
    assert overflow(phone) == []
    box = phone.locator("#pipeline").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    shot(phone, "7-phone-search")
    phone.check("input[name=mode][value=session]")
    assert phone.locator("#strategy").is_visible() and not phone.locator("#pipeline").is_visible()
    assert overflow(phone) == []
    shot(phone, "8-phone-session-mode")
    phone.locator("#results .thumb").first.click()
    phone.locator("#viewer").wait_for(state="visible")
    page_width = phone.evaluate("document.getElementById('viewer').getBoundingClientRect().right")
    assert page_width <= PHONE["width"]
    shot(phone, "9-phone-photo")


def test_controls_show_only_in_their_mode(page: Any, server: str) -> None:
    search(page, server, "a cat")
    assert page.locator("#pipeline").is_visible()
    for control in ("#strategy", "#page-size", "#session-bar", "#results .marks", "#viewer-relevant"):
        assert not page.locator(control).first.is_visible(), control
    assert page.locator("#turn").is_visible()  # dialogue details belong to plain search
    page.check("input[name=mode][value=session]")
    assert page.locator("#strategy").is_visible() and page.locator("#page-size").is_visible()
    assert not page.locator("#pipeline").is_visible() and not page.locator("#turn").is_visible()
    page.check("input[name=mode][value=search]")
    assert page.locator("#pipeline").is_visible() and not page.locator("#strategy").is_visible()


def test_why_panel_names_the_current_reference(page: Any, server: str) -> None:
    search(page, server, "a horse")
    first = names(page)[0]
    page.locator("#results .thumb").first.click()
    page.click("#likebut-button")
    panel = page.locator("#explain-body")
    assert first in panel.inner_text() and "Next search" in panel.inner_text()
    page.fill("#q", "a photo in colour")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('a photo in colour')")
    assert first in page.locator("#explain-body .reference-name").inner_text()
    second = names(page)[0]
    assert second != first
    page.locator("#results .thumb").first.click()  # "Like this, but…" on a new photo
    page.click("#likebut-button")
    text = panel.inner_text()
    assert second in text and first not in text  # at once, before the next search
    page.fill("#q", "at night")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('at night')")
    named = page.locator("#explain-body .reference-name").inner_text()
    assert second in named and first not in named
    shot(page, "10-why-new-reference")
    page.click("#reference-clear")
    assert "No reference photo" in panel.inner_text()


@pytest.fixture(scope="module")
def dup_server(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A library holding the demo photos plus four near copies of cat.jpg (labels encoder: quick to index)."""
    import shutil

    from tests.helpers import near_copies

    root = tmp_path_factory.mktemp("web-dups")
    shutil.copytree(demo_folder, root / "photos")
    near_copies(demo_folder / "cat.jpg", root / "photos" / "cat-copies")
    lib = Library.open(root / "lib", encoder="labels")
    lib.index(root / "photos")
    with live_server(create_app(lib, ServerSettings())) as base:
        yield base
    lib.close()


def test_copies_fold_into_one_card(page: Any, dup_server: str) -> None:
    search(page, dup_server, "a cat")
    first = page.locator("#results .card").first
    assert first.locator(".similar").inner_text() == "+4 similar"
    shown = names(page)
    assert len(shown) == 17 and sum(n in ("cat.jpg", "copy.jpg", "low-quality.jpg", "small.png",
                                         "next-frame.jpg") for n in shown) == 1
    assert first.locator(".relevance").inner_text().endswith("%")  # labels has a calibration
    ranks = page.locator("#explain-body tbody tr td:nth-child(2)").all_inner_texts()
    assert ranks[:3] == shown[:3]  # the Why panel lists the folded ranking too
    shot(page, "11-dedupe")
