"""`picscope session "TEXT"`: an interactive retrieval session in the terminal (resumable with --resume ID)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from picscope.cli.app import LibraryOpt, app
from picscope.cli.console import err, out
from picscope.errors import PicscopeError

if TYPE_CHECKING:
    from picscope.library import Library

HELP = """commands:
  +3 +5 -7     mark results 3 and 5 relevant, 7 not relevant (numbers of the current page)
  next         feedback → rewritten query → the next page of images not shown before
  more         like next, but images already shown may come back
  undo         take back the last marks of this round
  back         return to the previous round
  show 3       details of result 3
  why          the query of every round and why it changed
  quit         leave (the session is saved; resume with --resume ID)"""


def _models(chat: str | None, vision: str | None, library: Library) -> tuple[Any, Any]:
    if not chat and not vision:
        return None, None
    from picscope.models import make_chat_model as make_chat
    from picscope.models import make_vision_model as make_vision

    llm = make_chat(chat) if chat else None
    vis = make_vision(vision, chat=llm, encoder=library.encoder) if vision else None
    return llm, vis


def _print_page(s: Any) -> None:
    out.print(f"[bold]round {s.round}[/] · session {s.id} · query: {s.current_query!r}", highlight=False)
    page = s.page()
    if not page:
        out.print("  (no images left that were not shown before; try `more` or `back`)")
    for p in page:
        mark = {True: "[green]+[/]", False: "[red]-[/]", None: " "}[p.mark]
        out.print(f" {mark} {p.number:2d}. {p.path}  [dim]{p.score:.3f}[/]", highlight=False)


def _print_why(s: Any) -> None:
    ex = s.explain()
    for h in ex["history"]:
        line = f"  round {h['round']}: {h['query']!r}  ({h['why']})"
        out.print(line, highlight=False)
    if ex["negative_propositions"]:
        out.print("  expected false: " + "; ".join(ex["negative_propositions"]), highlight=False)


def _parse_marks(tokens: list[str], page_size: int) -> tuple[list[int], list[int]]:
    pos: list[int] = []
    neg: list[int] = []
    for t in tokens:
        if len(t) < 2 or t[0] not in "+-" or not t[1:].isdigit():
            raise PicscopeError(f"cannot read {t!r}: mark with +N (relevant) or -N (not relevant); type help")
        n = int(t[1:])
        if not 1 <= n <= page_size:
            raise PicscopeError(f"there is no result {n} on this page (1..{page_size})")
        (pos if t[0] == "+" else neg).append(n)
    return pos, neg


def run_command(s: Any, line: str) -> bool:
    """Apply one command line to session `s`; False when the user quits. Errors are printed, not raised."""
    tokens = line.replace(",", " ").split()
    if not tokens:
        return True
    cmd = tokens[0].lower()
    try:
        if cmd in ("quit", "q", "exit"):
            return False
        if cmd in ("help", "h", "?"):
            out.print(HELP, highlight=False)
        elif cmd in ("next", "n", "more"):
            s.next_round(round=s.round, allow_repeats=cmd == "more")
            last = s.explain()["history"][-1]
            if last["fallback"]:
                err.print(f"[yellow]note:[/] {last['fallback']}", highlight=False)
            else:
                out.print(f"[dim]{last['why']}[/]", highlight=False)
            _print_page(s)
        elif cmd == "undo":
            removed = s.undo()
            numbers = {p.id: p.number for p in s.page()}
            out.print(
                "undone: " + " ".join(f"{'+' if m['relevant'] else '-'}{numbers.get(m['id'], '?')}" for m in removed)
            )
        elif cmd == "back":
            s.back(round=s.round)
            _print_page(s)
        elif cmd == "show":
            if len(tokens) != 2 or not tokens[1].isdigit():
                raise PicscopeError("usage: show N")
            page = s.page()
            n = int(tokens[1])
            if not 1 <= n <= len(page):
                raise PicscopeError(f"there is no result {n} on this page (1..{len(page)})")
            p = page[n - 1]
            rec = s.library.get(p.id)
            size = f"{rec.width}x{rec.height}" if rec and rec.width else "?"
            mark = {True: "relevant", False: "not relevant", None: "unmarked"}[p.mark]
            out.print(f"{n}. {p.path}\n   id {p.id} · score {p.score:.3f} · {size} · {mark}", highlight=False)
        elif cmd in ("why", "explain"):
            _print_why(s)
        elif cmd[0] in "+-":
            page = s.page()
            pos, neg = _parse_marks(tokens, len(page))
            if pos:
                s.mark([page[n - 1].id for n in pos], True, round=s.round)
            if neg:
                s.mark([page[n - 1].id for n in neg], False, round=s.round)
            marks = s.marks()
            out.print(f"marked: {sum(marks.values())} relevant, {sum(not v for v in marks.values())} not relevant")
        else:
            raise PicscopeError(f"unknown command {tokens[0]!r}; type help")
    except PicscopeError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return True


@app.command()
def session(
    query: Annotated[str | None, typer.Argument(help="what you are looking for")] = None,
    resume: Annotated[str | None, typer.Option("--resume", "-r", help="continue the session with this id")] = None,
    strategy: Annotated[
        str, typer.Option(help="feedback: none | rocchio | rocchio-classic | caption | rewrite | combined")
    ] = "combined",
    page_size: Annotated[int, typer.Option("--page-size", "-k", help="images per round")] = 10,
    chat: Annotated[str | None, typer.Option(help="chat model spec for rewrite/combined")] = None,
    vision: Annotated[
        str | None, typer.Option(help="vision model spec (captions) for caption/rewrite/combined")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="list saved sessions and exit")] = False,
    library: LibraryOpt = None,
) -> None:
    """Search interactively: mark results (+3 -7), ask for the next round, undo, go back; resumable by id."""
    from picscope import Library
    from picscope.sessions import Session

    with Library.open(library, create=False) as lib:
        if list_:
            for x in Session.list_sessions(lib):
                out.print(f"{x['id']}  round {x['round']}  {x['strategy']:8s}  {x['query']!r}", highlight=False)
            return
        llm, vis = _models(chat, vision, lib)
        if resume:
            s = Session.open(lib, resume, llm=llm, vision=vis)
        elif query:
            s = Session.create(lib, query, strategy=strategy, page_size=page_size, llm=llm, vision=vis)
        else:
            raise PicscopeError('give a query (picscope session "a red car") or --resume ID')
        _print_page(s)
        out.print("[dim]type +N / -N to mark, next, undo, back, show N, why, quit (help for more)[/]")
        while True:
            if sys.stdin.isatty():
                out.print("> ", end="")
            line = sys.stdin.readline()
            if not line:
                break
            if not run_command(s, line):
                break
        out.print(f"session saved: resume with  picscope session --resume {s.id}", highlight=False)
