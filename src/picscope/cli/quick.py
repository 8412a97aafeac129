"""`picscope search TEXT` (and `--image FILE`) in a new process, without loading the command tree.

A plain search is what people and scripts run most, each time in a new process of ~0.2-0.3 s, most of it Python and
numpy starting. typer (with its vendored click) and reading the search command's twenty options cost ~30-50 ms of
that. `parse` reads the common forms of the command — one text query or `--image FILE`, `--library`/`-L`,
`-k`/`--top`, `--paths`, `--json` — and returns None for anything else (another option, help, a mistake to
report), which the typer command then handles with its own messages. What runs is the command's own code
(`cli/searching.py`), so the output is the same; `tests/test_cli_quick.py` checks that, and that these option
names are the command's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

COMMAND = "search"
VALUE_OPTIONS = {"--library": "library", "-L": "library", "-k": "k", "--top": "k", "--image": "image"}  # → what it sets
FLAG_OPTIONS = {"--paths": "paths", "--json": "as_json"}
DEFAULT_K = 10  # the command's `-k` default (checked by the test)


class QuickSearch(NamedTuple):
    query: str | None  # the text, or None for `image`
    library: Path | None
    k: int
    paths: bool
    as_json: bool
    image: Path | None = None


def _option(args: Sequence[str], i: int) -> tuple[str, str, int] | None:
    """(what it sets, its value, index after it) for a value option at `args[i]`, or None."""
    name, eq, value = args[i].partition("=")
    if eq and name.startswith("--") and name in VALUE_OPTIONS:  # --top=5 (click takes no `-k=5`)
        return VALUE_OPTIONS[name], value, i + 1
    if args[i] in VALUE_OPTIONS and i + 1 < len(args):
        return VALUE_OPTIONS[args[i]], args[i + 1], i + 2
    return None


def parse(argv: Sequence[str]) -> QuickSearch | None:
    """The search `argv` asks for when it is a plain text (or `--image`) search in one of the common forms, else
    None."""
    if not argv or argv[0] != COMMAND:
        return None
    args = argv[1:]
    values: dict[str, str] = {}  # what a value option sets → its value
    flags: set[str] = set()
    query: str | None = None
    i = 0
    while i < len(args):
        if args[i] in FLAG_OPTIONS:
            if FLAG_OPTIONS[args[i]] in flags:
                return None
            flags.add(FLAG_OPTIONS[args[i]])
            i += 1
            continue
        if args[i].startswith("-"):  # a value option, or anything else that starts like an option (`--`, `-`)
            got = _option(args, i)
            if got is None or got[0] in values or not got[1] or got[1].startswith("-"):
                return None
            values[got[0]] = got[1]
            i = got[2]
            continue
        if query is not None:  # a second word: click reports it
            return None
        query, i = args[i], i + 1
    k = values.get("k", str(DEFAULT_K))
    if (query is None) == ("image" not in values) or (query is not None and not query.strip()) or \
            not (k.isascii() and k.isdigit()) or int(k) < 1 or len(flags) > 1:
        return None  # mistakes (no query, both, a bad -k, --json with --paths) get the command's own messages
    library = Path(values["library"]) if "library" in values else None
    image = Path(values["image"]) if "image" in values else None
    return QuickSearch(query, library, int(k), "paths" in flags, "as_json" in flags, image)


def run(argv: Sequence[str]) -> int | None:
    """Run `argv` when `parse` reads it: the exit code. None: not read here (the caller runs the typer command)."""
    asked = parse(argv)
    return None if asked is None else run_asked(asked)


def run_asked(asked: QuickSearch) -> int:
    """Run the search `parse` read, print it, and return the exit code."""
    from picscope.cli.console import out, report_failure
    from picscope.cli.searching import SearchArgs, print_results, run_search, search_json

    args = SearchArgs(query=asked.query, image=asked.image, ref=None, turns=[], add=[], subtract=[], stages=(),
                      explain=False, llm=None, vision=None, min_score=None, min_relevance=None, dedupe=False,
                      path=None, k=asked.k)
    try:
        name, result = run_search(asked.library, args, verbose=False)
        if asked.as_json:
            out.print_json(search_json(args.request(), name, result, None))
        else:
            print_results(result.results, asked.paths)
    except (Exception, KeyboardInterrupt) as exc:
        return report_failure(exc)
    return 0
