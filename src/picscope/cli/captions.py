"""`picscope captions build|show`: captions of library images for the pipeline's caption fusion (stage 1)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from picscope.cli.app import LibraryOpt, command_group
from picscope.cli.console import err, out
from picscope.library import Library

captions_app = command_group("captions", "Captions of library images (made by the vision model; used by --stages 1-3).")


@captions_app.command("build")
def build(
    library: LibraryOpt = None,
    vision: Annotated[str | None, typer.Option(help="vision model spec [default: the library's]")] = None,
    limit: Annotated[int | None, typer.Option(help="caption at most N images this run")] = None,
    style: Annotated[str | None, typer.Option(help="caption style [default: pipeline.caption_style]")] = None,
) -> None:
    """Caption every indexed image that has no caption yet (resumable: stop it any time, run it again)."""
    from picscope.models import make_vision_model
    from picscope.pipeline.captions import CaptionStore

    with Library.open(library, create=False) as lib:
        vis = make_vision_model(vision or lib.config.vision, encoder=lib.encoder)
        store = CaptionStore.for_library(lib)
        ids = [r.id for r in lib.catalog.all("ok")]
        style = style or lib.config.pipeline.caption_style
        have = store.get_many(ids, str(vis.spec), style)
        todo = [i for i in ids if i not in have][: limit if limit is not None else None]
        with Progress(TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err) as bar:
            task = bar.add_task("captions", total=len(todo))
            _, made, errors = store.ensure(lib, vis, todo, style, len(todo),
                                           progress=lambda n, total: bar.update(task, completed=n))
        for e in errors[:20]:
            err.print(f"[yellow]{e}[/]")
        out.print(f"{len(have) + made - len(errors)} of {len(ids)} images have a {style!r} caption from {vis.spec}"
                  f" ({made - len(errors)} new, {len(errors)} failed)")


@captions_app.command("show")
def show(
    ids: Annotated[list[int], typer.Argument(help="library ids")],
    library: LibraryOpt = None,
) -> None:
    """Print the newest stored caption of some images (JSON: id → caption)."""
    from picscope.pipeline.captions import CaptionStore

    with Library.open(library, create=False) as lib:
        got = CaptionStore.for_library(lib).all_for(ids)
    out.print_json(json.dumps({str(k): v for k, v in got.items()}))
