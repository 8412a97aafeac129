"""The `picscope` command line. Each command group lives in its own module and registers on `app`."""

from __future__ import annotations

import sys

# Command modules register themselves on import.
from picscope.cli import core as _core  # noqa: F401
from picscope.cli.app import app, run_app


def _load_optional_commands() -> None:
    import importlib

    for name in ("eval", "train", "models", "chat", "captions", "session", "serve", "scale", "duplicates"):
        try:
            importlib.import_module(f"picscope.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"picscope.cli.{name}":
                raise


_load_optional_commands()


def main(argv: list[str] | None = None) -> int:
    return run_app(sys.argv[1:] if argv is None else argv)


__all__ = ["app", "main"]
