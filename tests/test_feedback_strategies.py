"""Feedback strategies: rocchio, caption expansion, LLM rewrite (anchor, length cap, retries, fallback), combined,
negative propositions. Model roles are test doubles (tests/feedback_test_doubles.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from picscope import Library
from picscope.errors import ConfigError
from picscope.feedback import FeedbackState, make_strategy
from picscope.feedback.negatives import negative_propositions
from picscope.feedback.text import anchored
from tests.feedback_test_doubles import (
    ColourCaptionerTestDouble,
    ScriptedChatTestDouble,
    colour_library,
    ids_of_colour,
    start_state,
)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    library = colour_library(tmp_path_factory.mktemp("fb"))
    yield library
    library.close()


_ids, _state = ids_of_colour, start_state


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


def test_caption_vector_is_the_request_plus_the_captions_directions(lib: Library) -> None:
    """q' = q + 0.5·unit(mean of the relevant captions' vectors) − 0.2·unit(mean of the not-relevant ones'): the
    request's own vector stays the anchor, each caption is embedded on its own."""
    from picscope.feedback.text import CAPTION_WEIGHT, NEGATIVE_CAPTION_WEIGHT

    vision = ColourCaptionerTestDouble()
    st = _state(lib, "red")
    pos, neg = _ids(lib, "green")[:2], _ids(lib, "blue")[-1:]  # blue[:3] belong to the rewrite test
    nxt = make_strategy("caption", lib, vision=vision).update(st, pos, neg)
    caps = nxt.captions
    pos_dir = _unit(lib.embed_texts([caps[i] for i in pos]).mean(axis=0))
    neg_dir = _unit(lib.embed_texts([caps[i] for i in neg]).mean(axis=0))
    expected = _unit(st.query_vector + CAPTION_WEIGHT * pos_dir - NEGATIVE_CAPTION_WEIGHT * neg_dir)
    assert np.allclose(nxt.query_vector, expected, atol=1e-6)
    red = lib.vectors(_ids(lib, "red")[:1])[0]
    assert float(nxt.query_vector @ red) > 0.5  # still a query for red (appended text had drifted to green)
    only_neg = make_strategy("caption", lib, vision=vision).update(st, [], neg)
    assert float(only_neg.query_vector @ lib.vectors(neg)[0]) < float(st.query_vector @ lib.vectors(neg)[0])
    assert "0.5 × the direction of 2 relevant caption(s)" in nxt.notes[-1]


def test_captions_are_made_once_on_the_safe_stored_path(lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    import picscope.pipeline.captions as captions
    from picscope.pipeline.captions import CaptionStore

    views: list[int] = []
    real_view = captions.load_view

    def counted_view(library: Library, fid: int) -> object:
        views.append(fid)
        return real_view(library, fid)

    monkeypatch.setattr(captions, "load_view", counted_view)
    fresh = _ids(lib, "blue")[3:5]  # no other test marks these
    first = ColourCaptionerTestDouble()
    nxt = make_strategy("caption", lib, vision=first).update(_state(lib, "bright colour"), fresh, [])
    assert first.calls == 2 == nxt.model_calls and views == fresh  # decoded by load_view (pixel limit, shrunk)
    stored = CaptionStore.for_library(lib).get_many(fresh, first.spec, "short")
    assert set(stored) == set(fresh) and all(c.startswith("a blue square") for c in stored.values())
    second = ColourCaptionerTestDouble()  # a new session, another process: the stored captions are reused
    again = make_strategy("caption", lib, vision=second).update(_state(lib, "bright colour"), fresh, [])
    assert second.calls == 0 == again.model_calls and again.query_text == nxt.query_text


def test_rewrite_uses_the_llm_answer_and_explains_it(lib: Library) -> None:
    llm = ScriptedChatTestDouble(
        [_answer(query="bright colour, blue", shared_details=["blue"], dropped=["cat"], avoid=["red"])]
    )
    vision = ColourCaptionerTestDouble()
    strat = make_strategy("rewrite", lib, llm=llm, vision=vision)
    nxt = strat.update(_state(lib, "bright colour"), _ids(lib, "blue")[:3], _ids(lib, "red")[:1])
    assert nxt.query_text == "bright colour, blue"
    assert nxt.fallback is None and "added shared details: blue" in nxt.notes[-1] and "cat" in nxt.notes[-1]
    assert nxt.negative_propositions == ["The image shows red."]
    assert 3 <= vision.calls <= 4  # 4 captions, less any stored by an earlier test (the red image)
    assert nxt.model_calls == vision.calls + 1  # + 1 LLM call
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


def test_rewrite_makes_one_call_and_falls_back_on_an_unusable_answer(lib: Library) -> None:
    """The strategy does not retry on top of the chat model (which retries and repairs itself): one call, then the
    documented fallback to embedding feedback."""
    vision = ColourCaptionerTestDouble()
    bad = ScriptedChatTestDouble(["no json here", _answer(query="bright colour, green")])
    st = _state(lib, "bright colour")
    fb = make_strategy("rewrite", lib, llm=bad, vision=vision).update(st, _ids(lib, "green")[:2], [])
    assert len(bad.calls) == 1
    assert fb.fallback and "unparsable" in fb.fallback and "rocchio" in fb.fallback
    assert fb.query_text == "bright colour" and not np.array_equal(fb.query_vector, st.query_vector)


def test_the_chat_layer_is_the_one_that_repairs_an_unparsable_rewrite(lib: Library, tmp_path: Path) -> None:
    from picscope.models.cache import ResponseCache
    from picscope.models.chat import BaseChat

    class Scripted(BaseChat):
        spec = "test-double:base-chat"

        def __init__(self, answers: list[str]) -> None:
            super().__init__(retries=2, backoff=0.0, cache=ResponseCache(tmp_path, enabled=False))
            self.answers, self.payloads = list(answers), []  # type: list[str], list[dict[str, object]]

        def _complete(self, payload: dict[str, object], timeout: float) -> dict[str, object]:
            self.payloads.append(payload)
            return {"choices": [{"message": {"content": self.answers.pop(0)}}]}

    chat = Scripted(["no json here", _answer(query="bright colour, green")])
    nxt = make_strategy("rewrite", lib, llm=chat, vision=ColourCaptionerTestDouble()).update(
        _state(lib, "bright colour"), _ids(lib, "green")[:1], [])
    assert nxt.query_text == "bright colour, green" and nxt.fallback is None
    assert len(chat.payloads) == 2  # the chat layer's repair round, not a second strategy-level call
    sent = chat.payloads[0]["messages"]
    assert any("User query: bright colour" in m["content"] for m in sent)  # type: ignore[index,union-attr]
    assert any("at most 40 words" in m["content"] for m in sent)  # type: ignore[index,union-attr]


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


class _VectorLibrary:
    """A library reduced to what Rocchio reads: stored vectors by id and an encoder with named parts."""

    def __init__(self, vectors: np.ndarray, parts: dict[str, tuple[int, int]] | None) -> None:
        self.rows = vectors.astype(np.float32)
        self.encoder = type("Enc", (), {"vector_parts": parts})()

    def vectors(self, ids: list[int]) -> np.ndarray:
        return self.rows[ids]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("the anchor vector is given")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x)).astype(np.float32)


