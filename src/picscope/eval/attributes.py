"""Does a feedback round keep what the person asked for? One session round on attribute requests.

For a request such as "a dog running in the snow", round 0 shows a page; the photos whose human captions show
what was asked (a dog *and* snow) are marked relevant (with `negatives`, the others not relevant); round 1 shows
the next page of unseen photos. The measure is the share of photos with the attribute ("snow", by their human
captions) on page 1 and on page 2: a round that keeps the request has page 2 ≥ page 1.

Patterns are regular expressions matched at word starts in the photo's five human captions (lower case). "In the
water" counts the bodies of water people name instead of the word: a child in a pool, the waves, a fountain
(`WATER`); with the word "water" alone, pages of children in pools score as misses although every one of them is
in the water (docs/sessions.md has both counts). Used by `benchmarks/bench_session_attributes.py` and
`tests/test_session_attributes.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picscope.library import Library

WATER = "water|pool|swim|ocean|sea|lake|river|splash|wave|surf|fountain|sprinkler"
CHILD = "child|boy|girl|kid"
BIKE = "bike|bicycl|cycl"


@dataclass(frozen=True)
class AttributeCase:
    request: str
    wanted: tuple[str, ...]  # every pattern must match for a photo to be marked relevant
    attribute: str  # the pattern counted on both pages


CASES = (
    AttributeCase("a dog running in the snow", ("dog", "snow"), "snow"),
    AttributeCase("a child playing in the water", (CHILD, WATER), WATER),
    AttributeCase("a man riding a bike", ("man", BIKE), BIKE),
)


@dataclass(frozen=True)
class AttributeRound:
    case: AttributeCase
    marked: int  # photos of page 1 marked relevant
    page1: float  # share of page 1 with the attribute
    page2: float  # share of page 2 with the attribute

    @property
    def kept(self) -> bool:
        return self.page2 >= self.page1


def matches(captions: str, pattern: str) -> bool:
    return bool(re.search(rf"\b(?:{pattern})", captions))


def attribute_round(
    library: Library,
    captions_of: Callable[[int], str],
    case: AttributeCase,
    strategy: str,
    *,
    page_size: int = 10,
    negatives: bool = False,
    vision: Any = None,
    check: bool = True,
) -> AttributeRound:
    """One session round on `case`; `captions_of(id)` gives a photo's human captions (lower case, joined)."""
    from picscope.sessions import Session
    from picscope.sessions.session import CHECK_OPTION

    s = Session.create(library, case.request, strategy=strategy, page_size=page_size, vision=vision,
                       options={CHECK_OPTION: check})
    first = [x.id for x in s.page()]
    relevant = [i for i in first if all(matches(captions_of(i), w) for w in case.wanted)]
    if relevant:
        s.mark(relevant, True)
    others = [i for i in first if i not in relevant]
    if negatives and others:
        s.mark(others, False)
    second = [x.id for x in s.next_round()]
    return AttributeRound(case, len(relevant), _share(first, captions_of, case.attribute),
                          _share(second, captions_of, case.attribute))


def _share(ids: Sequence[int], captions_of: Callable[[int], str], pattern: str) -> float:
    return sum(matches(captions_of(i), pattern) for i in ids) / max(len(ids), 1)
