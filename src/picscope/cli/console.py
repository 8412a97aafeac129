"""Where the CLI writes: `out` (results, stdout) and `err` (messages, stderr), and how a failed command is reported.

No typer here: the plain search of a new process (`picscope.cli.quick`) prints through these without loading the
command tree. rich is imported only when something styled is printed: importing it costs ~30-50 ms, and neither a
search's results table (`cli/table.py`) nor JSON into a pipe needs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich `Console` made on first use, with a `print_json` that does not need one when nothing is styled."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    # special methods are looked up on the type, not through __getattr__ (rich's progress bars enter the console)
    def __enter__(self) -> Console:
        return self.real.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.real.__exit__(*exc)

    @property
    def stream(self) -> TextIO:
        return sys.stderr if self._options.get("stderr") else sys.stdout

    def styled(self) -> bool:
        """Whether rich would style this stream: a terminal, or colour forced (rich's FORCE_COLOR, TTY_COMPATIBLE)."""
        if os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE"):
            return True
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty is not None and isatty())

    def print_json(self, text: str) -> None:
        """JSON indented by two, as rich prints it; coloured on a terminal only (a pipe gets the same text without
        rich's import)."""
        if self.styled():
            self.real.print_json(text)
            return
        self.stream.write(json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n")


out: Console = LazyConsole(soft_wrap=True)  # type: ignore[assignment]
err: Console = LazyConsole(stderr=True)  # type: ignore[assignment]


def report_failure(exc: Exception | KeyboardInterrupt) -> int:
    """Print what went wrong and return the exit code, for a failure any command can have: 2 for a picscope error
    (its message), 130 for Ctrl-C, 1 and nothing printed when the reader of the output went away (`picscope search
    x --paths | head -1`, as click does), 1 for a bug (one line; PICSCOPE_DEBUG=1 re-raises it for the traceback).
    Click's usage errors are the typer app's own (`cli/app.py`)."""
    from picscope.errors import PicscopeError

    if isinstance(exc, BrokenPipeError):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # later flushes write nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if isinstance(exc, PicscopeError):
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)  # the text is not markup
        return 2
    if isinstance(exc, KeyboardInterrupt):
        err.print("interrupted")
        return 130
    if os.environ.get("PICSCOPE_DEBUG"):
        raise exc
    err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set PICSCOPE_DEBUG=1 for a traceback)")
    return 1
