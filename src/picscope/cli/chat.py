"""`picscope chat`: an interactive dialogue search in the terminal. Every answer stays in force."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from picscope.cli.app import LibraryOpt, app, err, out
from picscope.library import Library

HELP = ("Describe the photo, then add details or answers one line at a time (e.g. 'is it outdoors? yes').\n"
        "Commands: :undo (drop the last line)  :explain  :turns  :ref FILE|ID  :noref  :quit")


@app.command()
def chat(
    library: LibraryOpt = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="results shown per turn")] = 5,
    stages: Annotated[str, typer.Option("--stages", help="pipeline stages (1, 1-2, 1-3, encoder)")] = "1-3",
    ref: Annotated[str | None, typer.Option("--ref", help="start from this reference photo")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="explain every turn")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per turn (for scripts)")] = False,
    llm: Annotated[str | None, typer.Option("--llm", help="chat model [default: the library's]")] = None,
    vision: Annotated[str | None, typer.Option("--vision", help="vision model [default: the library's]")] = None,
) -> None:
    """Search by dialogue: an opening description, then one detail or answer per line."""
    from picscope.cli.engines import working
    from picscope.pipeline import Request, make_pipeline, parse_stages
    from picscope.pipeline.explain import print_explanation

    chosen = parse_stages(stages)
    with Library.open(library, create=False) as lib:
        pipe = make_pipeline(lib, "imagescope" if chosen else "encoder", stages=chosen, llm=llm, vision=vision)
        if not as_json:
            err.print(HELP)
        opening: str | None = None
        turns: list[str] = []
        last = None
        while True:
            if not as_json:
                err.print("[bold]>[/] ", end="")
            line = sys.stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line in (":quit", ":q", ":exit"):
                break
            if line == ":undo":
                if turns:
                    turns.pop()
                else:
                    opening = None
                    err.print("the description is cleared; type a new one")
                    continue
            elif line == ":explain":
                if last is not None:
                    print_explanation(last.explanation, out, k, last.candidates)
                continue
            elif line == ":turns":
                out.print("\n".join([opening or "(no description yet)", *(f"- {t}" for t in turns)]))
                continue
            elif line.startswith(":ref"):
                ref = line[4:].strip() or None
                err.print(f"reference: {ref}")
                if opening is None:
                    continue
            elif line == ":noref":
                ref = None
                if opening is None:
                    continue
            elif line.startswith(":"):
                err.print(f"unknown command {line!r}\n{HELP}")
                continue
            elif opening is None:
                opening = line
            else:
                turns.append(line)
            if opening is None:
                continue
            with working("searching"):  # a spinner on a terminal while the models run
                last = pipe.run(Request(opening, reference=ref, turns=list(turns)), k)
            if as_json:
                print(json.dumps({"turn": len(turns), "request": opening, "turns": turns, "stages": last.stages,
                                  "results": [r.to_dict() for r in last.results],
                                  "explanation": last.to_dict()}, default=str), flush=True)
                continue
            for r in last.results:
                out.print(f"{r.rank:>3}  {r.path}")
            if explain:
                print_explanation(last.explanation, out, k, last.candidates)
