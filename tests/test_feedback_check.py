"""The request check of feedback rounds (`picscope.feedback.check`): the next page's candidates re-ranked by the
vision model's judgement of the original request, in the round loop and in sessions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from picscope import Library
from picscope.feedback.check import RequestCheck
from picscope.feedback.rounds import unseen_page
from picscope.models.base import Verdict, VisionBase
from picscope.sessions import Session
from tests.feedback_test_doubles import write_colour_images


class BrightnessJudgeTestDouble(VisionBase):
    """Judges a photo by its brightness (a stand-in for evidence the encoder's ranking does not have)."""

    spec = "test-double:brightness-judge"
    answers_from_encoder = False

    def __init__(self, fail: bool = False) -> None:
        self.requests: list[str] = []
        self.fail = fail

    def caption(self, image: Image.Image, style: str = "short") -> str:
        return "a square"

    def verify(self, image: Image.Image, questions: Sequence[str], reference: Image.Image | None = None) -> list[float]:
        return [0.5 for _ in questions]

    def judge(self, instruction: str, candidates: Sequence[Image.Image],
              reference: Image.Image | None = None) -> list[Verdict]:
        self.requests.append(instruction)
        if self.fail:
            raise TimeoutError("the judge timed out")
        return [Verdict(float(np.asarray(im, np.float32).mean() / 255.0) * 0.98 + 0.01, "brightness")
                for im in candidates]


class EncoderEvidenceTestDouble(BrightnessJudgeTestDouble):
    answers_from_encoder = True  # like `socratic`: its answers are the encoder's own similarities


def _brightness(lib: Library, fid: int) -> float:
    rec = lib.get(fid)
    assert rec is not None
    return float(np.asarray(Image.open(rec.path).convert("RGB"), np.float32).mean())


@pytest.fixture()
def lib(tmp_path: Path) -> Iterator[Library]:
    write_colour_images(tmp_path / "photos", per_colour=8)
    library = Library.open(tmp_path / "lib", encoder="test-colour")
    library.index(tmp_path / "photos")
    yield library
    library.close()


def test_the_check_reorders_only_its_candidates_and_renumbers(lib: Library) -> None:
    vec = lib.embed_texts(["red"])[0]
    results = lib.search_vector(vec, 24)
    judge = BrightnessJudgeTestDouble()
    out = RequestCheck(judge, "red", candidates=6, weight=100.0).rerank(lib, results)
    assert judge.requests == ["red"]
    assert [r.rank for r in out] == list(range(1, 25))
    top = [_brightness(lib, r.id) for r in out[:6]]
    assert top == sorted(top, reverse=True)  # the judge dominates at weight 100
    assert {r.id for r in out[:6]} == {r.id for r in results[:6]}  # only the candidates move
    assert [r.id for r in out[6:]] == [r.id for r in results[6:]]
    assert [r.id for r in out[:6]] != [r.id for r in results[:6]]  # and they did move


def test_weight_zero_or_one_candidate_leaves_the_order(lib: Library) -> None:
    results = lib.search_vector(lib.embed_texts(["green"])[0], 8)
    judge = BrightnessJudgeTestDouble()
    assert RequestCheck(judge, "green", weight=0.0).rerank(lib, results) == results
    assert RequestCheck(judge, "green").rerank(lib, results[:1]) == results[:1]
    assert judge.requests == []


def test_a_failing_judge_keeps_the_feedback_order_and_says_why(lib: Library) -> None:
    results = lib.search_vector(lib.embed_texts(["blue"])[0], 10)
    check = RequestCheck(BrightnessJudgeTestDouble(fail=True), "blue")
    assert check.rerank(lib, results) == results
    assert check.last_error is not None and "TimeoutError: the judge timed out" in check.last_error


def test_only_models_with_their_own_evidence_check() -> None:
    assert RequestCheck.usable(BrightnessJudgeTestDouble())
    assert not RequestCheck.usable(EncoderEvidenceTestDouble())
    assert not RequestCheck.usable(None)


def test_unseen_page_with_a_check_never_repeats_and_takes_the_page_from_the_candidates(lib: Library) -> None:
    vec = lib.embed_texts(["red"])[0]
    shown = [r.id for r in lib.search_vector(vec, 3)]
    check = RequestCheck(BrightnessJudgeTestDouble(), "red", candidates=5, weight=100.0)
    page = unseen_page(lib, vec, 3, shown, check=check)
    assert len(page) == 3 and not {r.id for r in page} & set(shown)
    pool = [r.id for r in lib.search_vector(vec, 5, exclude_ids=shown)]
    brightest = sorted(pool, key=lambda i: -_brightness(lib, i))[:3]
    assert [r.id for r in page] == brightest


def test_sessions_check_each_round_against_the_users_words(lib: Library) -> None:
    judge = BrightnessJudgeTestDouble()
    s = Session.create(lib, "red", page_size=4, vision=judge)
    assert judge.requests == []  # round 0 is the plain search
    s.mark([s.page()[0].id], True)
    s.next_round()
    s.next_round()
    assert judge.requests == ["red", "red"]  # the original request, not a rewritten one

    off = BrightnessJudgeTestDouble()
    s2 = Session.create(lib, "red", page_size=4, vision=off, options={"check_request": False})
    s2.next_round()
    none = BrightnessJudgeTestDouble()
    s3 = Session.create(lib, "red", page_size=4, vision=none, strategy="none")
    s3.next_round()
    assert off.requests == [] and none.requests == []


def test_a_failing_check_is_noted_in_the_round(lib: Library) -> None:
    s = Session.create(lib, "green", page_size=4, vision=BrightnessJudgeTestDouble(fail=True))
    s.mark([s.page()[0].id], True)
    page = s.next_round()
    assert len(page) == 4
    why = s.explain()["history"][-1]["why"]
    assert "rocchio" in why and "request check skipped (TimeoutError" in why  # the feedback note, then the check


def test_composed_sessions_are_not_checked(lib: Library) -> None:
    judge = BrightnessJudgeTestDouble()
    vec = lib.embed_texts(["red"])[0]
    s = Session.create(lib, "but darker", page_size=4, vector=vec, vision=judge, options={"reference": {"id": 1}})
    s.mark([s.page()[0].id], True)
    s.next_round()
    assert judge.requests == []  # "but darker" alone is not what the person asked for
