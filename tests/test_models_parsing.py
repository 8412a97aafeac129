"""Parsing, repair, fallback and cache units (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

from picscope.errors import ConfigError
from picscope.models import events, make_chat_model, make_vision_model
from picscope.models.base import Message
from picscope.models.bundled import MODELS, _verify
from picscope.models.cache import ResponseCache, image_hash
from picscope.models.chat import BackendError, BaseChat
from picscope.models.parsing import ParseError, extract_json, p_yes_from_top_logprobs, parse_structured, yes_no
from picscope.models.prompts import load_prompt

SCHEMA = {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}


class Answer(BaseModel):
    answer: bool


@pytest.mark.parametrize("text,expected", [
    ('{"answer": true}', {"answer": True}),
    ('```json\n{"answer": false}\n```', {"answer": False}),
    ('Sure, here it is: {"answer": true} hope it helps', {"answer": True}),
    ('{"answer": true,}', {"answer": True}),
    ('{"items": ["a", "b', {"items": ["a", "b"]}),  # truncated mid-string
    ('{"a": {"b": [1, 2', {"a": {"b": [1, 2]}}),
])
def test_extract_json_repairs(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize("text,why", [("", "empty"), ("   ", "empty"), ("I'm unable to help with that.", "refused"),
                                      ("no json here", "no JSON")])
def test_extract_json_errors_say_why(text: str, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        extract_json(text)


def test_wrong_types_are_rejected() -> None:
    with pytest.raises(ParseError, match="wrong fields"):
        parse_structured('{"answer": "maybe"}', SCHEMA)
    with pytest.raises(ParseError, match="wrong fields"):
        parse_structured('{"answer": [1]}', Answer)
    assert parse_structured('{"answer": true}', Answer).answer is True


def test_p_yes_and_yes_no() -> None:
    import math

    p = p_yes_from_top_logprobs([{"Yes": math.log(0.6), " no": math.log(0.2), "maybe": math.log(0.2)}])
    assert p == pytest.approx(0.75)
    assert p_yes_from_top_logprobs([{"maybe": -0.1}]) is None and p_yes_from_top_logprobs(None) is None
    assert yes_no("Yes, it is.") == 1.0 and yes_no(" no") == 0.0 and yes_no("perhaps") is None


class ScriptedBackend(BaseChat):
    """Replays a fixed list of backend outcomes (responses or errors): tests the retry/repair/fallback logic."""

    spec = "scripted"

    def __init__(self, outcomes: list[Any], **kw: Any) -> None:
        super().__init__(backoff=0.0, **kw)
        self.outcomes = outcomes
        self.payloads: list[dict[str, Any]] = []

    def _complete(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.payloads.append(payload)
        out = self.outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return {"choices": [{"message": {"content": out}}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


def test_retry_then_repair_then_success(tmp_path: Path) -> None:
    events.reset()
    b = ScriptedBackend([BackendError("HTTP 503"), '{"answer": "perhaps"}', '{"answer": false}'],
                        cache=ResponseCache(tmp_path, enabled=False))
    res = b.chat([Message("user", "q")], schema=Answer)
    assert res.fallback is None and res.parsed.answer is False
    assert "could not be used" in b.payloads[-1]["messages"][-1]["content"]
    assert events.counts() == {"backend_error": 1, "parse_error": 1}


def test_bounded_retries_end_in_documented_fallback(tmp_path: Path) -> None:
    events.reset()
    b = ScriptedBackend(["nope", "", "{bad"], retries=2, cache=ResponseCache(tmp_path, enabled=False))
    res = b.chat([Message("user", "q")], schema=SCHEMA)
    assert res.parsed is None and res.fallback and res.fallback.startswith("unparsable")
    assert events.counts()["fallback.unparsable"] == 1 and not b.outcomes
    b2 = ScriptedBackend([{"not": "an envelope"}, BackendError("down", retryable=False)],
                         cache=ResponseCache(tmp_path, enabled=False))
    b2._complete = lambda p, t: {"weird": 1}  # type: ignore[method-assign]
    assert b2.chat([Message("user", "q")]).fallback is not None


def test_cache_hits_disable_and_clear(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    b = ScriptedBackend(['{"answer": true}'], cache=cache)
    first = b.chat([Message("user", "q", [Image.new("RGB", (4, 4))])], schema=SCHEMA)
    second = b.chat([Message("user", "q", [Image.new("RGB", (4, 4))])], schema=SCHEMA)
    assert not first.cached and second.cached and second.parsed == {"answer": True}
    with pytest.raises(IndexError):  # a different image is a different key: the backend is called again
        b.chat([Message("user", "q", [Image.new("RGB", (4, 4), (1, 2, 3))])], schema=SCHEMA)
    assert cache.clear() == 1 and cache.get("x") is None
    off = ResponseCache(tmp_path, enabled=False)
    off.put("k", {"a": 1})
    assert off.get("k") is None
    assert image_hash(Image.new("RGB", (4, 4))) != image_hash(Image.new("RGB", (4, 5)))


def test_prompts_are_versioned_files_with_schemas() -> None:
    for name in ("caption", "verify", "judge"):
        p = load_prompt(name)
        assert p.id == f"{name}.v1" and p.system.strip()
    assert load_prompt("verify").schema["required"] == ["answers"]
    with pytest.raises(FileNotFoundError):
        load_prompt("verify", 99)


def test_bad_specs_and_checksum() -> None:
    with pytest.raises(ConfigError, match="unknown llm spec"):
        make_chat_model("gpt-magic")
    with pytest.raises(ConfigError, match="not found"):
        make_chat_model("gguf:/nonexistent/model.gguf")
    with pytest.raises(ConfigError, match="unknown bundled"):
        make_chat_model("bundled:llama-70b")
    with pytest.raises(ConfigError, match="unknown vision spec"):
        make_vision_model("clip-magic", chat=object())  # type: ignore[arg-type]


def test_not_a_gguf_and_checksum_mismatch(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ConfigError, match="not a GGUF"):
        make_chat_model(f"gguf:{bad}")
    with pytest.raises(ConfigError, match="SHA-256 mismatch"):
        _verify(bad, MODELS["smollm2-135m"])
