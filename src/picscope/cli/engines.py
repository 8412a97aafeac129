"""Quiet engines: the in-process llama.cpp server (xllamacpp) writes its log lines to file descriptor 2 from C,
which no Python setting reaches. While a command may run a model, `engine_logs` points fd 2 at
`<library>/logs/engines.log` (or the cache folder) and keeps Python's own `sys.stderr` (errors, progress,
the spinner) on the terminal through a copy of the original descriptor. The model-event warnings of
`picscope.models` (retries, parse failures, fallbacks) go to the same file. `--verbose` changes nothing:
the engines and the events write to the terminal.

`working(message)` shows a spinner on stderr while a model runs, on a terminal only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

LOG_NAME = "engines.log"
_lock = threading.Lock()
_depth = 0  # nested engine_logs blocks share one redirection


def engine_log_path(folder: str | os.PathLike[str] | None) -> Path:
    """Where engine logs go: `<library>/logs/engines.log`, else the cache folder's `logs/`."""
    if folder is not None:
        from picscope.layout import LibraryLayout

        return LibraryLayout(folder).logs / LOG_NAME
    from picscope.paths import cache_dir

    return Path(cache_dir()) / "logs" / LOG_NAME


def verbose_requested() -> bool:
    """PICSCOPE_VERBOSE=1 (or true/yes): engine logs stay on the terminal for every command."""
    return os.environ.get("PICSCOPE_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def _stderr_is_fd2() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capsys, a StringIO, ...
        return False


@contextlib.contextmanager
def engine_logs(folder: str | os.PathLike[str] | None, *, verbose: bool = False) -> Iterator[Path | None]:
    """Send everything written to fd 2 by native code to the engine log for the duration of the block.

    Yields the log path (None when `verbose`: then the engines write to the terminal as before).
    """
    global _depth
    if verbose or verbose_requested():
        yield None
        return
    path = engine_log_path(folder)
    writable = True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # a read-only library: fall back to silence rather than to the terminal
        log_fd, writable = os.open(os.devnull, os.O_WRONLY), False
    with _lock:
        outer = _depth == 0
        _depth += 1
    try:
        if not outer:  # the outer block already redirects
            os.close(log_fd)
            yield path
            return
        with _model_events_to(path if writable else None), _fd2_to(log_fd):
            yield path
    finally:
        with _lock:
            _depth -= 1


@contextlib.contextmanager
def _model_events_to(path: Path | None) -> Iterator[None]:
    """The `picscope.models` event warnings go to `path` (None: nowhere) instead of the terminal."""
    handler: logging.Handler = (logging.FileHandler(path, encoding="utf-8", delay=True) if path is not None
                                else logging.NullHandler())
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    events = logging.getLogger("picscope.models")
    events.addHandler(handler)
    events_propagate, events.propagate = events.propagate, False
    try:
        yield
    finally:
        events.removeHandler(handler)
        events.propagate = events_propagate
        handler.close()


@contextlib.contextmanager
def _fd2_to(log_fd: int) -> Iterator[None]:
    """Point fd 2 at `log_fd` (closed at the end); Python's `sys.stderr` keeps writing to the terminal."""
    swap_python_stderr = _stderr_is_fd2()
    old_stderr = sys.stderr
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved_fd = os.dup(2)
    terminal: io.TextIOWrapper | None = None
    try:
        if swap_python_stderr:
            terminal = io.TextIOWrapper(os.fdopen(os.dup(saved_fd), "wb", buffering=0), encoding="utf-8",
                                        errors="backslashreplace", line_buffering=True, write_through=True)
            sys.stderr = terminal
        os.dup2(log_fd, 2)
        yield
    finally:
        gguf = sys.modules.get("picscope.models.gguf")
        if gguf is not None:  # stop llama.cpp servers while their shutdown lines still go to the log
            with contextlib.suppress(Exception):
                gguf.close_all()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(log_fd)
        if swap_python_stderr:
            sys.stderr = old_stderr
            if terminal is not None:
                terminal.close()


@contextlib.contextmanager
def working(message: str) -> Iterator[None]:
    """A spinner with `message` on stderr while the block runs (models can take seconds); only on a terminal."""
    stream = sys.stderr
    try:
        tty = bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        yield
        return
    from rich.console import Console  # only here: a search that shows no spinner never imports rich

    console = Console(file=stream)  # bound to the stream of now (the engine log may have swapped it)
    if console.is_dumb_terminal:  # no cursor control: one plain line instead of an animation
        stream.write(f"{message}…\n")
        stream.flush()
        yield
        return
    with console.status(f"{message}…", spinner="dots"):
        yield
