"""An interactive retrieval session: rounds of unseen results, relevance marks, and a query that learns from them.

    s = Session.create(library, "a dog on a beach", strategy="rocchio")   # round 0 is searched and saved
    s.page()                      # the results of the current round (numbered 1..page_size)
    s.mark([id1, id2], True)      # relevant;  s.mark([id3], False) → not relevant
    s.undo()                      # take back the last mark action of this round
    s.next_round()                # feedback → new query → the next page of images not shown before
    s.back()                      # drop the last round (its images become unseen again)
    s.explain()                   # the query of every round and why it changed
    Session.open(library, s.id)   # resume later, in another process

Every change is saved at once in `<library>/sessions.sqlite`; see `store.py` for the concurrency rules.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.errors import ConfigError, PicscopeError
from picscope.feedback import NAMES, make_strategy
from picscope.feedback.base import FeedbackState, FeedbackStrategy
from picscope.feedback.check import RequestCheck
from picscope.feedback.rocchio import Rocchio
from picscope.feedback.rounds import unseen_page
from picscope.sessions.store import (
    NotShownError,
    RoundRecord,
    SessionError,
    SessionRecord,
    SessionStore,
    StaleRoundError,
)

if TYPE_CHECKING:
    from picscope.library import Library

DEFAULT_STRATEGY = "combined"  # offline default: rules rewrite + rocchio, no LLM call (captions of the marked
# photos, stored once); the request check adds one verifier pass (30 photos). docs/sessions.md has the measurements
CHECK_OPTION = "check_request"  # session option (default True): re-rank each round against the request


@functools.lru_cache(maxsize=1)
def _default_check_vision() -> Any:
    """The offline default vision model, one per process: sessions share the cells it keeps of recent photos."""
    from picscope.models import DEFAULT_VISION_SPEC, make_vision_model

    return make_vision_model(DEFAULT_VISION_SPEC)


@dataclass
class ShownImage:
    number: int  # 1-based position on the page
    id: int
    path: str
    score: float
    round: int
    mark: bool | None = None  # True relevant, False not relevant, None unmarked

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Session:
    def __init__(
        self, library: Library, record: SessionRecord, *, llm: Any = None, vision: Any = None, store: SessionStore
    ) -> None:
        self.library = library
        self.store = store
        self._rec = record
        self._llm, self._vision = llm, vision
        self._strategy: FeedbackStrategy | None = None
        self._strategy_error: str | None = None
        self._check: RequestCheck | None = None
        self._check_error: str | None = None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        library: Library,
        query: str,
        *,
        strategy: str = DEFAULT_STRATEGY,
        page_size: int = 10,
        vector: np.ndarray | None = None,
        llm: Any = None,
        vision: Any = None,
        options: dict[str, Any] | None = None,
    ) -> Session:
        """Start a session: embed `query` (or use `vector`, e.g. of a composed query) and search round 0."""
        if not query or not query.strip():
            raise SessionError("empty query: type what you are looking for")
        if strategy not in NAMES:
            raise ConfigError(f"unknown feedback strategy {strategy!r}; available: {', '.join(NAMES)}")
        if page_size <= 0:
            raise SessionError("page size must be positive")
        t0 = time.perf_counter()
        vec = np.asarray(vector if vector is not None else library.embed_texts([query])[0], np.float32)
        state = FeedbackState(query, query, vec, anchor_vector=vec, notes=["the user's query"])
        hits = unseen_page(library, vec, page_size)
        rnd = RoundRecord(0, state, [h.id for h in hits], [float(h.score) for h in hits], time.perf_counter() - t0)
        store = SessionStore.for_library(library)
        sid = uuid.uuid4().hex[:12]
        with store.transaction() as tx:
            tx.create(sid, query, strategy, page_size, options or {}, rnd)
        return cls(library, store.load(sid), llm=llm, vision=vision, store=store)

    @classmethod
    def open(cls, library: Library, session_id: str, *, llm: Any = None, vision: Any = None) -> Session:
        store = SessionStore.for_library(library)
        return cls(library, store.load(session_id.strip()), llm=llm, vision=vision, store=store)

    @staticmethod
    def list_sessions(library: Library, limit: int = 50) -> list[dict[str, Any]]:
        return SessionStore.for_library(library).list(limit)

    def refresh(self) -> Session:
        self._rec = self.store.load(self.id)
        return self

    # -- properties ------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def query(self) -> str:
        return self._rec.query

    @property
    def strategy_name(self) -> str:
        return self._rec.strategy

    @property
    def round(self) -> int:
        return self._rec.rounds[-1].n

    @property
    def current_query(self) -> str:
        return self._rec.rounds[-1].state.query_text

    def shown_ids(self) -> list[int]:
        return [i for r in self._rec.rounds for i in r.shown]

    def marks(self, round: int | None = None) -> dict[int, bool]:
        """The effective marks of a round (default: the current one): the last live mark per image wins."""
        n = self.round if round is None else round
        out: dict[int, bool] = {}
        for m in self._rec.marks:
            if m["round"] == n:
                out[m["id"]] = m["relevant"]
        return out

    # -- reading ---------------------------------------------------------------------------------
    def page(self, round: int | None = None) -> list[ShownImage]:
        """The images shown in a round (default: the current one), numbered from 1, with their marks."""
        n = self.round if round is None else round
        rnd = next((r for r in self._rec.rounds if r.n == n), None)
        if rnd is None:
            raise SessionError(f"session {self.id} has no round {n} (rounds 0..{self.round})")
        marks = self.marks(n)
        out = []
        for k, fid in enumerate(rnd.shown):
            rec = self.library.get(fid)
            score = rnd.scores[k] if k < len(rnd.scores) else float("nan")
            out.append(ShownImage(k + 1, fid, rec.path if rec else "(removed)", score, n, marks.get(fid)))
        return out

    def explain(self) -> dict[str, Any]:
        """The query of every round and why it changed, the negative propositions, fallbacks and model calls."""
        history = []
        for r in self._rec.rounds:
            st = r.state
            history.append(
                {
                    "round": r.n,
                    "query": st.query_text,
                    "why": st.notes[-1] if st.notes else "",
                    "fallback": st.fallback,
                    "relevant_so_far": len(st.positives),
                    "not_relevant_so_far": len(st.negatives),
                    "model_calls_so_far": st.model_calls,
                    "seconds": round(r.seconds, 3),
                }
            )
        last = self._rec.rounds[-1].state
        return {
            "id": self.id,
            "query": self.query,
            "strategy": self.strategy_name,
            "round": self.round,
            "current_query": last.query_text,
            "negative_propositions": list(last.negative_propositions),
            "history": history,
            "strategy_error": self._strategy_error,
        }

    def state(self) -> dict[str, Any]:
        """Everything a UI needs in one JSON-able dict: ids, round, the page with marks, and the explanation."""
        return {
            **self.explain(),
            "page_size": self._rec.page_size,
            "version": self._rec.version,
            "shown": len(self.shown_ids()),
            "page": [s.to_dict() for s in self.page()],
        }

    # -- marks -----------------------------------------------------------------------------------
    def _check_round(self, round: int | None, rec: SessionRecord) -> None:
        current = rec.rounds[-1].n
        if round is not None and round != current:
            raise StaleRoundError(
                f"round {round} is not the current round of session {rec.id} (it is round {current}); reload the page"
            )

    def mark(self, ids: list[int] | int, relevant: bool = True, *, round: int | None = None) -> dict[int, bool]:
        """Mark shown images relevant (True) or not relevant (False) in the current round; returns its marks."""
        want = [int(ids)] if isinstance(ids, int | np.integer) else [int(i) for i in ids]
        if not want:
            raise SessionError("no image given to mark")
        with self.store.transaction() as tx:
            rec = tx.load(self.id)
            self._check_round(round, rec)
            shown = {i for r in rec.rounds for i in r.shown}
            never = [i for i in want if i not in shown]
            if never:
                raise NotShownError(
                    f"image id(s) {', '.join(map(str, never))} were never shown in session {rec.id}; "
                    "only images shown in this session can be marked"
                )
            tx.add_marks(rec.id, rec.rounds[-1].n, want, relevant)
        self.refresh()
        return self.marks()

    def undo(self) -> list[dict[str, Any]]:
        """Take back the last mark action of the current round; returns the marks it removed."""
        with self.store.transaction() as tx:
            n = tx.load(self.id).rounds[-1].n
            removed = tx.undo_last(self.id, n)
            if not removed:
                raise SessionError(f"nothing to undo in round {n} (use back to return to the previous round)")
        self.refresh()
        return removed

    # -- rounds ----------------------------------------------------------------------------------
    def _strategy_for(self) -> FeedbackStrategy:
        if self._strategy is None:
            try:
                self._strategy = make_strategy(self.strategy_name, self.library, llm=self._llm, vision=self._vision)
            except PicscopeError as exc:
                self._strategy_error = str(exc)
                self._strategy = Rocchio(self.library)
        return self._strategy

    def _check_for(self, rec: SessionRecord) -> RequestCheck | None:
        """The request check of this session's rounds (`feedback.check`): on unless the session's options turn it
        off, never for `none` (the unchanged ranking) or a composed session (its text alone is not the request; not
        measured), and only with a vision model that has evidence of its own."""
        if rec.strategy == "none" or not rec.options.get(CHECK_OPTION, True) or rec.options.get("reference"):
            return None
        if self._check is None and self._check_error is None:
            vision = self._vision
            if vision is None:
                try:
                    vision = _default_check_vision()
                except (ImportError, PicscopeError) as exc:
                    self._check_error = f"request check unavailable ({exc})"
            if RequestCheck.usable(vision):
                self._check = RequestCheck(vision, rec.query)
        return self._check

    def next_round(self, *, round: int | None = None, allow_repeats: bool = False) -> list[ShownImage]:
        """Apply this round's marks, search again, and show the next page of images not shown before.

        `round`: the round the caller is looking at (a request from a stale page raises StaleRoundError).
        `allow_repeats`: also consider images shown before (they are otherwise never shown twice).
        """
        rec = self.store.load(self.id)
        self._check_round(round, rec)
        self._rec = rec
        t0 = time.perf_counter()
        last = rec.rounds[-1]
        state = last.state
        marks = self.marks()
        new_pos = [i for i, r in marks.items() if r and i not in state.positives]
        new_neg = [i for i, r in marks.items() if not r and i not in state.negatives]
        strategy = self._strategy_for()
        try:
            nxt = strategy.update(state, new_pos, new_neg)
        except Exception as exc:  # strategies should fall back themselves; this is the last safety net
            nxt = Rocchio(self.library).update(state, new_pos, new_neg)
            note = f"{strategy.name} failed ({type(exc).__name__}: {exc}); fell back to embedding feedback (rocchio)"
            nxt = dataclasses.replace(nxt, notes=[*state.notes, note], fallback=note)
        substituted = strategy.name != self.strategy_name
        if self._strategy_error and substituted and nxt.fallback is None:
            note = f"{self.strategy_name} unavailable ({self._strategy_error}); used embedding feedback (rocchio)"
            nxt = dataclasses.replace(nxt, notes=[*nxt.notes[:-1], note], fallback=note)
        shown = () if allow_repeats else tuple(i for r in rec.rounds for i in r.shown)
        check = self._check_for(rec)
        hits = unseen_page(self.library, nxt.query_vector, rec.page_size, shown, check=check)
        why = check.last_error if check is not None else self._check_error
        if why and nxt.notes:
            nxt = dataclasses.replace(nxt, notes=[*nxt.notes[:-1], f"{nxt.notes[-1]}; {why}"])
        new = RoundRecord(
            last.n + 1, nxt, [h.id for h in hits], [float(h.score) for h in hits], time.perf_counter() - t0
        )
        with self.store.transaction() as tx:
            tx.append_round(rec.id, new, rec.version)
        self.refresh()
        return self.page()

    def back(self, *, round: int | None = None) -> list[ShownImage]:
        """Drop the current round (its images become unseen again) and return to the previous one."""
        with self.store.transaction() as tx:
            rec = tx.load(self.id)
            self._check_round(round, rec)
            n = rec.rounds[-1].n
            if n == 0:
                raise SessionError("already at the first round; there is no round to go back to")
            tx.drop_round(rec.id, n)
        self.refresh()
        return self.page()
