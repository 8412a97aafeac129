"""The typer app, shared options, and error handling.

A `PicscopeError` prints its message and exits 2; a usage mistake (a missing query, a bad value, an unknown
option, two options that exclude each other) prints the usage line and the message and exits 2, like any
click program. Help is plain text: no `<bool>` after flags, literal brackets such as `[pipeline]` kept.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from picscope.cli.console import err, report_failure
from picscope.layout import LibraryLayout

app = typer.Typer(
    name="picscope",
    help="Find the picture you mean: index folders, search by text or example, refine with feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: literal [brackets], no <bool> after flags
)


LibraryOpt = Annotated[
    Path | None,
    typer.Option("--library", "-L", metavar="PATH",
                 help="library folder [env PICSCOPE_LIBRARY; default: per-user data dir]"),
]


def command_group(name: str, help: str) -> typer.Typer:
    """A group of subcommands, `picscope NAME COMMAND ...`, registered on the app; bare `picscope NAME` shows
    its help."""
    group = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


class UsageMistake(typer.BadParameter):
    """A usage error raised by a command itself: click shows the usage line, then `Error: <message>`."""

    def format_message(self) -> str:
        return self.message


def usage_error(ctx: typer.Context, message: str) -> typer.BadParameter:
    """A usage mistake found inside a command: shown with the command's usage line, exit code 2."""
    return UsageMistake(message, ctx=ctx)


def _version_callback(value: bool) -> None:
    if value:
        from picscope import __version__

        print(f"picscope {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="print the version and exit")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="show the model engines' own log lines (llama.cpp) on the terminal "
                           "instead of <library>/logs/engines.log [env PICSCOPE_VERBOSE=1]")
    ] = False,
) -> None:
    """Find the picture you mean: index folders, search by text or example, refine with feedback."""


# Commands that may run a local model engine: their engine logs go to a file (see picscope.cli.engines).
# `search` routes its own (it knows its library and has its own --verbose).
MODEL_COMMANDS = frozenset({"chat", "captions", "doctor", "serve", "session"})


def _engine_scope(argv: list[str]) -> contextlib.AbstractContextManager[object]:
    """Engine logs to a file for a model command: the library's `logs/` when one is named and exists, else
    the cache folder's. `picscope --verbose ...` or PICSCOPE_VERBOSE=1 keeps them on the terminal."""
    args = argv[: argv.index("--")] if "--" in argv else argv
    command = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if command is None or args[command] not in MODEL_COMMANDS:
        return contextlib.nullcontext()
    from picscope.cli.engines import engine_logs, verbose_requested

    verbose = "--verbose" in args[:command] or verbose_requested()
    folder: str | None = None
    rest = args[command + 1 :]
    for i, a in enumerate(rest):
        if a in ("--library", "-L") and i + 1 < len(rest):
            folder = rest[i + 1]
        elif a.startswith("--library="):
            folder = a.split("=", 1)[1]
    if folder is None and args[command] == "serve" and rest and not rest[0].startswith("-"):
        folder = rest[0]
    folder = folder or os.environ.get("PICSCOPE_LIBRARY")
    if folder is not None and not LibraryLayout(Path(folder).expanduser()).is_library():
        folder = None  # not a library (yet): never create one just for a log file
    return engine_logs(Path(folder).expanduser() if folder else None, verbose=verbose)


def _plain_help(typer_app: typer.Typer) -> None:
    """Plain help for every sub-app too (each `typer.Typer` carries its own markup mode)."""
    typer_app.rich_markup_mode = None
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _plain_help(group.typer_instance)


def run_app(argv: list[str]) -> int:
    _plain_help(app)
    try:
        with _engine_scope(argv):
            rc = app(args=argv, prog_name="picscope", standalone_mode=False)
        if isinstance(rc, int) and rc:  # click returns a typer.Exit code instead of raising in this mode
            return rc
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.TyperException as exc:  # click usage errors (typer vendors click): usage line + message
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc.format_message()}", highlight=False, markup=False)
        return int(exc.exit_code)
    except (Exception, KeyboardInterrupt) as exc:
        return report_failure(exc)
    return 0
