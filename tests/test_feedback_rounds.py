"""The one round loop (`picscope.feedback.rounds.unseen_page`) that sessions and the evaluation harness share."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from picscope import Library
from picscope.feedback.rounds import unseen_page
from tests.feedback_test_doubles import COLOURS, write_colour_images


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    root = tmp_path_factory.mktemp("rounds")
    write_colour_images(root / "photos", per_colour=6)
    library = Library.open(root / "lib", encoder="test-colour")
    library.index(root / "photos")
    yield library
    library.close()


def _full_ranking(lib: Library, vector: np.ndarray, exclude: list[int]) -> list[int]:
    """What the eval harness did before the loop had one home: rank the whole gallery, then take a page."""
    return [h.id for h in lib.search_vector(vector, 10_000, exclude_ids=exclude)]


@pytest.mark.parametrize("colour", sorted(COLOURS))
@pytest.mark.parametrize("page_size", [1, 4, 7])
def test_pages_are_the_full_ranking_without_what_was_shown(lib: Library, colour: str, page_size: int) -> None:
    vector = lib.embed_texts([colour])[0]
    reference = [_full_ranking(lib, vector, [])[-1]]  # excluded as a composed query's reference image is
    shown: list[int] = []
    while True:
        full = [h for h in lib.search_vector(vector, 10_000, exclude_ids=reference + shown)][:page_size]
        deep = unseen_page(lib, vector, page_size, shown, reference, depth=10_000)
        assert [h.id for h in deep] == [h.id for h in full]  # the eval harness: exactly its old pages
        page = unseen_page(lib, vector, page_size, shown, reference)  # sessions: only the page is ranked
        assert [h.score for h in page] == [h.score for h in full]  # the same, up to images with equal scores
        assert not {h.id for h in page} & set(shown + reference)
        assert [h.rank for h in page] == list(range(1, len(page) + 1))
        if not page:
            break
        shown += [h.id for h in page]
    assert sorted(shown + reference) == sorted(r.id for r in lib.catalog.all("ok"))  # every image, once


def test_copies_with_equal_scores_keep_the_eval_pages_exact(tmp_path: Path) -> None:
    """Byte-identical copies tie exactly; ranking the whole gallery (depth) pins which copy makes each page."""
    paths = write_colour_images(tmp_path / "photos", per_colour=3)
    for c, files in paths.items():
        for i, p in enumerate(files):
            for n in range(3):
                shutil.copy(p, tmp_path / "photos" / f"{c}{i}-copy{n}.png")
    with Library.open(tmp_path / "lib", encoder="test-colour") as library:
        library.index(tmp_path / "photos")
        size = len(library.catalog.all("ok"))
        vector = library.embed_texts(["red"])[0]
        shown: list[int] = []
        for _ in range(6):
            # the harness's page before the loop had one home: its whole gallery ranked, then the top taken
            old = [h.id for h in library.search_vector(vector, size, exclude_ids=shown)][:5]
            page = unseen_page(library, vector, 5, shown, depth=size)
            assert [h.id for h in page] == old
            assert [h.score for h in unseen_page(library, vector, 5, shown)] == [h.score for h in page]
            shown += old
        assert len(set(shown)) == 30


def test_sessions_and_the_eval_harness_use_the_same_loop() -> None:
    import picscope.eval.runner as runner
    import picscope.sessions.session as session

    assert runner.unseen_page is unseen_page and session.unseen_page is unseen_page
