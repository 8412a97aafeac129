"""Feedback strategies: rocchio, caption expansion, LLM rewrite (anchor, length cap, retries, fallback), combined,
negative propositions. Model roles are test doubles (tests/feedback_test_doubles.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from picscope import Library
from picscope.errors import ConfigError
from picscope.feedback import FeedbackState, make_strategy
from picscope.feedback.negatives import negative_propositions
from picscope.feedback.text import anchored
from tests.feedback_test_doubles import ColourCaptionerTestDouble, ScriptedChatTestDouble, write_colour_images


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("fb")
    write_colour_images(root / "photos", per_colour=6)
    library = Library.open(root / "lib", encoder="test-colour")
    library.index(root / "photos")
    yield library
    library.close()


def _ids(lib: Library, colour: str) -> list[int]:
    hits = lib.search_vector(lib.embed_texts([colour])[0], 18)
    return [h.id for h in hits if Path(h.path).name.startswith(colour)]


def _state(lib: Library, q: str) -> FeedbackState:
    v = lib.embed_texts([q])[0]
    return FeedbackState(q, q, v, anchor_vector=v)


def _answer(**kw: object) -> str:
    return "Sure! " + json.dumps({"query": "", "shared_details": [], "dropped": [], "avoid": [], **kw})


def test_none_keeps_the_query_and_rocchio_moves_it(lib: Library) -> None:
    st = _state(lib, "red")
    red, blue = _ids(lib, "red"), _ids(lib, "blue")
    same = make_strategy("none", lib).update(st, red[:1], [])
    assert np.array_equal(same.query_vector, st.query_vector) and same.positives == red[:1]
    moved = make_strategy("rocchio", lib).update(st, blue[:2], red[:1])
    b = lib.vectors(blue[:2]).mean(axis=0)
    assert float(moved.query_vector @ b) > float(st.query_vector @ b)
    assert moved.round == 1 and st.round == 0  # the input state is not mutated
    assert np.isclose(np.linalg.norm(moved.query_vector), 1.0)


def test_caption_appends_relevant_captions_caps_length_and_reuses_them(lib: Library) -> None:
    vision = ColourCaptionerTestDouble()
    strat = make_strategy("caption", lib, vision=vision, max_words=6)
    st = _state(lib, "bright colour")
    nxt = strat.update(st, _ids(lib, "green")[:2], [])
    assert nxt.query_text.startswith("bright colour") and "green" in nxt.query_text
    assert len(nxt.query_text.split()) <= 6
    assert nxt.model_calls == 2 == vision.calls
    again = strat.update(nxt, [], _ids(lib, "red")[:1])
    assert vision.calls == 3  # only the new image was captioned
    assert again.negative_propositions[0] == "The image shows red."  # square/green: also in relevant captions
    assert not any("green" in p or "square" in p for p in again.negative_propositions)
    green = lib.vectors(_ids(lib, "green")[:1])[0]
    assert float(nxt.query_vector @ green) > float(st.query_vector @ green)


def test_rewrite_uses_the_llm_answer_and_explains_it(lib: Library) -> None:
    llm = ScriptedChatTestDouble(
        [_answer(query="bright colour, blue", shared_details=["blue"], dropped=["cat"], avoid=["red"])]
    )
    strat = make_strategy("rewrite", lib, llm=llm, vision=ColourCaptionerTestDouble())
    nxt = strat.update(_state(lib, "bright colour"), _ids(lib, "blue")[:3], _ids(lib, "red")[:1])
    assert nxt.query_text == "bright colour, blue"
    assert nxt.fallback is None and "added shared details: blue" in nxt.notes[-1] and "cat" in nxt.notes[-1]
    assert nxt.negative_propositions == ["The image shows red."]
    assert nxt.model_calls == 4 + 1  # 4 captions + 1 LLM call
    prompt = llm.calls[0][1].content
    assert "bright colour" in prompt and "a blue square" in prompt and "a red square" in prompt


def test_rewrite_restores_the_anchor_and_caps_length(lib: Library) -> None:
    long = " ".join(["blue"] * 80)
    llm = ScriptedChatTestDouble([_answer(query=long)])
    strat = make_strategy("rewrite", lib, llm=llm, vision=ColourCaptionerTestDouble(), max_words=10)
    nxt = strat.update(_state(lib, "bright colour"), _ids(lib, "blue")[:2], [])
    assert nxt.query_text.startswith("bright colour,") and len(nxt.query_text.split()) == 10
    assert "restored" in nxt.notes[-1]
    text, restored = anchored("a dog on a beach", "a dog running on a sunny beach", 40)
    assert not restored and text == "a dog running on a sunny beach"


def test_rewrite_retries_an_unparsable_answer_then_falls_back(lib: Library) -> None:
    vision = ColourCaptionerTestDouble()
    ok = ScriptedChatTestDouble(["no json here", _answer(query="bright colour, green")])
    nxt = make_strategy("rewrite", lib, llm=ok, vision=vision).update(
        _state(lib, "bright colour"), _ids(lib, "green")[:1], []
    )
    assert nxt.query_text == "bright colour, green" and len(ok.calls) == 2
    bad = ScriptedChatTestDouble(["{}", '{"query": ""}'])
    st = _state(lib, "bright colour")
    fb = make_strategy("rewrite", lib, llm=bad, vision=vision).update(st, _ids(lib, "green")[:2], [])
    assert fb.fallback and "unparsable" in fb.fallback and "rocchio" in fb.fallback
    assert fb.query_text == "bright colour" and not np.array_equal(fb.query_vector, st.query_vector)


def test_combined_mixes_rewrite_and_rocchio(lib: Library) -> None:
    llm = ScriptedChatTestDouble([_answer(query="bright colour, blue")])
    st = _state(lib, "bright colour")
    blue = _ids(lib, "blue")[:2]
    nxt = make_strategy("combined", lib, llm=llm, vision=ColourCaptionerTestDouble()).update(st, blue, [])
    assert nxt.query_text == "bright colour, blue" and "combined with rocchio" in nxt.notes[-1]
    assert nxt.positives == blue and nxt.round == 1
    b = lib.vectors(blue).mean(axis=0)
    assert float(nxt.query_vector @ b) > float(st.query_vector @ b)
    np.testing.assert_array_equal(nxt.anchor_vector, st.anchor_vector)


def test_negative_propositions() -> None:
    props = negative_propositions(
        "a dog on the beach",
        ["a brown dog running on sand", "a dog on a sandy beach"],
        ["a cat sitting on a sofa", "a cat on grass"],
    )
    assert props[0] == "The image shows cat." and all("dog" not in p and "beach" not in p for p in props)
    assert negative_propositions("a dog", [], [], avoid=["a dog", "snow"]) == ["The image shows snow."]
    long = "group of people dancing in a dark classroom"
    assert negative_propositions("a dog", [], ["a red sofa"], avoid=[long]) == [
        "The image shows red.",
        "The image shows sofa.",
    ]


def test_make_strategy_errors(lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown feedback strategy 'x'"):
        make_strategy("x", lib)
    import picscope.feedback as fb

    def unavailable(library: object, need_llm: bool = True) -> tuple[object, object]:
        raise ConfigError("no chat model configured")

    monkeypatch.setattr(fb, "default_models", unavailable)
    with pytest.raises(ConfigError, match="no chat model"):
        make_strategy("rewrite", lib)
