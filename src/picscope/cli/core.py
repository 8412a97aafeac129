"""Core commands: index, search, status, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from picscope.cli.app import LibraryOpt, app, err, out
from picscope.config import DEFAULT_EXCLUDES
from picscope.indexer import IndexReport, Progress
from picscope.library import Library, SearchResult


class RichIndexProgress(Progress):
    """A progress bar with count, rate and ETA, on stderr."""

    def __init__(self, label: str = "indexing") -> None:
        # imported here: rich.progress costs ~0.1 s, and only `index` draws a bar
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskID,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.label = label
        self.task: TaskID | None = None

    def start(self, total: int) -> None:
        if total == 0:
            return
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        if self.task is None:
            return
        self.bar.advance(self.task, n)
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:.1f} img/s" if speed else "")

    def finish(self) -> None:
        if self.task is not None:
            self.bar.stop()


def print_report(report: IndexReport, as_json: bool) -> None:
    if as_json:
        data = {k: v for k, v in vars(report).items() if k != "problems"}
        data["problems"] = [{"path": p, "reason": r} for p, r in report.problems]
        data["images_per_second"] = report.images_per_second
        out.print_json(json.dumps(data))
        return
    out.print(
        f"[bold]{report.root}[/]: {report.scanned} images seen — {report.added} added, {report.updated} updated, "
        f"{report.reused} reused (renamed/copied), {report.removed} removed, {report.unchanged} unchanged, "
        f"{report.failed} failed; {report.seconds:.1f} s"
        + (f" ({report.images_per_second:.1f} img/s encoded)" if report.encoded else "")
    )
    if report.problems:
        shown = report.problems[:20]
        table = Table(title=f"{len(report.problems)} problem file(s)", show_lines=False)
        table.add_column("path", overflow="fold")
        table.add_column("reason", overflow="fold")
        for path, reason in shown:
            table.add_row(path, reason)
        err.print(table)
        if len(report.problems) > len(shown):
            err.print(f"… and {len(report.problems) - len(shown)} more: see `picscope status`")


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
    """Index FOLDER into the library: new, changed, renamed and deleted files are picked up."""
    lib = Library.open(library, encoder=None if rebuild else encoder, store=store)
    if include is not None or exclude is not None:
        if include is not None:
            lib.config.index.include = include
        if exclude is not None:
            lib.config.index.exclude = [*DEFAULT_EXCLUDES, *exclude]
        lib.save_config()
    try:
        progress = None if (quiet or as_json) else RichIndexProgress()
        report = lib.index(folder, progress=progress, rebuild=rebuild, encoder=encoder)
    finally:
        lib.close()
    print_report(report, as_json)


def print_results(results: list[SearchResult], as_json: bool, paths: bool) -> None:
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in results]))
        return
    if paths:
        for r in results:
            print(r.path)
        return
    if not results:
        err.print("no results")
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("id", justify="right", style="dim")
    table.add_column("path", overflow="fold")
    for r in results:
        table.add_row(str(r.rank), f"{r.score:.3f}", str(r.id), r.path)
    out.print(table)


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="what you are looking for (with --ref: the change)")] = None,
    library: LibraryOpt = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="number of results")] = 10,
    image: Annotated[Path | None, typer.Option("--image", help="find images similar to this file")] = None,
    ref: Annotated[str | None, typer.Option("--ref", help="reference photo (file or library id) for a composed "
                                            "query: QUERY says what changes")] = None,
    turn: Annotated[list[str] | None, typer.Option("--turn", help="a dialogue answer, e.g. 'is it outdoors? yes' "
                                                   "(repeatable; all turns stay in force)")] = None,
    stages: Annotated[str | None, typer.Option("--stages", help="pipeline stages: 1, 1-2, 1-3 or encoder "
                                               "[default: encoder only]")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="show descriptions, propositions, answers, ranks")] = False,
    llm: Annotated[str | None, typer.Option("--llm", help="chat model for --stages [default: the library's]")] = None,
    vision: Annotated[str | None, typer.Option("--vision", help="vision model for --stages [default: the library's]")
                      ] = None,
    min_score: Annotated[float | None, typer.Option(help="hide results scoring below this")] = None,
    path: Annotated[str | None, typer.Option("--path", help="only results under this folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array: path, score, id, rank")] = False,
    paths: Annotated[bool, typer.Option("--paths", help="one path per line (for pipes)")] = False,
) -> None:
    """Search the library by text, by example (--image), by example plus a change (--ref), or with dialogue
    answers (--turn); --stages 1-3 runs the language-guided pipeline (LLM + vision model)."""
    if (query is None) == (image is None):
        raise typer.BadParameter("give a text query or --image FILE (one of them)")
    if image is not None and (ref or turn or stages):
        raise typer.BadParameter("--image is plain similarity search; use --ref FILE 'change' for composed search")
    with Library.open(library, create=False) as lib:
        if image is not None:
            print_results(lib.similar(image, k, min_score=min_score, path_prefix=path), as_json, paths)
            return
        assert query is not None
        if not (ref or turn or stages or explain):
            print_results(lib.search(query, k, min_score=min_score, path_prefix=path), as_json, paths)
            return
        from picscope.pipeline import Request, make_pipeline, parse_stages

        chosen = parse_stages(stages) if stages is not None else ()
        if path or min_score is not None:
            raise typer.BadParameter("--path and --min-score apply to plain searches only")
        pipe = make_pipeline(lib, "imagescope" if chosen else "encoder", stages=chosen, llm=llm, vision=vision)
        result = pipe.run(Request(query, reference=ref, turns=list(turn or [])), k)
    if as_json:
        data = {"results": [r.to_dict() for r in result.results], "stages": result.stages,
                "model_calls": result.model_calls, "tokens": result.tokens, "seconds": round(result.seconds, 3)}
        if explain:
            data["explanation"] = result.explanation
        out.print_json(json.dumps(data, default=str))
        return
    print_results(result.results, False, paths)
    if explain and not paths:
        from picscope.pipeline.explain import print_explanation

        print_explanation(result.explanation, out, k)


@app.command()
def status(
    library: LibraryOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="problem files to list")] = 50,
) -> None:
    """Show the library: encoder, store, counts, and the files that could not be indexed (and why)."""
    with Library.open(library, create=False) as lib:
        st = lib.status()
        problems = lib.problems()
    if as_json:
        data = st.to_dict()
        data["problems"] = [{"id": p.id, "path": p.path, "status": p.status, "reason": p.error} for p in problems]
        out.print_json(json.dumps(data))
        return
    table = Table(show_header=False, show_edge=False, pad_edge=False)
    for key, value in st.to_dict().items():
        table.add_row(f"[bold]{key}[/]", ", ".join(value) if isinstance(value, list) else str(value))
    out.print(table)
    if problems:
        pt = Table(title=f"{len(problems)} problem file(s)")
        pt.add_column("path", overflow="fold")
        pt.add_column("status")
        pt.add_column("reason", overflow="fold")
        for p in problems[:limit]:
            pt.add_row(p.path, p.status, p.error or "")
        out.print(pt)


@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="where to write the sample photos")] = Path("picscope-demo"),
) -> None:
    """Write a small folder of sample photos (bundled with scikit-image; public domain) to try picscope on."""
    from picscope.demo import write_demo_folder

    written = write_demo_folder(folder)
    out.print(f"wrote {len(written)} photos to {folder}")
