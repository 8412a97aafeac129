"""The round loop of relevance feedback, shared by interactive sessions (`picscope.sessions`) and the evaluation
harness (`picscope.eval.runner`): each round shows the next page of results that no earlier round showed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from picscope.feedback.check import RequestCheck
    from picscope.library import Library, SearchResult


def unseen_page(
    library: Library,
    vector: np.ndarray,
    page_size: int,
    shown: Iterable[int] = (),
    exclude: Iterable[int] = (),
    *,
    depth: int | None = None,
    check: RequestCheck | None = None,
) -> list[SearchResult]:
    """The best `page_size` results for `vector`, leaving out the images already `shown` in this loop and those in
    `exclude` (a reference image, say). Ranks start at 1 on every page.

    `depth`: rank this many results and take the page from their top (default: just the page). Which of several
    images with exactly the same score (copies of one photo) makes the page can depend on it; the evaluation
    harness ranks its whole gallery, which keeps its figures exactly reproducible from one version to the next.

    `check`: re-rank the top `check.candidates` unseen results against the original request (`feedback.check`)
    before the page is taken.
    """
    n = max(page_size, depth or 0, check.candidates if check is not None else 0)
    results = library.search_vector(vector, n, exclude_ids=[*exclude, *shown])
    if check is not None:
        results = check.rerank(library, results)
    return results[:page_size]