def test_rocchio_blend_follows_the_positives_mutual_similarity() -> None:
    from picscope.feedback.rocchio import blend, coherence

    same = np.array([[1.0, 0.0], [0.99, 0.05], [0.98, 0.1]])
    apart = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1]])
    assert coherence(same) > 0.95 and coherence(apart) < 0.0 and coherence(same[:1]) is None
    assert blend(coherence(same), 3) == 1.0 and blend(coherence(apart), 3) == 0.0
    assert blend(None, 1) == 0.0  # one positive: cautious, diverse weights
    assert blend(None, 0) == 0.5
    assert 0.0 < blend(0.65, 2) < 1.0


def test_rocchio_classic_is_the_textbook_formula_and_adaptive_uses_it_for_near_duplicates() -> None:
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=8))
    near = np.stack([_unit(base + 0.01 * rng.normal(size=8)) for _ in range(3)])
    neg = _unit(rng.normal(size=8))
    lib = _VectorLibrary(np.vstack([near, neg[None]]), None)
    q0 = _unit(rng.normal(size=8))
    st = FeedbackState("q", "q", q0, anchor_vector=q0)
    expected = _unit(1.0 * q0 + 0.75 * near.mean(axis=0) - 0.15 * neg)
    classic = make_strategy("rocchio-classic", lib).update(st, [0, 1, 2], [3])
    assert np.allclose(classic.query_vector, expected, atol=1e-6) and classic.notes[-1].startswith("rocchio-classic")
    adaptive = make_strategy("rocchio", lib).update(st, [0, 1, 2], [3])
    # coherent positives: the classic weights; the negative pushes only with its part outside span(q0, positives)
    pos = near.mean(axis=0)
    span, _ = np.linalg.qr(np.stack([q0, pos], axis=1))
    expected_outside = _unit(1.0 * q0 + 0.75 * pos - 0.15 * (neg - span @ (span.T @ neg)))
    assert np.allclose(adaptive.query_vector, expected_outside, atol=1e-5)
    assert not np.allclose(adaptive.query_vector, expected, atol=1e-3)
    assert "coherent weights" in adaptive.notes[-1]


