"""Text-level feedback (the interactive-retrieval paper): caption the images marked relevant, expand the query.

- `CaptionExpansion` (`caption`): the captions of the images marked relevant, anchored on the user's words (no
  denoiser): q' = q + b·unit(mean of the relevant captions' vectors) − c·unit(mean of the latest not-relevant
  captions' vectors), b = 0.5, c = 0.2. Each caption is embedded on its own, so its words do not crowd the
  request's out of one pooled text vector (appending the captions to the query text, the first version, lost
  6.5% of recall on Flickr8k concept queries; docs/sessions.md has the measurements).
- `Rewrite` (`rewrite`): the same captions are denoised into a rewritten request that keeps the user's words and
  adds only what the relevant captions share, then fused with the request: q' = unit(q₀ + w·unit(t)), w = 1.0
  (the request stays the anchor). The denoiser is `RulesDenoiser` (`denoise.py`, no model call: the offline
  default) or `LLMDenoiser` (a chat model; its answer is parsed with a schema and checked: anchor kept, length
  capped), chosen like the pipeline's reasoner (`choose_denoiser` in `feedback/__init__.py`). A captioning or LLM
  failure falls back to embedding feedback (Rocchio) and says so in `state.fallback` and the round's note.
- `Combined` (`combined`): the rewrite's fused vector as the anchor of a Rocchio step.

Every strategy also turns the images marked not relevant into negative propositions (`negatives.py`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from picscope.feedback.base import FeedbackState
from picscope.feedback.denoise import denoise
from picscope.feedback.negatives import negative_propositions
from picscope.feedback.rocchio import Rocchio
from picscope.vectors import unit

if TYPE_CHECKING:
    from picscope.library import Library

MAX_NEGATIVE_CAPTIONS = 3  # captions of not-relevant images: the latest few (propositions, the caption push)
DEFAULT_MAX_WORDS = 40  # MiniLM/CLIP-class text towers read ~60-77 tokens; 40 words stays inside
# `caption`'s weights, tuned on half of the MSR-VTT and Flickr8k dev concept queries (docs/sessions.md)
CAPTION_WEIGHT = 0.5
NEGATIVE_CAPTION_WEIGHT = 0.2
# `rewrite`'s weight of the rewritten text's vector beside the request's, tuned on the even-numbered MSR-VTT and
# Flickr8k dev concept queries (docs/sessions.md)
REWRITE_WEIGHT = 1.0


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text.lower())


def cap_words(text: str, max_words: int) -> str:
    parts = text.split()
    return " ".join(parts[:max_words])


class Captioner:
    """Captions library images through a `VisionModel` on the one captioning path, `CaptionStore.ensure` (safe
    decode, stored per image, model and style, so no image is captioned twice), and keeps them in
    `FeedbackState.captions` for the round's explanation."""

    STYLE = "short"

    def __init__(self, library: Library, vision: Any) -> None:
        self.library, self.vision = library, vision
        self._store: Any = None

    def _captions_store(self) -> Any:
        if self._store is None:
            from picscope.pipeline.captions import CaptionStore  # the pipeline package loads on first use

            self._store = CaptionStore.for_library(self.library)
        return self._store

    def captions(self, state: FeedbackState, ids: list[int]) -> tuple[dict[int, str], int]:
        """Return (captions for `ids`, number of model calls made); images that cannot be read are skipped. When
        every caption asked of the model failed, the model's error is raised (the strategy falls back)."""
        out = {i: state.captions[i] for i in ids if i in state.captions}
        todo = list(dict.fromkeys(i for i in ids if i not in out))
        if not todo:
            return out, 0
        got, calls, errors = self._captions_store().ensure(self.library, self.vision, todo, self.STYLE, len(todo))
        if errors and len(errors) == calls:
            raise RuntimeError(errors[0])
        out.update(got)
        return out, calls


def caption_direction(library: Library, captions: list[str]) -> np.ndarray | None:
    """unit(mean of the captions' text vectors), each caption embedded on its own; None without captions."""
    if not captions:
        return None
    return unit(np.asarray(library.embed_texts(captions), np.float32).mean(axis=0))


