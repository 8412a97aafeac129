"""Core commands: index, search, status, cache, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from picscope.cli.app import LibraryOpt, app, command_group, usage_error
from picscope.cli.console import err, out
from picscope.cli.searching import SearchArgs, print_results, run_search, search_json
from picscope.config import DEFAULT_EXCLUDES
from picscope.errors import LibraryError, LibraryReadOnlyError
from picscope.library import Library

if TYPE_CHECKING:
    from rich.table import Table

    from picscope.indexer import IndexReport


def _problem_table(rows: list[tuple[str, str, str]], title: str, limit: int) -> Table:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("path", overflow="fold")
    table.add_column("status")
    table.add_column("reason", overflow="fold")
    for path, status, reason in rows[:limit]:
        table.add_row(path, status, reason)
    return table


def print_report(report: IndexReport, as_json: bool) -> None:
    """The index summary. Its problem list is the catalog's list for this folder: what `picscope status` shows."""
    rows = [(p, s, r) for (p, r), s in zip(report.problems, report.problem_status, strict=True)]
    if as_json:
        data = {k: v for k, v in vars(report).items() if k not in ("problems", "problem_status")}
        data["problems"] = [{"path": p, "status": s, "reason": r} for p, s, r in rows]
        data["images_per_second"] = report.images_per_second
        out.print_json(json.dumps(data))
        return
    by_status = {s: report.problem_status.count(s) for s in ("error", "stale", "skipped")}
    out.print(
        f"[bold]{report.root}[/]: {report.scanned} files seen — {report.added} added, {report.updated} updated, "
        f"{report.reused} reused (renamed/copied), {report.removed} removed, {report.unchanged} unchanged, "
        f"{report.failed} failed; {report.seconds:.1f} s"
        + (f" ({report.images_per_second:.1f} img/s encoded)" if report.encoded else "")
        + (f"; cells for re-ranking computed for {report.cells} earlier photo(s)" if report.cells else ""),
        highlight=False,
    )
    if rows:
        out.print(
            f"{len(rows)} problem(s) in this folder: {by_status['error']} not indexed, {by_status['stale']} kept at "
            f"their previous version, {by_status['skipped']} skipped (not images, special files, ...)",
            highlight=False,
        )
        err.print(_problem_table(rows, f"{len(rows)} problem(s)", 20))
        if len(rows) > 20:
            err.print(f"… and {len(rows) - 20} more: see `picscope status`")


