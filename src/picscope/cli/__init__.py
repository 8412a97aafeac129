"""The `picscope` command line. Each command group lives in its own module and registers on `app`.

A new process imports only the module of the command it runs (`COMMANDS` says which): a text search does not
pay for the server, the pipeline, training or evaluation code, nor typer reading every other command's signature.
`--help`, `--version`, no command or an unknown one load every module, so help and click's "No such command"
are as before. `tests/test_cli_startup.py` checks `COMMANDS` against what the modules really register.

A plain text search in a common form does not load typer at all (`cli/quick.py`), and the `picscope` program
(`entry`) ends its process as soon as that search's output is written (`end_now`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn

from picscope.cli import quick

if TYPE_CHECKING:
    from picscope.cli.app import app

# Command modules, in registration order (the order `picscope --help` lists their commands in).
MODULES = ("core", "eval", "train", "captioner", "models", "chat", "captions", "session", "serve", "scale",
           "duplicates")

# Top-level command or group name → the module (under picscope.cli) that registers it.
COMMANDS: dict[str, str] = {
    "index": "core", "search": "core", "status": "core", "demo": "core", "cache": "core",
    "eval": "eval", "dataset": "eval",
    "train-encoder": "train", "eval-encoder": "train", "train-codec": "train", "train-querybank": "train",
    "train-verifier": "train",
    "train-captioner": "captioner", "eval-captioner": "captioner",
    "doctor": "models", "specs": "models",
    "chat": "chat",
    "captions": "captions",
    "session": "session",
    "serve": "serve",
    "sync-index": "scale", "embed-distributed": "scale", "ingest-vectors": "scale",
    "duplicates": "duplicates",
}

ROOT_FLAGS = frozenset({"--verbose"})  # root options that may come before the command and take no value


def _load(name: str) -> None:
    try:
        importlib.import_module(f"picscope.cli.{name}")
    except ModuleNotFoundError as exc:  # an optional command module left out of this install
        if exc.name != f"picscope.cli.{name}":
            raise


def load_commands(argv: list[str] | None = None) -> None:
    """Register the command `argv` runs (its module only), or every command when `argv` is None or does not
    name a known command plainly (help, version, a typo)."""
    if argv is not None:
        args = argv[: argv.index("--")] if "--" in argv else argv
        command = next((a for a in args if a not in ROOT_FLAGS), None)
        module = COMMANDS.get(command) if command is not None else None
        if module is not None:
            _load(module)
            return
    for name in MODULES:
        _load(name)


def main(argv: list[str] | None = None) -> int:
    """Run one command line (without the program name) and return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    rc = quick.run(args)
    if rc is not None:
        return rc
    from picscope.cli.app import run_app

    load_commands(args)
    return run_app(args)


def entry() -> NoReturn:
    """The `picscope` program (and `python -m picscope`)."""
    args = sys.argv[1:]
    asked = quick.parse(args)
    if asked is not None:
        # Before numpy loads: OpenBLAS's threads go to sleep at once instead of spinning after numpy's import
        # (and after each product), where they took a core from the search on a busy machine (a text search
        # beside two busy loops on 2 cores: 0.40 s → 0.33 s p50, the floor 0.29 s). They still share a large
        # scan (1M coarse codes: 15 ms on two threads, 29 ms on one). A user's own setting is kept.
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # 2^4 cycles, OpenBLAS's shortest wait
        end_now(quick.run_asked(asked))
    sys.exit(main(args))


def end_now(rc: int) -> NoReturn:
    """End the process once its output is written, without Python's teardown.

    A search has nothing to finish: the library is closed, its results are printed. Tearing down the interpreter
    (~250 modules, the memory-mapped model weights and vectors) cost ~40-60 ms of a 0.2-0.3 s search process, for
    nothing. Exit handlers still run (log files are flushed and closed); with a thread of its own still running,
    the process ends the ordinary way, which waits for it."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(rc)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away (`| head -1`), a closed stream
            stream.flush()
    os._exit(rc)


def __getattr__(name: str) -> Any:
    """`picscope.cli.app`: the typer app, with the commands loaded so far (imported on first use)."""
    if name == "app":
        from picscope.cli.app import app

        return app
    raise AttributeError(f"module 'picscope.cli' has no attribute {name!r}")


__all__ = ["COMMANDS", "app", "end_now", "entry", "load_commands", "main"]
