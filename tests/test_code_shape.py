"""Code shape: no function in `src/picscope` is longer than 60 lines (def line to last line, as `ast` counts:
`end_lineno - lineno + 1`; decorators not counted). A long function is split so that each part does one thing."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 60
SRC = Path(__file__).resolve().parents[1] / "src" / "picscope"

# Split on other branches of issue 19 (`owners`, `declared`); the lead empties this set when they merge.
PENDING_ELSEWHERE: set[str] = set()


def function_lengths(source: str, name: str) -> dict[str, int]:
    """`name:function` -> lines of every function and method (nested ones too) in one module's source.
    Where one name is defined twice in a module, the longer counts."""
    lengths: dict[str, int] = {}
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            key = f"{name}:{node.name}"
            lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    return lengths


def source_lengths() -> dict[str, int]:
    lengths: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        lengths.update(function_lengths(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix()))
    return lengths


def test_no_function_is_over_60_lines() -> None:
    lengths = source_lengths()
    assert len(lengths) > 500, f"found only {len(lengths)} functions under {SRC}: wrong folder?"
    too_long = {k: n for k, n in lengths.items() if n > MAX_LINES and k not in PENDING_ELSEWHERE}
    assert not too_long, (
        f"functions over {MAX_LINES} lines (split each into parts that do one thing): "
        + ", ".join(f"{k} ({n})" for k, n in sorted(too_long.items(), key=lambda kv: -kv[1]))
    )


def test_pending_entries_are_not_stale() -> None:
    """Each pending entry still names a function over the limit; once split (or renamed), remove it."""
    lengths = source_lengths()
    missing = sorted(k for k in PENDING_ELSEWHERE if k not in lengths)
    assert not missing, f"PENDING_ELSEWHERE names functions that no longer exist, remove them: {missing}"
    done = sorted(f"{k} ({lengths[k]})" for k in PENDING_ELSEWHERE if lengths[k] <= MAX_LINES)
    assert not done, f"PENDING_ELSEWHERE names functions now within {MAX_LINES} lines, remove them: {done}"


def test_lengths_count_def_to_last_line_for_every_kind_of_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    source = (
        f"@decorator\ndef sixty():\n    '''doc'''\n{body}\n\n"  # def + doc + 58 lines = 60 (decorator not counted)
        f"class C:\n    async def method(self):\n        pass\n\n\n        return 1\n\n"  # blank lines count: 5
        "def outer():\n    def inner():\n        return 2\n    return inner\n"
    )
    assert function_lengths(source, "m.py") == {"m.py:sixty": 60, "m.py:method": 5, "m.py:outer": 4,
                                                "m.py:inner": 2}
