"""Total deadlines, request budgets, cancellation and the circuit breaker of HTTP model calls (issue 18, case 1),
against a fake OpenAI-compatible endpoint on 127.0.0.1 that never answers or trickles one byte at a time.

On main these failed: a hung endpoint held a call for `timeout` and was retried (three attempts with backoff), a
trickling one was never cut (the timeout was per read), and a failing backend was called again and again."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from picscope import Library
from picscope.models.base import Message
from picscope.models.breaker import CircuitBreaker, reset_breakers
from picscope.models.cache import ResponseCache
from picscope.models.deadline import call_scope
from picscope.models.openai import OpenAIChat, default_deadline
from tests.fake_openai import FakeOpenAI


@pytest.fixture(autouse=True)
def _fresh_breakers() -> Iterator[None]:
    reset_breakers()
    yield
    reset_breakers()


def chat(fake: FakeOpenAI, tmp_path: Path, **kw: object) -> OpenAIChat:
    return OpenAIChat(fake.spec(), cache=ResponseCache(tmp_path, enabled=False), backoff=0.05, **kw)  # type: ignore[arg-type]


def timed(c: OpenAIChat, text: str = "hello") -> tuple[float, str | None]:
    t0 = time.monotonic()
    res = c.chat([Message("user", text)], max_tokens=4)
    return time.monotonic() - t0, res.fallback


def test_hung_endpoint_is_cut_at_the_deadline_without_retry(tmp_path: Path) -> None:
    with FakeOpenAI("hang") as fake:
        seconds, fallback = timed(chat(fake, tmp_path, timeout=1.0))
        assert 0.9 <= seconds < 2.0, seconds
        assert fallback is not None and "deadline of 1 s exceeded" in fallback
        time.sleep(0.2)
        assert fake.requests == 1  # no retry after a deadline


def test_trickling_endpoint_is_cut_at_the_total_deadline(tmp_path: Path) -> None:
    """One byte every 0.2 s never trips a per-read timeout of 1 s; the deadline is wall-clock."""
    with FakeOpenAI("trickle", interval=0.2) as fake:
        seconds, fallback = timed(chat(fake, tmp_path, timeout=1.0))
        assert seconds < 2.0, seconds
        assert fallback is not None and "deadline" in fallback


def test_default_deadline_is_a_few_seconds_on_loopback() -> None:
    assert default_deadline("http://127.0.0.1:8080/v1") <= 5.0
    assert default_deadline("http://localhost:1/v1") <= 5.0
    assert default_deadline("https://api.example.com/v1") == 30.0


def test_request_scope_caps_every_call_and_cancel_cuts_in_flight(tmp_path: Path) -> None:
    with FakeOpenAI("hang") as fake:
        c = chat(fake, tmp_path, timeout=30.0, breaker_failures=100)
        with call_scope(1.0) as scope:
            seconds, fallback = timed(c)
            assert seconds < 2.0 and fallback is not None
            seconds, fallback = timed(c, "again")  # the budget is spent: no call goes out
            assert seconds < 0.2 and fallback is not None and "budget" in fallback
        assert any("fell back" in n for n in scope.notes) and any("budget" in n for n in scope.notes)
        assert fake.requests == 1

        with call_scope(30.0) as scope:
            threading.Timer(0.5, scope.cancel).start()
            seconds, fallback = timed(c, "cancel me")
        assert seconds < 2.0, seconds
        assert fallback is not None and "cancel" in fallback


def test_circuit_breaker_skips_a_failing_backend_then_tries_again(tmp_path: Path) -> None:
    with FakeOpenAI("hang") as fake:
        c = chat(fake, tmp_path, timeout=0.5, breaker_failures=2, breaker_cooldown_s=1.0)
        timed(c, "one")
        timed(c, "two")
        assert fake.requests == 2
        seconds, fallback = timed(c, "three")
        assert seconds < 0.1 and fallback is not None and "circuit breaker open" in fallback
        assert "2 consecutive failures" in fallback
        assert fake.requests == 2  # skipped: nothing was sent
        time.sleep(1.1)
        timed(c, "trial")  # half-open: one trial call goes out (and fails again)
        assert fake.wait_requests(3)
        assert "circuit breaker open" in (timed(c, "four")[1] or "")


def test_breaker_closes_after_a_success() -> None:
    now = [0.0]
    b = CircuitBreaker("x", failures=2, cooldown_s=10, clock=lambda: now[0])
    b.failure("a")
    assert b.blocked() is None
    b.failure("b")
    assert b.blocked() is not None and b.is_open
    now[0] = 11.0
    assert b.blocked() is None  # the trial call
    assert b.blocked() is not None  # only one trial at a time
    b.success()
    assert b.blocked() is None and not b.is_open


def test_stages_query_falls_back_to_encoder_results_within_the_deadline(tmp_path: Path) -> None:
    """`picscope search --stages 1-3` with a hung `openai:` LLM: encoder results within the request budget, and
    the explanation says what fell back (on main: ~390 s of retries)."""
    from picscope.cli import main
    from tests.feedback_test_doubles import write_colour_images

    write_colour_images(tmp_path / "photos", per_colour=3)
    with FakeOpenAI("hang") as fake:
        lib_path = tmp_path / "lib"
        with Library.open(lib_path, encoder="test-colour") as lib:
            lib.index(tmp_path / "photos")
            lib.config.llm = fake.spec()
            lib.config.models.call_deadline_s = 1.0
            lib.config.pipeline.max_seconds = 3.0
            lib.save_config()
        out_file = tmp_path / "out.json"
        import contextlib
        import io

        buf = io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stdout(buf):
            rc = main(["search", "a red photo", "--stages", "1-3", "--json", "--explain", "--library", str(lib_path),
                       "-k", "3"])
        seconds = time.monotonic() - t0
        out_file.write_text(buf.getvalue())
    assert rc == 0
    data = json.loads(buf.getvalue())
    assert len(data["results"]) == 3
    expl = data["explanation"]
    assert expl["cost"]["seconds"] < 3.0 + 1.0, expl["cost"]  # the request's 3 s budget, not 3 x (1 s + retries)
    assert seconds < 15.0, seconds  # the whole command, start-up included, on a busy machine
    assert expl["intent"]["source"].startswith("rules (fallback")
    assert any("deadline" in n or "circuit breaker" in n or "budget" in n for n in expl["fallbacks"])
