"""Stages 1–3 with the bundled verifier: stored cells instead of decoded photos, stage 1 anchored on the request's
own search (query bank + the default re-rank), caption fusion on one scale, and what `--explain` says ran."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest

from picscope import Library
from picscope.cli import main
from picscope.config import PipelineConfig
from picscope.models.bundled_vision import BundledVision
from picscope.photocells import PhotoCells
from picscope.pipeline import Request, make_pipeline
from picscope.pipeline.captions import load_view
from picscope.pipeline.explain import render
from picscope.pipeline.imagescope import ImageScopePipeline


@pytest.fixture(scope="module")
def library_path(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo photos with the default encoder and configuration (query bank and re-rank on, cells stored)."""
    path = tmp_path_factory.mktemp("stages") / "lib"
    with Library.open(path, encoder="bundled") as lib:
        lib.index(demo_folder)
    return path


@pytest.fixture()
def lib(library_path: Path, tmp_path: Path) -> Iterator[Library]:
    copy = tmp_path / "lib"
    shutil.copytree(library_path, copy)
    with Library.open(copy) as opened:
        yield opened


class _Decodes:
    """Counts the photos the cell lookup decodes (its one decode path: `PhotoCells._load`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ids: list[int] = []
        original = PhotoCells._load

        def counted(cells: PhotoCells, record):  # type: ignore[no-untyped-def]
            self.ids.append(record.id)
            return original(cells, record)

        monkeypatch.setattr(PhotoCells, "_load", counted)


def _no_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any decode of a candidate for a vision model fails the test."""

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("a photo was decoded")

    monkeypatch.setattr("picscope.pipeline.captions.load_view", boom)
    monkeypatch.setattr(ImageScopePipeline, "_view", boom)
    monkeypatch.setattr(PhotoCells, "_load", boom)


