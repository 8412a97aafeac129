"""Running a `picscope search` once its arguments are read, and printing what it found.

No typer here: the command in `cli/core.py` and the plain search of a new process (`cli/quick.py`) both read their
arguments into a `SearchArgs` and hand it to `run_search`, then print with `print_results` or `search_json`, so
the two print the same thing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

from picscope.cli.console import err
from picscope.library import Library

if TYPE_CHECKING:
    from picscope.library import SearchResult


class SearchArgs(NamedTuple):
    """What one `search` asks for, read from the command line and checked."""

    query: str | None
    image: Path | None
    ref: str | None
    turns: list[str]
    add: list[str]
    subtract: list[str]
    stages: tuple[int, ...]
    explain: bool
    llm: str | None
    vision: str | None
    min_score: float | None
    min_relevance: float | None
    dedupe: bool
    path: str | None
    k: int
    rerank: bool | None = None

    @property
    def pipelined(self) -> bool:
        """Runs through a pipeline (a reference, turns, stages, or an explained text search)."""
        return bool(self.ref or self.turns or self.stages or (self.explain and self.image is None))

    def request(self) -> dict[str, Any]:
        """The `request` field of `search --json`."""
        return {"text": self.query, "image": str(self.image) if self.image is not None else None,
                "reference": self.ref, "turns": self.turns, "add": self.add, "subtract": self.subtract}


def run_search(library: Path | None, args: SearchArgs, *, verbose: bool) -> tuple[str, Any]:
    """Open the library and run the search: (pipeline name, output with results, stages, explanation, ...)."""
    from picscope.cli.engines import engine_logs

    with Library.open(library, create=False) as lib, engine_logs(lib.path, verbose=verbose):
        if args.rerank is not None:  # --rerank/--no-rerank: this search only (the config file is not changed)
            lib.config.search.rerank = args.rerank
        if args.pipelined:
            return pipelined_search(lib, args)
        return plain_search(lib, args)


def plain_search(lib: Library, args: SearchArgs) -> tuple[str, Any]:
    """Encoder search by text, or similarity search by an image file."""
    t0 = time.perf_counter()
    filters: dict[str, Any] = {"add": args.add, "subtract": args.subtract, "min_score": args.min_score,
                               "min_relevance": args.min_relevance, "path_prefix": args.path, "dedupe": args.dedupe}
    if args.image is not None:
        hits = lib.similar(args.image, args.k, **filters)
        name = "similar"
        explanation: dict[str, Any] = {"pipeline": "similar", "reference": {"path": str(args.image)},
                                       "query_text": "images that look like the reference"}
    else:
        assert args.query is not None
        hits, rerank = lib.text_search(args.query, args.k, **filters)
        name, explanation = "encoder", {"pipeline": "encoder", "query_text": args.query}
        if rerank is not None:
            explanation["rerank"] = rerank.to_dict()
    return name, SimpleNamespace(results=hits, stages=[], explanation=explanation, model_calls=0, tokens=0,
                                 seconds=time.perf_counter() - t0, candidates=[])


def pipelined_search(lib: Library, args: SearchArgs) -> tuple[str, Any]:
    """A composed, dialogue, staged or explained search through a pipeline."""
    from picscope.cli.engines import working
    from picscope.pipeline import Request, make_pipeline, run_deduped

    assert args.query is not None
    chosen = args.stages
    pipe = make_pipeline(lib, "imagescope" if chosen else "encoder", stages=chosen, llm=args.llm, vision=args.vision)
    req = Request(args.query, reference=args.ref, turns=list(args.turns), add=list(args.add),
                  subtract=list(args.subtract))
    with working(f"running stages {', '.join(map(str, chosen))}" if chosen else "searching"):
        result = run_deduped(lib, pipe, req, args.k) if args.dedupe else pipe.run(req, args.k)
    return pipe.name, result


def print_results(results: list[SearchResult], paths: bool) -> None:
    """A table (rank, score, relevance when calibrated, +N similar when deduplicated, id, path) or bare paths."""
    if paths:
        for r in results:
            print(r.path)
        return
    if not results:
        err.print("no results")
        return
    show_relevance = any(r.relevance is not None for r in results)
    show_similar = any(r.similar_ids for r in results)
    from picscope.cli.table import Column, print_table

    columns = [Column("#", right=True, dim=True), Column("score", right=True)]
    if show_relevance:
        columns.append(Column("relevance", right=True))
    columns.append(Column("id", right=True, dim=True))
    if show_similar:
        columns.append(Column("similar", right=True, dim=True))
    columns.append(Column("path"))
    rows = []
    for r in results:
        row = [str(r.rank), f"{r.score:.3f}"]
        if show_relevance:
            row.append("" if r.relevance is None else f"{r.relevance:.2f}")
        row.append(str(r.id))
        if show_similar:
            row.append(f"+{r.similar_count}" if r.similar_ids else "")
        rows.append([*row, r.path])
    print_table(columns, rows)


def search_json(request: dict[str, Any], pipeline: str, output: Any, explanation: dict[str, Any] | None) -> str:
    """The one JSON shape of `search --json`, whatever the request type; `--explain` only adds `explanation`.
    `rerank` is what the verifier re-rank did (`picscope.rerank.RerankInfo`), null when it did not run."""
    rerank = output.explanation.get("rerank") if isinstance(output.explanation, dict) else None
    data: dict[str, Any] = {
        "request": request,
        "pipeline": pipeline,
        "rerank": rerank,
        "results": [r.to_dict() for r in output.results],
        "stages": list(output.stages),
        "model_calls": output.model_calls,
        "tokens": output.tokens,
        "seconds": round(output.seconds, 3),
    }
    if explanation is not None:
        data["explanation"] = explanation
    return json.dumps(data, default=str)