def anchored_on_captions(library: Library, anchor: np.ndarray, pos_caps: list[str], neg_caps: list[str],
                         weights: tuple[float, float] = (CAPTION_WEIGHT, NEGATIVE_CAPTION_WEIGHT)) -> np.ndarray:
    """anchor + b·(relevant captions' direction) − c·(not-relevant captions' direction), normalised."""
    q = np.asarray(anchor, np.float64).copy()
    pos, neg = caption_direction(library, pos_caps), caption_direction(library, neg_caps)
    if pos is not None:
        q += weights[0] * pos
    if neg is not None:
        q -= weights[1] * neg
    return unit(q.astype(np.float32))


class CaptionExpansion:
    name = "caption"

    def __init__(self, library: Library, vision: Any, max_words: int = DEFAULT_MAX_WORDS) -> None:
        self.library = library
        self.captioner = Captioner(library, vision)
        self.max_words = max_words

    def update(self, state: FeedbackState, new_positives: list[int], new_negatives: list[int]) -> FeedbackState:
        positives = [*state.positives, *[i for i in new_positives if i not in state.positives]]
        negatives = [*state.negatives, *[i for i in new_negatives if i not in state.negatives]]
        caps, calls = self.captioner.captions(state, positives + negatives[-MAX_NEGATIVE_CAPTIONS:])
        pos_caps = [caps[i] for i in positives if i in caps]
        neg_caps = [caps[i] for i in negatives[-MAX_NEGATIVE_CAPTIONS:] if i in caps]
        anchor = state.anchor_vector
        if anchor is None:
            anchor = self.library.embed_texts([state.original_query])[0]
        text, vec = state.original_query, state.query_vector
        if pos_caps or neg_caps:
            vec = anchored_on_captions(self.library, anchor, pos_caps, neg_caps)
            text = cap_words(". ".join([state.original_query, *pos_caps]), self.max_words)
        props = negative_propositions(state.original_query, pos_caps, neg_caps)
        note = (
            f"caption: the request plus {CAPTION_WEIGHT} × the direction of {len(pos_caps)} relevant caption(s)"
            f", minus {NEGATIVE_CAPTION_WEIGHT} × that of {len(neg_caps)} not-relevant caption(s)"
            if pos_caps or neg_caps
            else "caption: nothing marked was captioned; the query is unchanged"
        )
        return dataclasses.replace(
            state,
            query_text=text,
            query_vector=vec,
            positives=positives,
            negatives=negatives,
            negative_propositions=props,
            round=state.round + 1,
            notes=[*state.notes, note],
            model_calls=state.model_calls + calls,
            fallback=None,
            captions={**state.captions, **caps},
        )


class RewriteAnswer(BaseModel):
    query: str = Field(min_length=1)
    shared_details: list[str] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list)
    avoid: list[str] = Field(default_factory=list)


class RewriteFailed(Exception):
    pass


def anchored(original: str, rewritten: str, max_words: int) -> tuple[str, bool]:
    """Keep the user's words: if the rewrite lost more than a third of them, prefix the original query.

    Returns (query, whether the anchor had to be restored); the result never exceeds `max_words` words
    unless the user's own query is longer (which is then kept whole).
    """
    orig = set(words(original))
    new = set(words(rewritten))
    restored = bool(orig) and len(orig & new) < (2 * len(orig)) / 3
    text = f"{original.strip().rstrip('.')}, {rewritten.strip()}" if restored else rewritten.strip()
    limit = max(max_words, len(original.split()))
    return cap_words(text, limit), restored


def fused(anchor: np.ndarray, text_vector: np.ndarray, weight: float = REWRITE_WEIGHT) -> np.ndarray:
    """unit(anchor + weight·unit(text_vector)): the rewritten text moves the request's vector, never replaces it."""
    q = np.asarray(anchor, np.float64) + weight * np.asarray(unit(np.asarray(text_vector, np.float32)), np.float64)
    return unit(q.astype(np.float32))


@dataclasses.dataclass(frozen=True)
class Rewriting:
    """What a denoiser made of the captions: the rewritten request and why."""

    text: str
    added: list[str] = dataclasses.field(default_factory=list)  # details shared by the relevant images
    dropped: list[str] = dataclasses.field(default_factory=list)  # caption words left out as noise
    avoid: list[str] = dataclasses.field(default_factory=list)  # what the not-relevant images show (propositions)
    restored: bool = False  # the user's words had to be put back in front
    calls: int = 0  # model calls made


