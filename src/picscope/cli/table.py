"""The search results table, drawn without rich.

A text search prints one small table, and importing and laying it out with rich cost ~40 ms of a ~0.3 s process
(`benchmarks/bench_cli.py`), so it is drawn here in the same shape rich drew it: a bold header row, a heavy rule,
light column separators, no outer edge. On a terminal, dim columns are dimmed (not with `NO_COLOR` or
`TERM=dumb`) and the last column folds to the terminal's width; into a pipe or a file nothing is styled or
folded, so paths stay whole for scripts. A stream that cannot encode the box characters gets ASCII ones.
"""

from __future__ import annotations

import os
import shutil
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # right-justified (numbers)
    dim: bool = False


def width(text: str) -> int:
    """Terminal cells of `text`: wide (East Asian) characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fold(text: str, cells: int) -> list[str]:
    """`text` cut into pieces of at most `cells` terminal cells (at least one character each)."""
    pieces, piece, used = [], "", 0
    for c in text:
        w = width(c)
        if piece and used + w > cells:
            pieces.append(piece)
            piece, used = "", 0
        piece += c
        used += w
    return [*pieces, piece] if piece or not pieces else pieces


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, styled: bool = False,
           max_width: int | None = None, unicode: bool = True) -> str:
    """The table as text (no trailing newline). `max_width`: fold the last column to fit (at least 10 cells)."""
    rows = [[t if t.isprintable() else "".join(c if c.isprintable() else "?" for c in t) for t in r] for r in rows]
    widths = [max([width(c.header), *(width(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    head_sep, rule, cross, sep = (" ┃ ", "━", "╇", " │ ") if unicode else (" | ", "-", "+", " | ")
    if max_width is not None and len(columns) > 1:
        before = sum(widths[:-1]) + 3 * (len(columns) - 1)
        widths[-1] = max(min(widths[-1], max_width - before), 10)

    def cell(text: str, i: int, header: bool = False) -> str:
        pad = " " * max(widths[i] - width(text), 0)
        body = pad + text if columns[i].right else text + (pad if i < len(columns) - 1 else "")
        if styled and header:
            return _BOLD + body + _RESET
        if styled and columns[i].dim:
            return _DIM + body + _RESET
        return body

    lines = [head_sep.join(cell(c.header, i, header=True) for i, c in enumerate(columns))]
    lines.append(cross.join(rule * (w + (1 if i in (0, len(widths) - 1) else 2)) for i, w in enumerate(widths)))
    for row in rows:
        last = _fold(row[-1], widths[-1]) if max_width is not None else [row[-1]]
        lines.append(sep.join(cell(t, i) for i, t in enumerate([*row[:-1], last[0]])))
        for more in last[1:]:  # a folded last column continues under itself
            lines.append(sep.join(cell(t, i) for i, t in enumerate([*([""] * (len(row) - 1)), more])))
    return "\n".join(lines)


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    tty = stream.isatty()
    styled = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "━┃╇│".encode(encoding)
        unicode = True
    except (UnicodeEncodeError, LookupError):
        unicode = False
    max_width = shutil.get_terminal_size().columns if tty else None
    stream.write(render(columns, rows, styled=styled, max_width=max_width, unicode=unicode) + "\n")
    stream.flush()
