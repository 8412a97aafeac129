"""The vision request format against the OpenAI chat-completions spec, using a RECORDED exchange.

`RECORDED_RESPONSE` below is a recorded response body (shape as returned by an OpenAI-compatible VLM server for a
json_schema request); it is replayed by an httpx transport so we can check exactly what our client sends.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
from PIL import Image

from picscope.models.cache import ResponseCache
from picscope.models.chat_vision import ChatVision
from picscope.models.openai import OpenAIChat

RECORDED_RESPONSE = {
    "id": "chatcmpl-recorded-1", "object": "chat.completion", "created": 1763800000, "model": "recorded-vlm",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant",
        "content": "{\"answers\": [{\"n\": 1, \"answer\": \"yes\"}, {\"n\": 2, \"answer\": \"no\"}]}"}}],
    "usage": {"prompt_tokens": 812, "completion_tokens": 21, "total_tokens": 833},
}


def test_vision_request_matches_openai_spec(tmp_path: Path) -> None:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test"
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=RECORDED_RESPONSE)

    chat = OpenAIChat("openai:http://vlm.local/v1#recorded-vlm", api_key="sk-test",
                      transport=httpx.MockTransport(handler), cache=ResponseCache(tmp_path, enabled=False))
    vision = ChatVision(chat)
    img = Image.new("RGB", (1200, 600), (255, 0, 0))
    p = vision.verify(img, ["a red image", "a dog"])
    assert p == [1.0, 0.0]
    body = sent[0]
    assert body["model"] == "recorded-vlm" and body["messages"][0]["role"] == "system"
    parts = body["messages"][1]["content"]
    assert parts[0]["type"] == "text" and "1. a red image" in parts[0]["text"]
    img_part = parts[1]
    assert img_part["type"] == "image_url"
    url = img_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(decoded.size) == 768  # downscaled before sending
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["name"] and rf["json_schema"]["schema"]["required"] == ["answers"]


def test_schema_rejected_switches_to_prompt_and_repair(tmp_path: Path) -> None:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        if "response_format" in body:
            return httpx.Response(400, json={"error": {"message": "response_format json_schema not supported"}})
        if len(sent) == 2:  # recorded-style malformed answer first, then a valid one after the repair prompt
            return httpx.Response(200, json={"choices": [{"message": {"content": "Sure! {\"answers\": [1, "}}]})
        return httpx.Response(200, json=RECORDED_RESPONSE)

    chat = OpenAIChat("openai:http://vlm.local/v1#m", transport=httpx.MockTransport(handler),
                      cache=ResponseCache(tmp_path, enabled=False), backoff=0.0)
    out = ChatVision(chat).verify(Image.new("RGB", (32, 32)), ["x", "y"])
    assert out == [1.0, 0.0]
    assert "response_format" not in sent[1] and "JSON schema" in sent[1]["messages"][0]["content"]
    assert sent[2]["messages"][-1]["role"] == "user" and "could not be used" in sent[2]["messages"][-1]["content"]