class RulesDenoiser:
    """The offline denoiser (`feedback.denoise`): the user's words plus the terms most relevant captions share and
    the latest not-relevant captions do not. Deterministic; no model call."""

    name = "rules"

    def __init__(self, max_words: int = DEFAULT_MAX_WORDS) -> None:
        self.max_words = max_words

    def rewrite(self, query: str, pos_caps: list[str], neg_caps: list[str]) -> Rewriting:
        d = denoise(query, pos_caps, neg_caps[-MAX_NEGATIVE_CAPTIONS:], max_words=self.max_words)
        return Rewriting(d.text, d.added, d.dropped)


class LLMDenoiser:
    """Paper A's denoiser: a chat model rewrites the request from the captions (prompt `rewrite`), its answer parsed
    with a schema and anchored on the user's words; RewriteFailed when the answer is unusable."""

    name = "llm"

    def __init__(self, llm: Any, max_words: int = DEFAULT_MAX_WORDS, timeout: float | None = None) -> None:
        self.llm, self.max_words, self.timeout = llm, max_words, timeout  # timeout None: the backend's deadline

    def _ask(self, query: str, pos_caps: list[str], neg_caps: list[str]) -> RewriteAnswer:
        """One chat call (the chat model retries, repairs unparsable JSON and falls back itself: the one retry
        layer); RewriteFailed when its answer is still unusable."""
        from picscope.models.base import Message
        from picscope.models.prompts import load_prompt

        system, user = load_prompt("rewrite").render(
            max_words=self.max_words, query=query,
            positives="\n".join(f"- {c}" for c in pos_caps) or "- (none)",
            negatives="\n".join(f"- {c}" for c in neg_caps) or "- (none)")
        try:
            res = self.llm.chat([Message("system", system), Message("user", user)], schema=RewriteAnswer,
                                temperature=0.0, max_tokens=200, timeout=self.timeout)
        except Exception as exc:
            raise RewriteFailed(f"{type(exc).__name__}: {exc}") from exc
        try:
            if isinstance(res.parsed, RewriteAnswer):
                return res.parsed
            if isinstance(res.parsed, dict):
                return RewriteAnswer.model_validate(res.parsed)
            return RewriteAnswer.model_validate_json(_json_part(res.text))
        except (ValidationError, ValueError) as exc:
            why = f"; {res.fallback}" if res.fallback else ""
            raise RewriteFailed(f"unparsable answer ({str(exc).splitlines()[0]}{why})") from exc

    def rewrite(self, query: str, pos_caps: list[str], neg_caps: list[str]) -> Rewriting:
        answer = self._ask(query, pos_caps[-8:], neg_caps[-5:])
        text, restored = anchored(query, answer.query, self.max_words)
        return Rewriting(text, answer.shared_details, answer.dropped, answer.avoid, restored, 1)


