"""The rules denoiser of `rewrite` feedback (no LLM): the user's words plus what the relevant captions agree on.

Paper A's denoiser is an LLM that reads the captions of the images marked relevant and rewrites the request,
keeping the user's words and adding only details the relevant images share. These rules do the same, offline and
deterministically, from the stored captions alone:

1. The user's words are kept whole and first (never capped, never reordered).
2. A caption term (a content word, or two adjacent content words such as "red shirt") is added when at least
   half of the relevant captions say it (and at least two of them: a word only one caption has is noise).
3. It is dropped when the not-relevant captions say it at least as often (it does not tell the marked photos
   from the others), or when it contradicts the user: a different value of a slot the user filled (a colour, a
   count, who it is: "red" asked, "blue" in the captions).
4. At most `max_terms` terms, most shared first, and `max_words` words in all (the user's words always fit).

The result is text; the strategy (`feedback.text.RuleRewrite`) embeds it and fuses it with the request's
vector, which stays the anchor.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from picscope.feedback.negatives import STOP as NEGATIVE_STOP

# words that say nothing a photo search can use, on top of the negatives' stop list
_EXTRA_STOP = frozenset(re.findall(r"\S+", """
    is are was were be been being am has have had does did the and with while they them their its into onto
    through around along across about above below behind beside between against towards toward away
    then there where what when how why not no yes just also very really still
    standing stands sitting sits looking looks wearing wears holding holds front background camera
    shown shows showing scene area
    """))
STOP = NEGATIVE_STOP | _EXTRA_STOP

# slots a request fills with one value: a caption's other value of the same slot contradicts the user
EXCLUSIVE: tuple[frozenset[str], ...] = (
    frozenset({"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray",
               "grey"}),
    frozenset({"one", "two", "three", "four", "five", "six", "several", "many", "group", "crowd"}),
    frozenset({"man", "woman", "boy", "girl", "baby"}),
    frozenset({"dog", "cat", "horse", "cow", "sheep", "bird"}),
)

MIN_SHARE = 0.5  # of the relevant captions that must say a term
MIN_CAPTIONS = 2  # and at least this many of them
MAX_TERMS = 6
MAX_WORDS = 40


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'-]*|[0-9]+", text.lower())


def stem(word: str) -> str:
    """A plural-insensitive key ("dogs" and "dog" are one term); not a full stemmer."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content(word: str) -> bool:
    return len(word) > 2 and word not in STOP and not word.isdigit()


def terms(caption: str) -> dict[str, str]:
    """{key: surface form} of a caption's terms: its content words and adjacent content-word pairs."""
    out: dict[str, str] = {}
    words = tokens(caption)
    for i, w in enumerate(words):
        if not content(w):
            continue
        out.setdefault(stem(w), w)
        if i + 1 < len(words) and content(words[i + 1]):
            nxt = words[i + 1]
            out.setdefault(f"{stem(w)} {stem(nxt)}", f"{w} {nxt}")
    return out


@dataclass(frozen=True)
class Denoised:
    """The denoiser's answer: the rewritten text and why (for the round's note)."""

    text: str  # the user's words, then the added terms
    added: list[str] = field(default_factory=list)  # shared caption terms, most shared first
    dropped: list[str] = field(default_factory=list)  # shared terms left out: said by not-relevant captions, or
    # contradicting the user's words


def _contradicts(key: str, user: set[str]) -> bool:
    for word in key.split():
        for slot in EXCLUSIVE:
            if word in slot and (user & slot) and word not in user:
                return True
    return False


def denoise(query: str, relevant: Sequence[str], not_relevant: Sequence[str] = (), *, min_share: float = MIN_SHARE,
            min_captions: int = MIN_CAPTIONS, max_terms: int = MAX_TERMS, max_words: int = MAX_WORDS) -> Denoised:
    """Rewrite `query` from the captions of the images marked relevant / not relevant (see the module docstring).

    Safe on any input: empty or blank captions are ignored; with no usable caption the text is the query itself.
    """
    original = " ".join(query.split())
    user = {stem(w) for w in tokens(original)}
    pos = [terms(c) for c in relevant if c and c.strip()]
    neg = [terms(c) for c in not_relevant if c and c.strip()]
    if not pos:
        return Denoised(original)
    pos_count: Counter[str] = Counter(k for t in pos for k in t)
    neg_count: Counter[str] = Counter(k for t in neg for k in t)
    surface: dict[str, Counter[str]] = {}
    order: dict[str, int] = {}
    for t in pos:
        for k, s in t.items():
            surface.setdefault(k, Counter())[s] += 1
            order.setdefault(k, len(order))
    need = max(min_captions, min_share * len(pos))
    candidates = [k for k, n in pos_count.items() if n >= need and not set(k.split()) <= user]
    kept: list[str] = []
    dropped: list[str] = []
    for k in sorted(candidates, key=lambda k: (-pos_count[k] / len(pos), -len(k.split()), order[k])):
        share_pos = pos_count[k] / len(pos)
        share_neg = neg_count[k] / len(neg) if neg else 0.0
        if share_neg >= share_pos or _contradicts(k, user):
            dropped.append(surface[k].most_common(1)[0][0])
            continue
        kept.append(k)
    # a pair covers its words: "red shirt" makes "red" and "shirt" redundant
    pairs = [k for k in kept if " " in k]
    covered = {w for p in pairs for w in p.split()}
    added = [surface[k].most_common(1)[0][0] for k in kept if " " in k or k not in covered][:max_terms]
    budget = max_words - len(original.split())
    fitted: list[str] = []
    for term in added:
        n = len(term.split())
        if n > budget:
            break
        fitted.append(term)
        budget -= n
    text = f"{original}, {', '.join(fitted)}" if fitted and original else ", ".join(fitted) or original
    return Denoised(text, fitted, dropped)
