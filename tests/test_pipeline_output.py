"""`PipelineOutput`: typed candidates and stage orders, and the one JSON form (`to_dict`) the web UI reads."""

from __future__ import annotations

import json

from picscope.library import SearchResult
from picscope.pipeline.base import Candidate, PipelineOutput, stage_orders


def _cands() -> list[Candidate]:
    a = Candidate(1, "/p/a.jpg", 0.51234567, caption="a cat", caption_sim=0.4, s1=0.5, s2=1.25, answers=[0.9, 0.1],
                  log_odds=2.1972, ranks={"stage1": 2, "stage2": 1, "final": 1})
    b = Candidate(2, "/p/b.jpg", 0.6, s1=0.6, s2=0.5, s3=0.7, judge=0.8, reason="looks right",
                  answers=[0.2, 0.3], log_odds=-0.4, ranks={"stage1": 1, "stage2": 2, "stage3": 1, "final": 2})
    c = Candidate(3, "/p/c.jpg", 0.4, s1=0.4, ranks={"stage1": 3, "final": 3})
    return [a, b, c]


def test_to_dict_has_the_shape_static_explain_js_reads() -> None:
    cands = _cands()
    out = PipelineOutput([SearchResult(1, "/p/a.jpg", 0.5, 1)], [1, 2],
                         {"request": {"text": "a cat"}, "stages": [1, 2], "skipped": {}, "notes": []},
                         candidates=cands, stage_orders=stage_orders(cands, [1, 2]))
    d = json.loads(json.dumps(out.to_dict()))  # plain JSON
    assert d["request"] == {"text": "a cat"} and d["stages"] == [1, 2]
    first, second, third = d["candidates"]
    assert first == {"id": 1, "path": "/p/a.jpg", "ranks": {"stage1": 2, "stage2": 1, "final": 1},
                     "stage1": {"score": 0.5, "image_sim": 0.5123, "caption": "a cat", "caption_sim": 0.4},
                     "stage2": {"p_yes": [0.9, 0.1], "log_odds": 2.197, "score": 1.25}}
    assert second["stage3"] == {"judge": 0.8, "reason": "looks right", "score": 0.7}
    assert "stage2" not in third and "stage3" not in third and "similar_ids" not in third
    assert out.explanation.get("candidates") is None  # the typed list is the only copy


def test_stage_orders_follow_each_stage_and_keep_the_rest_in_the_previous_order() -> None:
    cands = _cands()
    orders = stage_orders(cands, [1, 2, 3])
    assert orders[1] == [2, 1, 3]
    assert orders[2] == [1, 2, 3]  # 3 was outside stage 2's window: after it, in stage-1 order
    assert orders[3] == [2, 1, 3]  # only 2 was judged; the others follow in stage-2 order
    assert stage_orders(cands, []) == {}