@app.command()
def index(
    folder: Annotated[Path, typer.Argument(help="folder to index (recursively)")],
    library: LibraryOpt = None,
    encoder: Annotated[
        str | None, typer.Option(help="encoder spec for a new library: bundled, labels, hf:…, open-clip:…")
    ] = None,
    store: Annotated[str | None, typer.Option(help="vector store for a new library: exact, ann, milvus:URI")] = None,
    rebuild: Annotated[bool, typer.Option(help="drop all vectors and re-encode (e.g. with a new --encoder)")] = False,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="only files matching this glob (repeatable; saved)")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="skip files/folders matching this glob (repeatable; saved)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Index FOLDER into the library: new, changed, renamed and deleted files are picked up.

    Every file is checked by content (not by its name); what is not indexed is listed with a reason."""
    if not folder.is_dir():  # before opening: a mistyped folder must not create the library
        raise LibraryError(f"not a folder: {folder} (nothing was changed)")
    lib = Library.open(library, encoder=None if rebuild else encoder, store=store)
    if lib.readonly:
        lib.close()
        raise LibraryReadOnlyError(
            f"library {lib.path} is read-only (a read-only folder or mount): `picscope index` cannot write to it. "
            "Searching it works; to index, make it writable or copy it somewhere writable and use --library"
        )
    if include is not None or exclude is not None:
        if include is not None:
            lib.config.index.include = include
        if exclude is not None:
            lib.config.index.exclude = [*DEFAULT_EXCLUDES, *exclude]
        lib.save_config()
    try:
        from picscope.cli.progress import RichIndexProgress  # the indexer and rich.progress: only `index` needs them

        progress = None if (quiet or as_json) else RichIndexProgress()
        report = lib.index(folder, progress=progress, rebuild=rebuild, encoder=encoder)
    finally:
        lib.close()
    print_report(report, as_json)


# The options of `search`, one alias each (the command's signature stays one line per option).
QueryArg = Annotated[str | None, typer.Argument(
    metavar="QUERY", help="what you are looking for (with --ref: the change)")]
TopOpt = Annotated[int, typer.Option("-k", "--top", min=1, metavar="N", help="number of results")]
ImageOpt = Annotated[Path | None, typer.Option("--image", metavar="FILE", help="find images similar to this file")]
RefOpt = Annotated[str | None, typer.Option(
    "--ref", metavar="FILE|ID",
    help="reference photo (file or library id) for a composed query: QUERY says what changes")]
TurnOpt = Annotated[list[str] | None, typer.Option(
    "--turn", metavar="ANSWER",
    help="a dialogue answer, e.g. 'is it outdoors? yes' (repeatable; all turns stay in force)")]
AddOpt = Annotated[list[str] | None, typer.Option(
    "--add", "-a", metavar="TERM",
    help="add a term to the query: text, WEIGHT:text (2:night), an image file or id:N (repeatable)")]
SubtractOpt = Annotated[list[str] | None, typer.Option(
    "--subtract", "-s", metavar="TERM", help="subtract a term from the query (same forms as --add; repeatable)")]
StagesOpt = Annotated[str | None, typer.Option(
    "--stages", metavar="STAGES", help="pipeline stages: 1, 1-2, 1-3 or encoder [default: encoder only]")]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="show descriptions, propositions, answers, ranks")]
LlmOpt = Annotated[str | None, typer.Option(
    "--llm", metavar="SPEC", help="chat model for --stages [default: the library's]")]
VisionOpt = Annotated[str | None, typer.Option(
    "--vision", metavar="SPEC", help="vision model for --stages [default: the library's]")]
MinScoreOpt = Annotated[float | None, typer.Option(
    metavar="SCORE", help="hide results whose raw score is below this")]
MinRelevanceOpt = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, metavar="P", help="hide results whose calibrated relevance (0-1) is below this")]
DedupeOpt = Annotated[bool, typer.Option(
    "--dedupe", help="fold copies and near-identical images into one result (+N similar)")]
PathOpt = Annotated[str | None, typer.Option("--path", metavar="FOLDER", help="only results under this folder")]
SearchJsonOpt = Annotated[bool, typer.Option(
    "--json", help="JSON object: request, results (id, path, score, relevance, rank, similar_count), stages, ...")]
PathsOpt = Annotated[bool, typer.Option("--paths", help="one path per line (for pipes)")]
RerankOpt = Annotated[bool | None, typer.Option(
    "--rerank/--no-rerank", help="re-order a text search's top candidates with the verifier [default: the "
    "library's `[search] rerank`: on for the bundled encoder]", show_default=False)]
SearchVerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", help="show the model engines' own log lines (llama.cpp) instead of writing them to "
    "<library>/logs/engines.log")]


@app.command()
def search(
    ctx: typer.Context,
    query: QueryArg = None,
    library: LibraryOpt = None,
    k: TopOpt = 10,
    image: ImageOpt = None,
    ref: RefOpt = None,
    turn: TurnOpt = None,
    add: AddOpt = None,
    subtract: SubtractOpt = None,
    stages: StagesOpt = None,
    explain: ExplainOpt = False,
    llm: LlmOpt = None,
    vision: VisionOpt = None,
    min_score: MinScoreOpt = None,
    min_relevance: MinRelevanceOpt = None,
    dedupe: DedupeOpt = False,
    path: PathOpt = None,
    as_json: SearchJsonOpt = False,
    paths: PathsOpt = False,
    verbose: SearchVerboseOpt = False,
    rerank: RerankOpt = None,
) -> None:
    """Search the library by text, by example (--image), by example plus a change (--ref), or with dialogue
    answers (--turn); --add/--subtract adjust the query; --stages 1-3 runs the language-guided pipeline
    (LLM + vision model)."""
    _check_search_request(ctx, query, image, bool(ref or turn or stages), as_json=as_json, paths=paths)
    args = SearchArgs(query, image, ref, list(turn or []), list(add or []), list(subtract or []),
                      _chosen_stages(stages), explain, llm, vision, min_score, min_relevance, dedupe, path, k, rerank)
    _check_search_options(ctx, args)
    name, result = run_search(library, args, verbose=verbose or bool(ctx.find_root().params.get("verbose")))
    if as_json:
        explained = result.to_dict() if args.pipelined else result.explanation
        out.print_json(search_json(args.request(), name, result, explained if explain else None))
        return
    print_results(result.results, paths)
    if explain and not paths:
        from picscope.pipeline.explain import print_explanation

        print_explanation(result.explanation, out, k, result.candidates)


def _check_search_request(ctx: typer.Context, query: str | None, image: Path | None, composed: bool, *,
                          as_json: bool, paths: bool) -> None:
    """Usage mistakes in what is searched for and how it is printed (before --stages is read)."""
    if (query is None) == (image is None):
        raise usage_error(ctx, "give a text query or --image FILE (one of them)")
    if query is not None and not query.strip():
        raise usage_error(ctx, "the query is empty: say what you are looking for")
    if as_json and paths:
        raise usage_error(ctx, "--json and --paths exclude each other: choose one output format")
    if image is not None and composed:
        raise usage_error(ctx, "--image is plain similarity search; use --ref FILE 'change' for composed search")


def _chosen_stages(stages: str | None) -> tuple[int, ...]:
    if stages is None:
        return ()
    from picscope.pipeline import parse_stages

    return parse_stages(stages) or ()


def _check_search_options(ctx: typer.Context, args: SearchArgs) -> None:
    """Usage mistakes in options that belong to one kind of search only."""
    if args.stages and (args.add or args.subtract):
        raise usage_error(ctx, "--add/--subtract work with encoder search; leave out --stages")
    if args.pipelined and (args.path or args.min_score is not None or args.min_relevance is not None):
        raise usage_error(ctx, "--path, --min-score and --min-relevance apply to plain searches (no --ref, --turn, "
                          "--stages or --explain)")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


@app.command()
def status(
    library: LibraryOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="problem files to list")] = 50,
) -> None:
    """Show the library: encoder, store, counts, caches, and every problem of the last scans (and why)."""
    with Library.open(library, create=False) as lib:
        st = lib.status()
        problems = lib.problems()
    if as_json:
        data = st.to_dict()
        data["problems"] = [p.to_dict() for p in problems]
        out.print_json(json.dumps(data))
        return
    from rich.table import Table

    table = Table(show_header=False, show_edge=False, pad_edge=False)
    for key, value in st.to_dict().items():
        if key == "caches":
            continue
        table.add_row(f"[bold]{key}[/]", ", ".join(value) if isinstance(value, list) else str(value))
    out.print(table)
    out.print(_cache_table(st.caches))
    if problems:
        rows = [(p.path, p.status, p.reason) for p in problems]
        out.print(_problem_table(rows, f"{len(problems)} problem(s)", limit))
        if len(problems) > limit:
            out.print(f"… and {len(problems) - limit} more (--limit N, or --json for all)")


def _cache_table(caches: list[dict[str, object]]) -> Table:
    from rich.table import Table

    table = Table(title="caches (`picscope cache clear` empties the results caches; --all the models too)")
    for col in ("name", "size", "kind", "where"):
        table.add_column(col, overflow="fold")
    for c in caches:
        table.add_row(str(c["name"]), _size(int(str(c["bytes"]))), str(c["kind"]), str(c["path"]))
    return table


cache_app = command_group("cache", "Caches: the library's thumbnails and the shared folder ($PICSCOPE_CACHE).")


@cache_app.command("list")
def cache_list(
    library: LibraryOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List every cache with its size and place."""
    from picscope.paths import cache_entries

    lib_path = _library_path(library)
    caches = [c.to_dict() for c in cache_entries(lib_path)]
    if as_json:
        out.print_json(json.dumps(caches))
        return
    out.print(_cache_table(caches))


@cache_app.command("clear")
def cache_clear(
    library: LibraryOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="also converted models and the assembled LLM (slow "
                                             "to rebuild)")] = False,
) -> None:
    """Empty the caches (thumbnails, model-call results, features, evaluation libraries)."""
    from picscope.paths import clear_caches

    failed = 0
    for entry, problem in clear_caches(_library_path(library), everything=everything):
        if problem is None:
            out.print(f"cleared {entry.name} ({_size(entry.bytes)}) at {entry.path}", highlight=False)
        else:
            failed += 1
            err.print(f"could not clear {entry.name}: {problem}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _library_path(library: Path | None) -> Path | None:
    """The library folder, if there is one (caches are listed without opening it)."""
    from picscope.layout import LibraryLayout
    from picscope.paths import default_library_path

    path = Path(library).expanduser() if library is not None else default_library_path()
    return path if LibraryLayout(path).is_library() else None


@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="where to write the sample photos")] = Path("picscope-demo"),
) -> None:
    """Write a small folder of sample photos (bundled with scikit-image; public domain) to try picscope on."""
    from picscope.demo import write_demo_folder

    written = write_demo_folder(folder)
    out.print(f"wrote {len(written)} photos to {folder}")
