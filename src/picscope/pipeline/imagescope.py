"""The three-stage language-guided pipeline (ideas from ImageScope, Luo et al. 2025; our own code and prompts).

1. Intent synthesis (reasoner → operations + target descriptions at up to three granularities) and retrieval
   that fuses description→image with description→caption similarity, averaged over the descriptions.
2. Proposition verification: yes/no questions with expected answers, answered by the vision model (all of one
   image's questions in one call, the reference shown when a question compares with it), fused with the
   stage-1 score as standardised score + weight × mean log-odds of the expected answers.
3. Global judgement: the vision model scores the best α candidates together (listwise) against the whole
   request; their order becomes standardised stage-2 score + weight × standardised judge score.

Every stage can be switched off; a per-query budget of model calls and seconds drops later stages (or shrinks
K) instead of failing; the output says which stages ran and why any did not.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image

from picscope.config import PipelineConfig
from picscope.errors import ConfigError
from picscope.library import Library, SearchResult
from picscope.models.base import ChatModel, FusionDefaults, VisionModel
from picscope.models.deadline import call_scope
from picscope.pipeline.base import Candidate, PipelineOutput, Request, stage_orders
from picscope.pipeline.captions import CaptionStore, load_view
from picscope.pipeline.fusion import expected_log_odds, zscore
from picscope.pipeline.intent import (
    Intent,
    llm_intent,
    llm_propositions,
    request_text,
    rules_intent,
    rules_propositions,
)
from picscope.pipeline.meter import MeteredChat
from picscope.pipeline.reasoner import choose_reasoner
from picscope.pipeline.reference import Reference, resolve_reference

VIEW_CACHE = 64


class _Budget:
    def __init__(self, cfg: PipelineConfig) -> None:
        self.max_calls = cfg.max_model_calls
        self.max_seconds = cfg.max_seconds
        self.t0 = time.perf_counter()
        self.calls = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def calls_left(self) -> float:
        return float("inf") if self.max_calls is None else self.max_calls - self.calls

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds


class ImageScopePipeline:
    name = "imagescope"

    def __init__(self, library: Library, config: PipelineConfig | None = None, *, chat: ChatModel | None = None,
                 vision: VisionModel | None = None, meter: MeteredChat | None = None) -> None:
        """`meter`: the metered chat model the vision model talks through (its tokens count too)."""
        self.meter = meter
        self.library = library
        self.config = config or library.config.pipeline
        self.chat = MeteredChat(chat) if chat is not None and not isinstance(chat, MeteredChat) else chat
        self.standing_notes: list[str] = []  # said with every result (e.g. how `auto` chose the reasoner)
        if self.config.reasoner == "auto":  # built directly (make_pipeline passes the reasoner resolved)
            chosen, note = choose_reasoner("auto", self.chat.spec if self.chat is not None else None)
            self.config = self.config.model_copy(update={"reasoner": chosen})
            if note and self.chat is not None:
                self.standing_notes.append(note)
        self.vision = vision
        self.captions = CaptionStore.for_library(library)
        self._cap_vec: dict[str, np.ndarray] = {}
        # decoded candidates, shared by stages 2 and 3
        self._views: OrderedDict[tuple[int, int, int], Image.Image] = OrderedDict()

    def _view(self, file_id: int) -> Image.Image:
        rec = self.library.get(file_id)
        key = (file_id, getattr(rec, "mtime_ns", 0), getattr(rec, "size", 0))  # a re-indexed file is re-read
        img = self._views.get(key)
        if img is None:
            img = load_view(self.library, file_id)
            self._views[key] = img
            while len(self._views) > VIEW_CACHE:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(key)
        return img

    # -- public --------------------------------------------------------------------------------------------
    def run(self, request: Request, k: int = 10, *, exclude_ids: tuple[int, ...] = (),
            stages: tuple[int, ...] | None = None) -> PipelineOutput:
        """Every model call of the request shares one deadline (`max_seconds`, also the budget of the stages);
        calls that fell back (a deadline, an open circuit breaker, an unusable answer) are listed in the
        explanation's `fallbacks` and notes."""
        with call_scope(self.config.max_seconds) as scope:
            out = self._run(request, k, exclude_ids=exclude_ids, stages=stages)
        if scope.notes:
            out.explanation["fallbacks"] = list(scope.notes)
            out.explanation.setdefault("notes", []).extend(f"fallback: {n}" for n in scope.notes)
        return out

    def _run(self, request: Request, k: int = 10, *, exclude_ids: tuple[int, ...] = (),
             stages: tuple[int, ...] | None = None) -> PipelineOutput:
        self._check(request, k)
        cfg = self.config
        wanted = sorted(set(stages if stages is not None else cfg.stages) | {1})
        budget = _Budget(cfg)
        meter = self.meter if self.meter is not None else self.chat
        tokens0 = meter.snapshot()[1] if isinstance(meter, MeteredChat) else 0
        notes: list[str] = list(self.standing_notes)

        ref = resolve_reference(self.library, request.reference) if request.reference is not None else None
        ref_caption = self._reference_caption(ref, budget, notes) if ref is not None else None
        exclude = {int(i) for i in exclude_ids}
        if ref is not None and ref.id is not None:
            exclude.add(ref.id)  # the reference photo is never its own answer

        intent = self._intent(request, ref_caption, budget)
        anchor = self._anchor(request, intent)
        # a plain text request is re-ranked in stage 1 as the default search re-ranks it (dialogue turns and
        # composed requests are not: not measured to help, as in the default search)
        rerank_text = request.text if anchor is not None and not request.turns else None
        ranked: dict[str, Any] = {}  # how stage 1 ordered its candidates (query bank, re-rank)
        cands = self._stage1(intent, anchor, max(k, cfg.verify_k, self.alpha(cfg)), exclude, budget, notes,
                             rerank_text, ranked)
        reranked = ranked.get("rerank") is not None
        ran, skipped = self._later_stages(wanted, request, intent, ref, cands, budget, notes, reranked)
        # stages reorder `cands` in place, each within its own window: their order is the final one
        for r, c in enumerate(cands):
            c.ranks["final"] = r + 1
        results = [SearchResult(c.id, c.path, c.s1, r + 1) for r, c in enumerate(cands[:k])]
        tokens = (meter.snapshot()[1] - tokens0) if isinstance(meter, MeteredChat) else 0
        explanation = {
            "request": {"text": request.text, "turns": list(request.turns),
                        "reference": ref.describe() if ref is not None else None,
                        "reference_caption": ref_caption},
            "intent": {"source": intent.source, "descriptions": intent.descriptions,
                       "operations": [vars(o) for o in intent.operations],
                       "anchor": anchor, "anchor_weight": cfg.anchor_weight if anchor else 0.0,
                       "query_bank": ranked.get("query_bank", False), "rerank": ranked.get("rerank")},
            "propositions": {"source": intent.propositions_source,
                             "items": [vars(p) for p in intent.propositions]} if 2 in ran else None,
            "stages": ran, "skipped": skipped, "notes": notes, "config": self._explained_config(reranked),
            "cost": {"model_calls": budget.calls, "tokens": tokens, "seconds": round(budget.elapsed(), 3)},
        }
        shown = cands[: max(k, self.alpha(cfg))]
        return PipelineOutput(results=results, stages=ran, explanation=explanation, model_calls=budget.calls,
                              tokens=tokens, seconds=budget.elapsed(), candidates=shown,
                              stage_orders=stage_orders(shown, ran))

    @staticmethod
    def _check(request: Request, k: int) -> None:
        if not request.text or not request.text.strip():
            raise ValueError("empty request")
        if k <= 0:
            raise ValueError("k must be positive")
        if request.add or request.subtract:
            raise ConfigError("query arithmetic (add/subtract) works with encoder search only; leave out the stages")

    def _later_stages(self, wanted: list[int], request: Request, intent: Intent, ref: Reference | None,
                      cands: list[Candidate], budget: _Budget, notes: list[str], reranked: bool = False
                      ) -> tuple[list[int], dict[str, str]]:
        """Stages 2 and 3 where wanted: (the stages that ran, why each other wanted one did not)."""
        ran, skipped = [1], {}
        if 2 in wanted:
            why = self._stage2(request, intent, ref, cands, budget, notes)
            if why is None:
                ran.append(2)
            else:
                skipped["2"] = why
        if 3 in wanted:
            why = self._stage3(request, ref, cands, budget, notes, self.judge_weight(self.config, reranked))
            if why is None:
                ran.append(3)
            else:
                skipped["3"] = why
        return ran, skipped

    def _explained_config(self, reranked: bool = False) -> dict[str, Any]:
        cfg = self.config
        return {"verify_k": cfg.verify_k, "alpha": self.alpha(cfg), "caption_weight": cfg.caption_weight,
                "verify_weight": self.verify_weight(cfg), "judge_weight": self.judge_weight(cfg, reranked),
                "reasoner": cfg.reasoner if self.chat is not None else "rules"}

    def _fusion(self) -> FusionDefaults:
        return self.vision.fusion if self.vision is not None else FusionDefaults()

    def verify_weight(self, cfg: PipelineConfig) -> float:
        """The stage-2 fusion weight: the configured one, else the vision model's measured default (0 for the
        offline socratic one, whose answers are the retrieval encoder's own similarities: measured in README)."""
        return float(cfg.verify_weight if cfg.verify_weight is not None else self._fusion().verify_weight)

    def judge_weight(self, cfg: PipelineConfig, reranked: bool = False) -> float:
        """The stage-3 weight: the configured one, else the vision model's measured default (`reranked`: stage 1
        was re-ranked by the verifier, where the bundled judge's evidence is already counted)."""
        if cfg.judge_weight is not None:
            return float(cfg.judge_weight)
        fusion = self._fusion()
        if reranked and fusion.judge_weight_after_rerank is not None:
            return float(fusion.judge_weight_after_rerank)
        return float(fusion.judge_weight)

    def alpha(self, cfg: PipelineConfig) -> int:
        """Candidates judged by stage 3: the configured number, else the vision model's."""
        return int(cfg.alpha if cfg.alpha is not None else self._fusion().alpha)

    # -- stage 1 -------------------------------------------------------------------------------------------
    def _reference_caption(self, ref: Reference, budget: _Budget, notes: list[str]) -> str | None:
        if self.vision is None:
            notes.append("no vision model: the reference photo is used by the judge only if one is configured")
            return None
        model = str(getattr(self.vision, "spec", "vision"))
        style = self.config.caption_style
        if ref.id is not None:
            got = self.captions.get_many([ref.id], model, style)
            if ref.id in got:
                return got[ref.id]
        budget.calls += 1
        try:
            cap = " ".join(self.vision.caption(ref.image, style).split())
        except Exception as exc:
            notes.append(f"reference caption failed ({type(exc).__name__}: {exc}); continuing without it")
            return None
        if ref.id is not None and cap:
            self.captions.put(ref.id, model, style, cap)
        return cap or None

    def _intent(self, request: Request, ref_caption: str | None, budget: _Budget) -> Intent:
        cfg = self.config
        turns = list(request.turns)
        if cfg.reasoner == "llm" and self.chat is not None and budget.calls_left() >= 1 and not budget.out_of_time():
            intent = llm_intent(self.chat, request.text, turns, ref_caption, cfg.granularities)
            budget.calls += intent.model_calls
            return intent
        intent = rules_intent(request.text, turns, ref_caption, cfg.granularities)
        if cfg.reasoner == "llm":
            intent.source = "rules (no LLM configured or no budget left)"
        return intent

    def _text_vectors(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cap_vec]
        for start in range(0, len(missing), 128):
            chunk = missing[start : start + 128]
            self._cap_vec.update(zip(chunk, np.asarray(self.library.embed_texts(chunk), np.float32), strict=True))
        if len(self._cap_vec) > 50_000:
            self._cap_vec.clear()
        return np.stack([self._cap_vec[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def _anchor(self, request: Request, intent: Intent) -> str | None:
        """The person's own words (text and dialogue requests): stage 1's anchor list is their search, in the
        query bank's order and re-ranked by the verifier as the default search re-ranks it; the reasoner's
        descriptions are mixed in at `1 − anchor_weight` (a paraphrase must not replace what was asked: measured
        in README). Composed requests have no anchor: their text is a change, not a description of the target."""
        if request.reference is not None or self.config.anchor_weight <= 0:
            return None
        return " ".join([request.text, *request.turns])

    def _stage1(self, intent: Intent, anchor: str | None, n: int, exclude: set[int], budget: _Budget,
                notes: list[str], rerank_text: str | None = None, ranked: dict[str, Any] | None = None
                ) -> list[Candidate]:
        cfg = self.config
        texts, weights = list(intent.descriptions), np.full(len(intent.descriptions), 1.0 / len(intent.descriptions))
        if anchor and cfg.anchor_weight >= 1.0:
            texts, weights = [anchor], np.ones(1)
        elif anchor:
            texts.append(anchor)
            weights = np.append(weights * (1 - cfg.anchor_weight), cfg.anchor_weight)
        t = self._text_vectors(texts)
        mean_t = (weights @ t).astype(np.float32)  # weighted mean over descriptions of t·v == (mean t)·v
        settings = self.library.rerank_for() if rerank_text else None
        pool = max(n, cfg.pool if cfg.caption_weight > 0 else n, settings.pool if settings is not None else 0)
        hits = self.library.search_vector(mean_t, pool, exclude_ids=sorted(exclude), querybank=True)
        # the image side of stage 1 is the search's own order: cosine minus the query-bank normaliser when the
        # encoder has a bank and every hit has one (the two scales never mix), else the cosine
        banked = bool(hits) and all(h.bank_score is not None for h in hits)
        ranked = {} if ranked is None else ranked
        ranked.update(query_bank=banked, rerank=None)
        cands = [Candidate(h.id, h.path, float(h.bank_score if banked and h.bank_score is not None else h.score))
                 for h in hits]
        for c in cands:
            c.s1 = c.image_sim
        self._fuse_captions(cands, t, weights, budget, notes)
        cands.sort(key=lambda c: -c.s1)
        if settings is not None and rerank_text is not None:
            ranked["rerank"] = self._rerank(rerank_text, cands, settings.pool, settings.weight, notes)
        for r, c in enumerate(cands):
            c.ranks["stage1"] = r + 1
        return cands

    def _fuse_captions(self, cands: list[Candidate], t: np.ndarray, weights: np.ndarray, budget: _Budget,
                       notes: list[str]) -> None:
        """Stage-1 score = (1 − τ)·z(image side) + τ·z(description→caption similarity), standardised over the
        pool; a candidate without a caption gets the pool's mean caption similarity (no evidence either way: a
        few captioned photos must not jump the others because cosines and bank scores differ in scale)."""
        cfg = self.config
        tau = cfg.caption_weight
        if tau <= 0 or not cands:
            return
        if self.vision is None:
            notes.append("no vision model: caption fusion is off")
            return
        allowance = int(min(cfg.lazy_captions, budget.calls_left()))
        caps, made, errors = self.captions.ensure(self.library, self.vision, [c.id for c in cands],
                                                  cfg.caption_style, allowance)
        budget.calls += made
        notes.extend(errors[:3])
        have = [c for c in cands if c.id in caps]
        if not have:
            return
        e = self._text_vectors([caps[c.id] for c in have])
        sims = (e @ t.T) @ weights
        for c, sim in zip(have, sims, strict=True):
            c.caption, c.caption_sim = caps[c.id], float(sim)
        if len(have) < len(cands):
            notes.append(f"{len(cands) - len(have)} of {len(cands)} stage-1 candidates have no caption yet "
                         "(scored with the pool's mean caption similarity; `picscope captions build` makes them)")
        mean_cap = float(np.mean(sims))
        zi = zscore([c.image_sim for c in cands])
        zc = zscore([c.caption_sim if c.caption_sim is not None else mean_cap for c in cands])
        for c, a, b in zip(cands, zi, zc, strict=True):
            c.s1 = (1 - tau) * float(a) + tau * float(b)

    def _rerank(self, text: str, cands: list[Candidate], pool: int, weight: float, notes: list[str]
                ) -> dict[str, Any] | None:
        """The default search's verifier re-rank (`picscope.rerank`) over the top `pool` of stage 1, in place:
        their stage-1 score becomes z(score) + weight · z(verifier); those below keep their order, under them.
        Returns what it did (None: it did not run)."""
        from picscope.rerank import score_pool

        head = cands[:pool]
        if len(head) < 2:
            return None
        cells = self.library.photo_cells
        try:
            got = score_pool(text, [c.id for c in head], np.array([c.s1 for c in head]), weight, cells,
                             cells.verifier)
        except Exception as exc:  # the re-rank refines stage 1; without it the search order stands
            notes.append(f"stage-1 re-rank skipped ({type(exc).__name__}: {exc})")
            return None
        for c, f, p in zip(head, got.fused, got.probs, strict=True):
            c.s1, c.match = float(f), None if np.isnan(p) else float(p)
        before = [c.id for c in head]
        head.sort(key=lambda c: -c.s1)
        moved = sum(a != c.id for a, c in zip(before, head, strict=True))
        floor = head[-1].s1
        for j, c in enumerate(cands[pool:]):  # below the re-ranked pool, in their own order
            c.s1 = floor - 0.01 * (j + 1)
        cands[:pool] = head
        return {"model": cells.verifier.name, "pool": pool, "weight": weight, "scored": len(head),
                "cells_computed": got.computed, "moved": moved}

    # -- stage 2 -------------------------------------------------------------------------------------------
    def _stage2(self, request: Request, intent: Intent, ref: Reference | None, cands: list[Candidate],
                budget: _Budget, notes: list[str]) -> str | None:
        cfg = self.config
        if self.vision is None:
            return "no vision model configured"
        if budget.out_of_time():
            return f"time budget spent ({budget.elapsed():.1f} s)"
        if cfg.reasoner == "llm" and self.chat is not None and not intent.propositions and budget.calls_left() >= 3:
            before = intent.model_calls
            llm_propositions(self.chat, intent, request.text, list(request.turns), has_reference=ref is not None,
                             limit=cfg.max_propositions)
            budget.calls += intent.model_calls - before
        else:
            rules_propositions(intent, cfg.max_propositions)
        props = intent.propositions
        if not props:
            return "no propositions to verify"
        reserve = 1 if 3 in cfg.stages else 0
        k = int(min(cfg.verify_k, len(cands), budget.calls_left() - reserve))
        if k < 2:
            return "model-call budget too small for verification"
        if k < min(cfg.verify_k, len(cands)):
            notes.append(f"stage 2 verified the top {k} only (model-call budget)")
        questions = [p.question for p in props]
        expected = [p.expected for p in props]
        needs_ref = ref is not None and any(p.reference for p in props)
        stored = None if needs_ref else self._verify_stored(cands[:k], questions, notes)
        if stored is not None:  # every candidate answered from what the library stores: one call per photo
            budget.calls += k
            for c, p in zip(cands[:k], stored, strict=True):
                c.answers = [float(x) for x in p]
                c.log_odds = expected_log_odds(c.answers, expected)
            done = k
        else:
            done = self._verify_one_by_one(cands[:k], questions, expected, ref if needs_ref else None, budget,
                                           notes)
        if done < 2:
            return "verification failed for the first candidates"
        head = cands[:done]
        z = zscore([c.s1 for c in head])
        for c, zi in zip(head, z, strict=True):
            c.s2 = float(zi) + self.verify_weight(cfg) * float(c.log_odds or 0.0)
        head.sort(key=lambda c: -(c.s2 or 0.0))
        cands[:done] = head
        for r, c in enumerate(head):
            c.ranks["stage2"] = r + 1
        return None

    def _verify_one_by_one(self, cands: list[Candidate], questions: list[str], expected: list[bool],
                           ref: Reference | None, budget: _Budget, notes: list[str]) -> int:
        """Ask the vision model candidate by candidate (from stored vectors when it answers from the encoder, else
        from the decoded photo; `ref`: shown when a question compares with it). Returns how many answered."""
        assert self.vision is not None
        vectors = self._stored_vectors(cands) if ref is None else None
        self._prepare(cands, notes)
        done = 0
        for n, c in enumerate(cands):
            if budget.out_of_time():
                notes.append(f"stage 2 stopped after {done} of {len(cands)} candidates (time budget)")
                break
            budget.calls += 1
            try:
                got = None if vectors is None else self.vision.verify_vectors(
                    vectors[n : n + 1], questions, self.library.encoder.name)
                p = got[0] if got is not None else self.vision.verify(
                    self._view(c.id), questions, reference=ref.image if ref is not None else None)
            except Exception as exc:
                notes.append(f"verification of image {c.id} failed ({type(exc).__name__}: {exc})")
                break
            if len(p) != len(questions):
                notes.append(f"the vision model answered {len(p)} of {len(questions)} questions for {c.id}")
                break
            c.answers = [float(x) for x in p]
            c.log_odds = expected_log_odds(c.answers, expected)
            done += 1
        return done

    def _verify_stored(self, cands: list[Candidate], questions: list[str], notes: list[str]
                       ) -> list[list[float]] | None:
        """The answers of a vision model that reads the library's stored evidence (the bundled verifier: the
        photos' cells, no decode), or None: the caller decodes the photos and asks image by image."""
        if self.vision is None:
            return None
        try:
            got = self.vision.verify_ids(self.library, [c.id for c in cands], questions)
        except Exception as exc:  # the image path then says what fails, photo by photo
            notes.append(f"verification from stored cells failed ({type(exc).__name__}: {exc}); decoding instead")
            return None
        if got is None or len(got) != len(cands) or any(len(p) != len(questions) for p in got):
            return None
        return got

    def _prepare(self, cands: list[Candidate], notes: list[str]) -> None:
        """Let a vision model that reads pixels batch its work for the candidates it is about to verify."""
        if self.vision is None or self.vision.answers_from_encoder:
            return
        try:
            self.vision.prepare([self._view(c.id) for c in cands])
        except Exception as exc:  # verify() then works image by image, and says what fails
            notes.append(f"batch preparation failed ({type(exc).__name__}: {exc})")

    def _stored_vectors(self, cands: list[Candidate]) -> np.ndarray | None:
        """The candidates' library vectors, for a vision model that answers from the encoder (None otherwise)."""
        if self.vision is None or not self.vision.answers_from_encoder:
            return None
        return self.library.vectors([c.id for c in cands])

    # -- stage 3 -------------------------------------------------------------------------------------------
    def _stage3(self, request: Request, ref: Reference | None, cands: list[Candidate], budget: _Budget,
                notes: list[str], weight: float) -> str | None:
        cfg = self.config
        if self.vision is None:
            return "no vision model configured"
        if budget.out_of_time():
            return f"time budget spent ({budget.elapsed():.1f} s)"
        if budget.calls_left() < 1:
            return "model-call budget spent"
        top = cands[: min(self.alpha(cfg), len(cands))]
        if len(top) < 2:
            return "fewer than two candidates"
        budget.calls += 1
        instruction = request_text(request.text, request.turns)
        reference = ref.image if ref is not None else None
        try:
            verdicts = self.vision.judge_ids(self.library, instruction, [c.id for c in top], reference=reference)
            if verdicts is None:  # the model reads pixels: decode the candidates
                verdicts = self.vision.judge(instruction, [self._view(c.id) for c in top], reference=reference)
        except Exception as exc:
            return f"the judge failed ({type(exc).__name__}: {exc})"
        if len(verdicts) != len(top):
            return f"the judge scored {len(verdicts)} of {len(top)} candidates"
        prev = [c.s2 if c.s2 is not None else c.s1 for c in top]
        zp, zj = zscore(prev), zscore([v.score for v in verdicts])
        for c, a, b, v in zip(top, zp, zj, verdicts, strict=True):
            c.judge, c.reason = float(v.score), v.reason
            c.s3 = float(a) + weight * float(b)
        top.sort(key=lambda c: -(c.s3 or 0.0))
        cands[: len(top)] = top
        for r, c in enumerate(top):
            c.ranks["stage3"] = r + 1
        return None