class Rewrite:
    """`rewrite`: caption the marked images, denoise the captions into a rewritten request (`RulesDenoiser` offline,
    `LLMDenoiser` with a real chat model), and fuse its vector with the request's: q' = unit(q₀ + w·unit(t)).
    Captioning or LLM failures fall back to embedding feedback (Rocchio) and say so."""

    name = "rewrite"

    def __init__(self, library: Library, vision: Any, denoiser: RulesDenoiser | LLMDenoiser,
                 weight: float = REWRITE_WEIGHT, fallback: Rocchio | None = None) -> None:
        self.library = library
        self.captioner = Captioner(library, vision)
        self.denoiser = denoiser
        self.weight = weight
        self.fallback = fallback or Rocchio(library)

    def update(self, state: FeedbackState, new_positives: list[int], new_negatives: list[int]) -> FeedbackState:
        positives = [*state.positives, *[i for i in new_positives if i not in state.positives]]
        negatives = [*state.negatives, *[i for i in new_negatives if i not in state.negatives]]
        try:
            caps, calls = self.captioner.captions(state, positives + negatives[-MAX_NEGATIVE_CAPTIONS:])
        except Exception as exc:
            return self._fall_back(state, new_positives, new_negatives, f"captioning failed ({exc})", 0)
        pos_caps = [caps[i] for i in positives if i in caps]
        neg_caps = [caps[i] for i in negatives if i in caps]
        base = dataclasses.replace(state, captions={**state.captions, **caps}, positives=positives,
                                   negatives=negatives, round=state.round + 1, fallback=None,
                                   model_calls=state.model_calls + calls)
        anchor = state.anchor_vector
        if anchor is None:
            anchor = self.library.embed_texts([state.original_query])[0]
        if not pos_caps:  # the request itself (`combined` then anchors its Rocchio step on it, not on the last query)
            return dataclasses.replace(
                base, query_text=state.original_query, query_vector=unit(anchor),
                negative_propositions=negative_propositions(state.original_query, pos_caps, neg_caps),
                notes=[*state.notes, "rewrite: nothing marked relevant; the query is the request"])
        try:
            got = self.denoiser.rewrite(state.original_query, pos_caps, neg_caps)
        except RewriteFailed as exc:
            base = dataclasses.replace(state, captions=base.captions)
            return self._fall_back(base, new_positives, new_negatives, f"LLM rewrite failed: {exc}", calls + 1)
        changed = got.text.strip() != state.original_query.strip()
        vector = fused(anchor, self.library.embed_texts([got.text])[0], self.weight) if changed else unit(anchor)
        why = f"rewrite ({self.denoiser.name}): from {len(pos_caps)} relevant caption(s)"
        if got.added:
            why += "; added shared details: " + ", ".join(got.added[:6])
        elif not changed:
            why += "; they share nothing the request does not say: the query is unchanged"
        if got.dropped:
            why += "; dropped as caption noise: " + ", ".join(got.dropped[:5])
        if got.restored:
            why += "; the user's words were restored as the anchor"
        if changed:
            why += f"; the request's vector + {self.weight:g} × the rewritten text's"
        return dataclasses.replace(
            base,
            query_text=got.text,
            query_vector=vector,
            negative_propositions=negative_propositions(state.original_query, pos_caps, neg_caps, avoid=got.avoid),
            notes=[*state.notes, why],
            model_calls=base.model_calls + got.calls,
        )

    def _fall_back(
        self, state: FeedbackState, new_positives: list[int], new_negatives: list[int], reason: str, calls: int
    ) -> FeedbackState:
        nxt = self.fallback.update(state, new_positives, new_negatives)
        note = f"{reason}; fell back to embedding feedback (rocchio)"
        return dataclasses.replace(
            nxt, notes=[*state.notes, note], fallback=note, model_calls=state.model_calls + calls
        )


class Combined:
    """`rewrite` + Rocchio: the rewrite's fused vector unit(q₀ + w·unit(t)) is the anchor of a Rocchio step, so the
    marked images' vectors and the details their captions share both move the query."""

    name = "combined"

    def __init__(self, library: Library, vision: Any, denoiser: RulesDenoiser | LLMDenoiser, **kw: Any) -> None:
        self.library = library
        self.rocchio = Rocchio(library, **{k: kw.pop(k) for k in ("alpha", "beta", "gamma") if k in kw})
        self.rewriter = Rewrite(library, vision, denoiser, fallback=self.rocchio, **kw)

    def update(self, state: FeedbackState, new_positives: list[int], new_negatives: list[int]) -> FeedbackState:
        nxt = self.rewriter.update(state, new_positives, new_negatives)
        if nxt.fallback is not None:
            return nxt  # already embedding feedback
        mixed = dataclasses.replace(
            nxt,
            anchor_vector=nxt.query_vector,
            positives=state.positives,
            negatives=state.negatives,
            round=state.round,
        )
        new_pos = [i for i in nxt.positives if i not in state.positives]
        new_neg = [i for i in nxt.negatives if i not in state.negatives]
        r = self.rocchio.update(mixed, new_pos, new_neg)
        return dataclasses.replace(
            r,
            anchor_vector=state.anchor_vector,
            notes=[*nxt.notes[:-1], nxt.notes[-1] + "; combined with rocchio on the query vector"],
        )


def _json_part(text: str) -> str:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the answer")
    return text[start : end + 1]
