"""The typer app, shared options, and error handling (a `PicscopeError` prints its message, exit 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from picscope.errors import PicscopeError

app = typer.Typer(
    name="picscope",
    help="Find the picture you mean: index folders, search by text or example, refine with feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(soft_wrap=True)
err = Console(stderr=True)

LibraryOpt = Annotated[
    Path | None,
    typer.Option("--library", "-L", help="library folder [env PICSCOPE_LIBRARY; default: per-user data dir]"),
]


def _show_version(value: bool) -> None:
    if value:
        from picscope import __version__

        out.print(f"picscope {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Find the picture you mean: index folders, search by text or example, refine with feedback."""


def _usage_error_types() -> tuple[type[Exception], ...]:
    """click's exception base, from click itself and from the copy typer vendors (`typer._click`)."""
    import click

    types: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        types.append(VendoredClickException)
    except ImportError:
        pass
    return tuple(types)


def run_app(argv: list[str]) -> int:
    try:
        rc = app(args=argv, prog_name="picscope", standalone_mode=False)
        if isinstance(rc, int) and rc:  # click returns a typer.Exit code instead of raising in this mode
            return rc
    except PicscopeError as exc:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)  # the text is not markup
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # click usage errors and the like
        if isinstance(exc, _usage_error_types()):
            exc.show()  # type: ignore[attr-defined]
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if os.environ.get("PICSCOPE_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set PICSCOPE_DEBUG=1 for a traceback)")
        return 1
    return 0
