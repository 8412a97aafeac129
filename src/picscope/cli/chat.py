"""`picscope chat`: an interactive dialogue search in the terminal. Every answer stays in force."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from picscope.cli.app import LibraryOpt, app
from picscope.cli.console import err, out
from picscope.library import Library

if TYPE_CHECKING:
    from picscope.pipeline import Pipeline, PipelineOutput

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
    from picscope.pipeline import make_pipeline, parse_stages

    chosen = parse_stages(stages)
    with Library.open(library, create=False) as lib:
        pipe = make_pipeline(lib, "imagescope" if chosen else "encoder", stages=chosen, llm=llm, vision=vision)
        if not as_json:
            err.print(HELP)
        _converse(pipe, _Dialogue(ref), k, explain=explain, as_json=as_json)


def _converse(pipe: Pipeline, dialogue: _Dialogue, k: int, *, explain: bool, as_json: bool) -> None:
    """Read lines until the end of input or :quit; search after each line that changes the request."""
    from picscope.cli.engines import working
    from picscope.pipeline import Request

    last: PipelineOutput | None = None
    while (line := _read_line(prompt=not as_json)) is not None:
        action = dialogue.read(line, last, k)
        if action == QUIT:
            break
        if action == WAIT or dialogue.opening is None:
            continue
        with working("searching"):  # a spinner on a terminal while the models run
            last = pipe.run(Request(dialogue.opening, reference=dialogue.ref, turns=list(dialogue.turns)), k)
        _show_turn(last, dialogue, k, explain=explain, as_json=as_json)


def _read_line(*, prompt: bool) -> str | None:
    """The next line, stripped; None at the end of input."""
    if prompt:
        err.print("[bold]>[/] ", end="")
    line = sys.stdin.readline()
    return line.strip() if line else None


QUIT, WAIT, SEARCH = "quit", "wait", "search"


@dataclass
class _Dialogue:
    """The request so far: the opening description, the turns in force and the reference photo."""

    ref: str | None
    opening: str | None = None
    turns: list[str] = field(default_factory=list)

    def read(self, line: str, last: PipelineOutput | None, k: int) -> str:
        """Apply one input line (a command, the description or a turn): QUIT, WAIT or SEARCH."""
        if not line:
            return WAIT
        if line in (":quit", ":q", ":exit"):
            return QUIT
        if line == ":undo":
            return self._undo()
        if line == ":explain":
            if last is not None:
                from picscope.pipeline.explain import print_explanation

                print_explanation(last.explanation, out, k, last.candidates)
            return WAIT
        if line == ":turns":
            out.print("\n".join([self.opening or "(no description yet)", *(f"- {t}" for t in self.turns)]))
            return WAIT
        if line.startswith(":ref"):
            self.ref = line[4:].strip() or None
            err.print(f"reference: {self.ref}")
        elif line == ":noref":
            self.ref = None
        elif line.startswith(":"):
            err.print(f"unknown command {line!r}\n{HELP}")
            return WAIT
        elif self.opening is None:
            self.opening = line
        else:
            self.turns.append(line)
        return SEARCH if self.opening is not None else WAIT

    def _undo(self) -> str:
        if self.turns:
            self.turns.pop()
            return SEARCH
        self.opening = None
        err.print("the description is cleared; type a new one")
        return WAIT


def _show_turn(last: PipelineOutput, dialogue: _Dialogue, k: int, *, explain: bool, as_json: bool) -> None:
    """One turn's results: a JSON line, or ranked paths (and the explanation with --explain)."""
    if as_json:
        print(json.dumps({"turn": len(dialogue.turns), "request": dialogue.opening, "turns": dialogue.turns,
                          "stages": last.stages, "results": [r.to_dict() for r in last.results],
                          "explanation": last.to_dict()}, default=str), flush=True)
        return
    for r in last.results:
        out.print(f"{r.rank:>3}  {r.path}")
    if explain:
        from picscope.pipeline.explain import print_explanation

        print_explanation(last.explanation, out, k, last.candidates)
