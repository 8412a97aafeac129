"""The rules denoiser of `rewrite` feedback (`picscope.feedback.denoise`) on hand-made captions, and the strategy
that uses it without an LLM (`rewrite` / `combined` with `denoiser="rules"`, the offline default)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from picscope import Library
from picscope.errors import ConfigError
from picscope.feedback import FeedbackState, choose_denoiser, make_strategy
from picscope.feedback.denoise import denoise, stem, terms
from picscope.feedback.text import LLMDenoiser, RulesDenoiser, fused
from tests.feedback_test_doubles import (
    ColourCaptionerTestDouble,
    ScriptedChatTestDouble,
    colour_library,
    ids_of_colour,
    start_state,
)

SNOW_DOGS = [
    "a brown dog runs through the snow",
    "two dogs playing in the snow",
    "a black dog jumping in deep snow near a fence",
]


def test_shared_words_are_added_after_the_users_words() -> None:
    d = denoise("a dog running", SNOW_DOGS)
    assert d.text.startswith("a dog running, ")
    assert d.added == ["snow"]  # 3 of 3 captions; "dog(s)" and "run(s)" are the user's already
    for once in ("brown", "fence", "deep", "black", "jumping"):  # said by one caption only: noise
        assert once not in d.text


def test_words_of_the_not_relevant_captions_are_dropped() -> None:
    pos = ["a dog on a sandy beach", "a dog running on the beach", "a wet dog on the beach by the sea"]
    neg = ["a man on the beach", "children on a beach", "a cat on the beach"]
    d = denoise("dog", pos, neg)
    assert "beach" not in d.added and "beach" in d.dropped  # every not-relevant caption says it too
    neg_free = denoise("dog", pos, [])
    assert "beach" in neg_free.added


def test_pairs_are_kept_whole_and_cover_their_words() -> None:
    pos = ["a man in a red shirt climbs a rock", "a man wearing a red shirt on a rock wall", "man red shirt rock"]
    d = denoise("climber", pos)
    assert "red shirt" in d.added
    assert "red" not in d.added and "shirt" not in d.added  # covered by the pair


def test_a_caption_word_contradicting_the_user_is_dropped() -> None:
    pos = ["a blue car on a road", "a blue car parked on the road", "blue car"]
    d = denoise("a red car", pos)
    assert "blue" not in " ".join(d.added) and any("blue" in x for x in d.dropped)
    assert "road" in d.added
    assert "blue" in denoise("a car", pos).text  # no colour asked: nothing to contradict


def test_the_users_words_are_always_kept_and_the_length_is_capped() -> None:
    long_query = " ".join(f"word{i}" for i in range(50))  # longer than max_words: kept whole
    d = denoise(long_query, SNOW_DOGS, max_words=40)
    assert d.text == long_query and d.added == []
    caps = ["alpha beta gamma delta epsilon zeta eta theta"] * 3
    short = denoise("query", caps, max_words=4, max_terms=10)
    assert short.text.startswith("query") and len(short.text.replace(",", " ").split()) <= 4
    assert len(denoise("query", caps, max_terms=2).added) == 2


def test_empty_and_odd_input_is_safe() -> None:
    assert denoise("a dog", []).text == "a dog"
    assert denoise("a dog", ["", "   "]).text == "a dog"
    assert denoise("", SNOW_DOGS).text == "dog, snow"  # no words of the user's: only what the captions share
    assert denoise("", []).text == ""
    assert denoise("  a   dog  ", ["!!! ???", "1234 5678", "ééé ççç"]).text == "a dog"
    one = denoise("a dog", ["a dog in the snow"])  # one caption: "only one caption has it"
    assert one.text == "a dog" and one.added == []


def test_it_is_deterministic_and_plural_insensitive() -> None:
    assert denoise("dog", SNOW_DOGS) == denoise("dog", list(SNOW_DOGS))
    assert stem("dogs") == "dog" and stem("puppies") == "puppy" and stem("grass") == "grass"
    assert "dog" in terms("two dogs") and terms("two dogs")["dog"] == "dogs"
    d = denoise("toys", ["a dog with toys", "dogs and a toy", "a dog, a ball"])
    assert d.added == ["dog"]  # "dog"/"dogs" counted as one term, 3 of 3; "toy(s)" is the user's


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    library = colour_library(tmp_path_factory.mktemp("denoise"))
    yield library
    library.close()


_ids, _state = ids_of_colour, start_state


def test_rewrite_without_an_llm_fuses_the_rewritten_text_with_the_request(lib: Library) -> None:
    vision = ColourCaptionerTestDouble()
    strat = make_strategy("rewrite", lib, vision=vision, denoiser="rules")
    st = _state(lib, "bright colour")
    blue, red = _ids(lib, "blue")[:3], _ids(lib, "red")[:1]
    nxt = strat.update(st, blue, red)
    assert nxt.query_text.startswith("bright colour, ") and "blue" in nxt.query_text
    assert nxt.fallback is None and "rewrite (rules)" in nxt.notes[-1] and "added shared details" in nxt.notes[-1]
    assert nxt.model_calls == vision.calls  # captions only: no LLM call
    expected = fused(st.anchor_vector, lib.embed_texts([nxt.query_text])[0], strat.weight)  # type: ignore[arg-type,attr-defined]
    np.testing.assert_allclose(nxt.query_vector, expected, atol=1e-6)
    b = lib.vectors(blue).mean(axis=0)
    assert float(nxt.query_vector @ b) > float(st.query_vector @ b)
    # the anchor stays: the request's own vector still counts (not replaced by the rewritten text's)
    assert float(nxt.query_vector @ st.query_vector) > 0.3
    again = make_strategy("rewrite", lib, vision=vision, denoiser="rules").update(st, blue, red)
    np.testing.assert_array_equal(again.query_vector, nxt.query_vector)  # deterministic


def test_rewrite_with_nothing_shared_keeps_the_query(lib: Library) -> None:
    st = _state(lib, "bright colour")
    nxt = make_strategy("rewrite", lib, vision=ColourCaptionerTestDouble(), denoiser="rules").update(
        st, _ids(lib, "green")[:1], [])
    assert nxt.query_text == "bright colour" and "unchanged" in nxt.notes[-1]
    np.testing.assert_allclose(nxt.query_vector, st.query_vector / np.linalg.norm(st.query_vector), atol=1e-6)


def test_combined_without_an_llm_moves_towards_the_marked_images(lib: Library) -> None:
    st = _state(lib, "bright colour")
    blue = _ids(lib, "blue")[:3]
    nxt = make_strategy("combined", lib, vision=ColourCaptionerTestDouble(), denoiser="rules").update(st, blue, [])
    rocchio = make_strategy("rocchio", lib).update(st, blue, [])
    assert "rewrite (rules)" in nxt.notes[-1] and "combined with rocchio" in nxt.notes[-1]
    assert nxt.positives == blue and nxt.round == 1
    np.testing.assert_array_equal(nxt.anchor_vector, st.anchor_vector)
    assert not np.allclose(nxt.query_vector, rocchio.query_vector)  # the rewrite moved Rocchio's anchor
    b = lib.vectors(blue).mean(axis=0)
    assert float(nxt.query_vector @ b) > float(st.query_vector @ b)


def test_the_denoiser_is_chosen_like_the_pipelines_reasoner(lib: Library) -> None:
    chat = ScriptedChatTestDouble([])
    assert choose_denoiser(lib)[0] == "rules"  # the library's llm is the bundled tiny model (or none)
    assert choose_denoiser(lib, "bundled")[0] == "rules"
    assert choose_denoiser(lib, "gguf:/models/big.gguf")[0] == "llm"  # a model the user configured
    assert choose_denoiser(lib, "openai:http://127.0.0.1:9/v1#m")[0] == "llm"
    assert choose_denoiser(lib, chat)[0] == "llm"
    assert choose_denoiser(lib, chat, "rules")[0] == "rules"
    assert isinstance(make_strategy("rewrite", lib, llm=chat, vision=ColourCaptionerTestDouble(),
                                    denoiser="rules").denoiser, RulesDenoiser)  # type: ignore[attr-defined]
    assert isinstance(make_strategy("rewrite", lib, llm=chat, vision=ColourCaptionerTestDouble()).denoiser,
                      LLMDenoiser)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="reasoner"):
        make_strategy("rewrite", lib, vision=ColourCaptionerTestDouble(), denoiser="magic")


def test_combined_without_relevant_marks_anchors_on_the_request_not_on_the_last_query(lib: Library) -> None:
    """Rounds with nothing marked relevant must not compound: the Rocchio step of `combined` starts from the
    request (the bug: it started from the previous round's query, pushed further by every page of negatives)."""
    st = _state(lib, "bright colour")
    drifted = FeedbackState("bright colour", "bright colour", lib.embed_texts(["green"])[0],
                            anchor_vector=st.anchor_vector, round=1)
    red = _ids(lib, "red")[:2]
    strat = make_strategy("combined", lib, vision=ColourCaptionerTestDouble(), denoiser="rules")
    a, b = strat.update(st, [], red), strat.update(drifted, [], red)
    np.testing.assert_allclose(a.query_vector, b.query_vector, atol=1e-6)
    assert "the query is the request" in a.notes[-1]
    rewriter = make_strategy("rewrite", lib, vision=ColourCaptionerTestDouble(), denoiser="rules")
    rewrite = rewriter.update(drifted, [], red)
    np.testing.assert_allclose(rewrite.query_vector, st.anchor_vector / np.linalg.norm(st.anchor_vector), atol=1e-6)
