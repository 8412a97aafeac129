"""Encoder-only retrieval for every request type: the baseline each stage is measured against.

Text: the text embedding, its top candidates re-ranked by the verifier when the library re-ranks
(`picscope.rerank`, the same step as `Library.search`; dialogue turns and query arithmetic stay encoder-only).
Composed: the normalised sum of the reference image's and the change text's
embeddings (the reference is excluded). Dialogue: the embedding of the opening text and all answers joined.
"""

from __future__ import annotations

import time

import numpy as np

from picscope.arithmetic import parse_term
from picscope.library import Library
from picscope.pipeline.base import Candidate, PipelineOutput, Request
from picscope.pipeline.reference import resolve_reference
from picscope.vectors import compose


class EncoderPipeline:
    name = "encoder"

    def __init__(self, library: Library) -> None:
        self.library = library

    def run(self, request: Request, k: int = 10, *, exclude_ids: tuple[int, ...] = (),
            stages: tuple[int, ...] | None = None) -> PipelineOutput:
        if not request.text or not request.text.strip():
            raise ValueError("empty request")
        t0 = time.perf_counter()
        text = " ".join([request.text, *request.turns])
        vec = np.asarray(self.library.embed_texts([text])[0], np.float32)
        exclude = list(exclude_ids)
        vec, used = self.library.apply_terms(vec, request.add, request.subtract)
        exclude.extend(used)
        ref_info = None
        if request.reference is not None:
            ref = resolve_reference(self.library, request.reference)
            vec = compose(vec, ref.vector)
            if ref.id is not None:
                exclude.append(ref.id)
            ref_info = ref.describe()
        plain_text = request.reference is None and not request.add and not request.subtract
        settings = self.library.rerank_for() if plain_text and not request.turns else None
        want = k if settings is None else max(k, settings.pool)
        results = self.library.search_vector(vec, want, exclude_ids=exclude, text_query=plain_text)
        rerank = None
        if settings is not None:
            results, rerank = self.library.rerank_results(text, results, k, settings)
        terms = {"add": [parse_term(t).describe() for t in request.add],
                 "subtract": [parse_term(t).describe() for t in request.subtract]}
        explanation = {"request": {"text": request.text, "turns": list(request.turns), "reference": ref_info,
                                   **({"terms": terms} if request.add or request.subtract else {})},
                       "query_text": text, "stages": [], "pipeline": "encoder",
                       "query_bank": any(r.bank_score is not None for r in results),
                       **({"rerank": rerank.to_dict()} if rerank is not None else {})}
        candidates = [Candidate(r.id, r.path, r.score, s1=r.score, ranks={"final": r.rank}) for r in results]
        return PipelineOutput(results, [], explanation, 0, 0, time.perf_counter() - t0, candidates=candidates)
