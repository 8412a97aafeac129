"""Negative constraints: what the images marked not relevant show, and the relevant ones and the query do not.

Each becomes a proposition expected to be FALSE for a good result ("The image shows a dog."), kept in
`FeedbackState.negative_propositions` for the verifier stage of the pipeline. Sources: the LLM's `avoid` list when
a rewrite ran, else the words of the not-relevant captions that appear in no relevant caption and not in the query.
"""

from __future__ import annotations

import re
from collections import Counter

_STOP_WORDS = """
a an the and or of in on at to with without for from by near next over under into onto is are was were be
being been it its this that these those there here some several many few two three one his her their our
your my who whom which while as up down out off very small large big little image photo picture view close
shot front back side top bottom left right other another each both has have having does do doing looking
something someone people person man woman men women group
"""
STOP = frozenset(re.findall(r"\S+", _STOP_WORDS))
MAX_PROPOSITIONS = 3
MAX_PHRASE_WORDS = 5  # longer "avoid" items are whole captions, not attributes: ignored


def _terms(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if w not in STOP and len(w) > 2]


def negative_propositions(
    query: str, positive_captions: list[str], negative_captions: list[str], avoid: list[str] | None = None
) -> list[str]:
    keep = set(_terms(query)) | {t for c in positive_captions for t in _terms(c)}
    phrases: list[str] = []
    for a in avoid or []:
        a = a.strip().strip(".").lower()
        if a and len(a.split()) <= MAX_PHRASE_WORDS and not (set(_terms(a)) & keep) and a not in phrases:
            phrases.append(a)
    if not phrases:
        counts = Counter(t for c in negative_captions for t in dict.fromkeys(_terms(c)) if t not in keep)
        phrases = [t for t, _ in counts.most_common(MAX_PROPOSITIONS)]
    return [f"The image shows {p}." for p in phrases[:MAX_PROPOSITIONS]]