def test_rocchio_negatives_change_nothing_inside_the_request_and_relevant_directions() -> None:
    """"a dog in the snow": dog+snow photos relevant, a snow photo without a dog not relevant. The negative may only
    push along what it does not share with the query and the relevant images: projected back onto
    span(query, relevant mean), the new query points exactly where it points without the negative."""
    rng = np.random.default_rng(3)
    q0 = _unit(rng.normal(size=16))
    relevant = np.stack([_unit(q0 + 0.8 * rng.normal(size=16)) for _ in range(3)])
    negative = _unit(0.7 * q0 + rng.normal(size=16))  # shares much of the request
    lib = _VectorLibrary(np.vstack([relevant, negative[None]]), None)
    st = FeedbackState("a dog in the snow", "a dog in the snow", q0, anchor_vector=q0)
    span, _ = np.linalg.qr(np.stack([q0, relevant.mean(axis=0)], axis=1))

    def inside(v: np.ndarray) -> np.ndarray:
        return _unit(span @ (span.T @ v))

    for name in ("rocchio", "rocchio-classic"):
        without = make_strategy(name, lib).update(st, [0, 1, 2], []).query_vector
        with_neg = make_strategy(name, lib).update(st, [0, 1, 2], [3]).query_vector
        assert with_neg @ negative < without @ negative  # the negative still pushes
        if name == "rocchio":
            assert np.allclose(inside(with_neg), inside(without), atol=1e-5)
        else:  # the textbook formula also moves the query inside the request's own directions
            assert not np.allclose(inside(with_neg), inside(without), atol=1e-3)


def test_rocchio_diverse_positives_get_per_part_weights() -> None:
    from picscope.feedback.rocchio import DIVERSE

    rng = np.random.default_rng(1)
    parts = {"heads": (0, 4), "memory": (4, 6), "labels": (6, 9), "hub": (9, 10)}
    pos = np.eye(10, dtype=np.float32)[[0, 1, 7]]  # mutually orthogonal: coherence 0
    neg = _unit(rng.normal(size=10))
    lib = _VectorLibrary(np.vstack([pos, neg[None]]), parts)
    q0 = _unit(rng.normal(size=10))
    st = FeedbackState("q", "q", q0, anchor_vector=q0)
    out = make_strategy("rocchio", lib).update(st, [0, 1, 2], [3])
    span, _ = np.linalg.qr(np.stack([q0, pos.mean(axis=0)], axis=1))
    neg_out = neg - span @ (span.T @ neg)  # the negative's part outside span(query, relevant mean)
    raw = np.empty(10, np.float32)
    for name, (a, b) in parts.items():
        w = DIVERSE[name]
        raw[a:b] = w.alpha * q0[a:b] + w.beta * pos.mean(axis=0)[a:b] - w.gamma * neg_out[a:b]
    assert np.allclose(out.query_vector, _unit(raw), atol=1e-6)
    assert "diverse weights" in out.notes[-1]
    # the label part: positives add nothing (β = 0), so the positive on column 7 does not lift it
    assert DIVERSE["labels"].beta == 0.0
    # a layout the parts do not fit (vectors of another encoder) is weighted as one space, without error
    short = _VectorLibrary(np.vstack([pos, neg[None]])[:, :8], parts)
    q8 = _unit(q0[:8])
    flat = make_strategy("rocchio", short).update(FeedbackState("q", "q", q8, anchor_vector=q8), [0, 1, 2], [3])
    w = DIVERSE["*"]
    span8, _ = np.linalg.qr(np.stack([q8, pos[:, :8].mean(axis=0)], axis=1))
    neg8 = neg[:8] - span8 @ (span8.T @ neg[:8])
    exp = _unit(w.alpha * q8 + w.beta * pos[:, :8].mean(axis=0) - w.gamma * neg8)
    assert np.allclose(flat.query_vector, exp, atol=1e-6)


def test_bundled_encoder_names_its_vector_parts() -> None:
    from picscope.encoders import bundled_available, make_encoder

    if not bundled_available():
        pytest.skip("the bundled encoder's weights are not in this build")
    enc = make_encoder("bundled")
    parts = enc.vector_parts
    assert parts is not None and list(parts) == ["heads", "memory", "labels", "hub"]
    spans = sorted(parts.values())
    assert spans[0][0] == 0 and spans[-1][1] == enc.dim
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous, no gaps


def test_rewrite_prompt_is_a_versioned_file_of_the_one_prompt_system() -> None:
    import picscope
    from picscope.models.prompts import load_prompt

    p = load_prompt("rewrite")
    assert p.id == "rewrite.v1"
    system, user = p.render(max_words=12, query="a $5 note {negatives}", positives="- a red square",
                            negatives="- (none)")
    assert "at most 12 words" in system and "$max_words" not in system
    assert '{"query": "...", "shared_details"' in system  # the JSON example is left as written
    assert "User query: a $5 note {negatives}" in user  # values are inserted literally, never re-substituted
    assert "- a red square" in user and user.rstrip().endswith("- (none)")
    assert not (Path(picscope.__file__).parent / "feedback" / "prompts").exists()  # no second prompt folder