# -- the cell lookup --------------------------------------------------------------------------------------------
def test_bundled_vision_scores_library_photos_from_stored_cells(lib: Library, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    ids = sorted(lib.catalog.ok_ids())[:6]
    vision = BundledVision()
    images = [load_view(lib, i) for i in ids]
    from_pixels = vision.judge("a cat", images)
    asked = ["is there a cat?", "is it outdoors?"]
    verified_pixels = [vision.verify(im, asked) for im in images]
    _no_pixels(monkeypatch)
    from_cells = vision.judge_ids(lib, "a cat", ids)
    verified = vision.verify_ids(lib, ids, asked)
    assert from_cells is not None and verified is not None
    # stored int8 cells of the index-time pass vs cells of the decoded view: the same evidence, a little rounding
    np.testing.assert_allclose([v.score for v in from_cells], [v.score for v in from_pixels], atol=0.08)
    np.testing.assert_allclose(verified, verified_pixels, atol=0.08)
    assert all(v.reason.startswith("verifier match") for v in from_cells)
    assert sorted(v.rank for v in from_cells) == list(range(1, len(ids) + 1))


def test_photos_without_stored_cells_are_decoded_once_then_read(lib: Library, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    ids = sorted(lib.catalog.ok_ids())[:6]
    store = lib.photo_cells.store
    store.delete(np.array(ids[:2]))
    decodes = _Decodes(monkeypatch)
    vision = BundledVision()
    first = vision.judge_ids(lib, "a horse", ids)
    assert first is not None and len(first) == 6
    assert sorted(decodes.ids) == ids[:2]  # only the two without cells
    assert set(ids) <= set(store.ids().tolist())  # and kept for the next query
    again = vision.judge_ids(lib, "a horse", ids)
    assert again is not None and sorted(decodes.ids) == ids[:2]
    np.testing.assert_allclose([v.score for v in again], [v.score for v in first], atol=0.02)


def test_cells_of_another_verifier_are_not_read(lib: Library) -> None:
    other = type("OtherVerifier", (), {"name": "verifier-other@0"})()
    vision = BundledVision(verifier=other)
    assert vision.judge_ids(lib, "a cat", sorted(lib.catalog.ok_ids())[:3]) is None  # the caller decodes


def test_stages_1_to_3_decode_no_photo_when_cells_exist(lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = make_pipeline(lib, "imagescope", stages=(1, 2, 3), vision="bundled",
                         config=PipelineConfig(reasoner="rules"))
    _no_pixels(monkeypatch)
    out = pipe.run(Request("a red rocket on a launch pad"), k=5)
    assert out.stages == [1, 2, 3], out.explanation["skipped"]
    assert all(c.judge is not None for c in out.candidates[:5])
    assert all(c.answers for c in out.candidates[:5])


def test_session_request_check_reads_stored_cells(lib: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    from picscope.feedback.check import RequestCheck

    hits = lib.search("a cat", k=10, rerank=False)
    _no_pixels(monkeypatch)
    check = RequestCheck(BundledVision(), "a cat", candidates=8)
    out = check.rerank(lib, hits)
    assert check.last_error is None
    assert sorted(r.id for r in out[:8]) == sorted(r.id for r in hits[:8])
    assert [r.rank for r in out] == list(range(1, 11))


# -- stage 1 ----------------------------------------------------------------------------------------------------
def test_stage1_keeps_the_default_search_order_for_a_plain_request(lib: Library) -> None:
    """With the request's own words as the anchor, stage 1 is the default search: query bank + verifier re-rank."""
    pipe = ImageScopePipeline(lib, PipelineConfig(reasoner="rules", anchor_weight=1.0, caption_weight=0.0),
                              vision=BundledVision())
    for text in ("a cup of coffee", "an astronaut in a space suit", "a horse"):
        out = pipe.run(Request(text), k=8, stages=(1,))
        assert [r.id for r in out.results] == [h.id for h in lib.search(text, k=8)], text
        ranked = out.explanation["intent"]
        settings = lib.rerank_for()
        assert settings is not None and ranked["query_bank"] is True
        assert ranked["rerank"]["pool"] == settings.pool and ranked["rerank"]["scored"] == 17
        assert all(c.match is not None for c in out.candidates[:8])
    # without the re-rank (the library's switch), stage 1 is the query bank's order
    lib.config.search.rerank = False
    out = pipe.run(Request("a horse"), k=8, stages=(1,))
    assert out.explanation["intent"]["rerank"] is None
    assert [r.id for r in out.results] == [h.id for h in lib.search("a horse", k=8)]


def test_descriptions_move_stage1_only_by_their_weight(lib: Library) -> None:
    text = "a cup of coffee, a saucer"
    own = ImageScopePipeline(lib, PipelineConfig(reasoner="rules", anchor_weight=1.0, caption_weight=0.0))
    mixed = ImageScopePipeline(lib, PipelineConfig(reasoner="rules", anchor_weight=0.5, caption_weight=0.0))
    a, b = own.run(Request(text), k=17, stages=(1,)), mixed.run(Request(text), k=17, stages=(1,))
    assert a.explanation["intent"]["anchor"] == text == b.explanation["intent"]["anchor"]
    assert sorted(r.id for r in a.results) == sorted(r.id for r in b.results)
    composed = own.run(Request("the same but at night", reference=a.results[0].id), k=5, stages=(1,))
    assert composed.explanation["intent"]["anchor"] is None  # a change is not a description of the target
    assert composed.explanation["intent"]["rerank"] is None


def test_a_few_captioned_candidates_do_not_jump_the_others(lib: Library) -> None:
    """Captions are fused on the standardised scale with the pool's mean for uncaptioned photos: one captioned
    photo carries no information against the others and keeps its place (mixing its raw cosine into query-bank
    scores lifted every captioned photo: stage 1's −2.0 R@1 on dev)."""
    text = "a cup of coffee"
    plain = ImageScopePipeline(lib, PipelineConfig(reasoner="rules", caption_weight=0.0), vision=BundledVision())
    before = [r.id for r in plain.run(Request(text), k=17, stages=(1,)).results]
    fused = ImageScopePipeline(lib, PipelineConfig(reasoner="rules", caption_weight=0.5), vision=BundledVision())
    fused.captions.put(before[-1], "bundled", "short", text)  # the last photo's caption says exactly the request
    out = fused.run(Request(text), k=17, stages=(1,))
    assert [r.id for r in out.results] == before
    assert any("mean caption similarity" in n for n in out.explanation["notes"])
    fused.captions.put(before[-2], "bundled", "short", "a brick wall")  # two captions: now they say something
    out2 = fused.run(Request(text), k=17, stages=(1,))
    order = [r.id for r in out2.results]
    assert order.index(before[-1]) < order.index(before[-2])


# -- the explanation ---------------------------------------------------------------------------------------------
def _text(group: object) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    with redirect_stdout(StringIO()):
        console.print(group)
    return console.export_text()


def test_explanation_says_what_ranked_a_plain_search(lib: Library) -> None:
    out = make_pipeline(lib, "encoder").run(Request("a horse"), k=5)
    text = _text(render(out.explanation, out.candidates, 5))
    assert "encoder-only" not in text
    assert "encoder + query bank + verifier re-rank of the top" in text
    lib.config.search.rerank = False
    off = make_pipeline(lib, "encoder").run(Request("a horse"), k=5)
    off_text = _text(render(off.explanation, off.candidates, 5))
    assert "re-rank" not in off_text and "encoder + query bank" in off_text
    composed = make_pipeline(lib, "encoder").run(Request("brighter", reference=out.results[0].id), k=5)
    assert "encoder only (no query bank, no re-rank)" in _text(render(composed.explanation, composed.candidates, 5))


def test_explanation_of_the_stages_says_stage1_reranked(lib: Library) -> None:
    pipe = make_pipeline(lib, "imagescope", stages=(1, 2, 3), vision="bundled",
                         config=PipelineConfig(reasoner="rules"))
    out = pipe.run(Request("a cat"), k=5)
    text = _text(render(out.explanation, out.candidates, 5))
    assert "ranking: the request's own words" in text and "verifier re-rank of the top" in text
    assert "stages run: [1, 2, 3]" in text


def test_cli_search_explain_states_the_rerank(library_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "a cup of coffee", "--explain", "-k", "3", "--library", str(library_path)]) == 0
    text = capsys.readouterr().out
    assert "encoder-only" not in text
    assert "query bank + verifier re-rank of the top" in text


def test_the_judge_only_explains_after_the_stage1_rerank(lib: Library) -> None:
    """The bundled judge reads the verifier's evidence that stage 1's re-rank already counted: after the re-rank
    its weight is 0 (tuned: any weight cost R@1), without it (composed requests) the measured 0.75."""
    pipe = make_pipeline(lib, "imagescope", stages=(1, 2, 3), vision="bundled",
                         config=PipelineConfig(reasoner="rules"))
    out = pipe.run(Request("a cup of coffee"), k=10)
    assert out.stages == [1, 2, 3] and out.explanation["config"]["judge_weight"] == 0.0
    assert [c.id for c in out.candidates[:10]] == [c.id for c in sorted(out.candidates[:10],
                                                                         key=lambda c: c.ranks["stage1"])]
    assert all(c.judge is not None for c in out.candidates[:10])  # it still judged: the reasons are shown
    composed = pipe.run(Request("the same but at night", reference=out.results[0].id), k=5)
    assert composed.explanation["config"]["judge_weight"] == 0.75
    set_weight = make_pipeline(lib, "imagescope", stages=(1, 2, 3), vision="bundled",
                               config=PipelineConfig(reasoner="rules", judge_weight=0.5))
    assert set_weight.run(Request("a cup of coffee"), k=5).explanation["config"]["judge_weight"] == 0.5
