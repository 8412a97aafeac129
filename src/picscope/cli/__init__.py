"""The `picscope` command line. Each command group lives in its own module and registers on `app`.

A new process imports only the module of the command it runs (`COMMANDS` says which): a text search does not
pay for the server, the pipeline, training or evaluation code, nor typer reading every other command's signature.
`--help`, `--version`, no command or an unknown one load every module, so help and click's "No such command"
are as before. `tests/test_cli_startup.py` checks `COMMANDS` against what the modules really register.
"""

from __future__ import annotations

import importlib
import sys

from picscope.cli.app import app, run_app

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
    args = sys.argv[1:] if argv is None else argv
    load_commands(args)
    return run_app(args)


__all__ = ["COMMANDS", "app", "load_commands", "main"]  # `app` holds the commands loaded so far
