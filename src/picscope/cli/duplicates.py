"""`picscope duplicates`: groups of byte-identical and near-identical images in a library."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from picscope.cli.app import LibraryOpt, app
from picscope.cli.console import err, out


@app.command()
def duplicates(
    library: LibraryOpt = None,
    distance: Annotated[int, typer.Option(min=0, max=32, help="most differing bits of the 64-bit dHash for two "
                                          "images to count as near-identical")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: a list of groups, each a list of {id, path}")] = False,
    limit: Annotated[int, typer.Option(min=1, help="groups to show in the table")] = 50,
) -> None:
    """List groups of copies and near-identical images (re-saved, resized, consecutive video frames)."""
    from picscope.library import Library

    with Library.open(library, create=False) as lib:
        groups = lib.duplicates(distance)
    if as_json:
        out.print_json(json.dumps({"groups": [[{"id": r.id, "path": r.path} for r in g] for g in groups]}))
        return
    if not groups:
        err.print("no duplicates")
        return
    table = Table(title=f"{len(groups)} group(s) of duplicates, {sum(len(g) for g in groups)} images")
    table.add_column("group", justify="right", style="dim")
    table.add_column("id", justify="right", style="dim")
    table.add_column("path", overflow="fold")
    for n, group in enumerate(groups[:limit], 1):
        for i, rec in enumerate(group):
            table.add_row(str(n) if i == 0 else "", str(rec.id), rec.path)
    out.print(table)
    if len(groups) > limit:
        err.print(f"… and {len(groups) - limit} more groups (--limit, or --json for all)")
