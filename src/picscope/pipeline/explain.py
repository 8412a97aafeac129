"""Human-readable explanation of a pipeline result (`picscope search --explain`, `picscope chat`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from picscope.pipeline.base import Candidate


def render(explanation: dict[str, Any], candidates: Sequence[Candidate] = (), k: int = 10) -> Group:
    """`explanation`: a `PipelineOutput`'s (or the plain search's) account; `candidates`: its typed candidates."""
    parts: list[Any] = []
    req = explanation.get("request", {})
    if req.get("reference_caption"):
        parts.append(Text(f"reference: {req['reference_caption']}", style="dim"))
    intent = explanation.get("intent")
    if intent:
        parts.append(Text(f"stage 1 · target descriptions ({intent['source']}):", style="bold"))
        for name, d in zip(("core", "detailed", "full"), intent["descriptions"], strict=False):
            parts.append(Text(f"  {name:9s}{d}"))
        ops = "; ".join(f"{o['kind']}: {o['text']}" for o in intent.get("operations", []))
        if ops:
            parts.append(Text(f"  operations: {ops}", style="dim"))
        aw = float(intent.get("anchor_weight") or 0.0)
        words = ("the descriptions" if not intent.get("anchor") else "the request's own words" if aw >= 1
                 else f"the request's own words (weight {aw:g}) and the descriptions")
        parts.append(Text(f"  ranking: {words} → {ranking(intent)}", style="dim"))
    elif explanation.get("query_text"):
        parts.append(Text(f"query: {explanation['query_text']}", style="bold"))
        parts.append(Text(f"  ranking: {ranking(explanation)}", style="dim"))
    props = (explanation.get("propositions") or {}).get("items", [])
    if props:
        parts.append(Text(f"stage 2 · propositions ({explanation['propositions']['source']}):", style="bold"))
        for i, p in enumerate(props, 1):
            ref = " (vs. reference)" if p.get("reference") else ""
            parts.append(Text(f"  Q{i}. {p['question']} → expected {'yes' if p['expected'] else 'no'}{ref}"))
    table = Table(show_edge=False, pad_edge=False, title="candidates", title_justify="left")
    for col in ("rank", "s1", "s2", "s3", "file", "answers (P yes)", "judge"):
        table.add_column(col, overflow="fold")
    for c in candidates[:k]:
        r = c.ranks
        answers = " ".join(f"Q{i + 1}:{p:.2f}" for i, p in enumerate(c.answers))
        judge = f"{c.judge:.2f} {c.reason or ''}" if c.judge is not None else ""
        table.add_row(str(r.get("final", "")), str(r.get("stage1", "")), str(r.get("stage2", "")),
                      str(r.get("stage3", "")), os.path.basename(c.path), answers, judge)
    parts.append(table)
    skipped = explanation.get("skipped") or {}
    line = f"stages run: {explanation.get('stages') or 'encoder only'}"
    if skipped:
        line += "; skipped: " + "; ".join(f"{s} ({why})" for s, why in skipped.items())
    cost = explanation.get("cost")
    if cost:
        line += f"; {cost['model_calls']} model calls, {cost['tokens']} tokens, {cost['seconds']:.1f} s"
    parts.append(Text(line, style="dim"))
    for n in explanation.get("notes", []):
        parts.append(Text(f"note: {n}", style="yellow"))
    return Group(*parts)


def ranking(info: dict[str, Any]) -> str:
    """What ordered the results, from an explanation's `query_bank` and `rerank` (the encoder pipeline's account,
    or stage 1's `intent`): e.g. "encoder + query bank + verifier re-rank of the top 50 (weight 0.75, 12 moved)"."""
    steps = ["encoder"]
    if info.get("query_bank"):
        steps.append("query bank")
    rr = info.get("rerank")
    if rr:
        moved = f", {rr['moved']} moved" if "moved" in rr else ""
        steps.append(f"verifier re-rank of the top {rr['pool']} ({rr.get('model', 'verifier')}, weight "
                     f"{rr['weight']}{moved})")
    text = " + ".join(steps)
    return text if len(steps) > 1 else "encoder only (no query bank, no re-rank)"


def print_explanation(explanation: dict[str, Any], console: Console, k: int = 10,
                      candidates: Sequence[Candidate] = ()) -> None:
    console.print(render(explanation, candidates, k))
