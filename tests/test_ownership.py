"""Each persistent file has one owner: SQL runs only in the store modules, file names live only in the layout."""

from __future__ import annotations

import re
from pathlib import Path

import picscope

SRC = Path(picscope.__file__).resolve().parent
# The modules that own a SQLite file (and the helpers they share); nothing else may run SQL.
SQL_OWNERS = {
    "store/catalog.py",  # catalog.sqlite
    "store/sqlite.py",  # chunked IN lists, schema versions and migrations
    "sessions/store.py",  # sessions.sqlite
    "pipeline/captions.py",  # captions.sqlite
}
LIBRARY_FILES = ("catalog.sqlite", "sessions.sqlite", "captions.sqlite", "config.toml", "write.lock")


def _sources() -> dict[str, str]:
    return {p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8") for p in sorted(SRC.rglob("*.py"))}


def _code_lines(text: str) -> list[tuple[int, str]]:
    """Lines without comments (docstrings still count: a name in prose is fine, `execute(` there is not)."""
    return [(n, line.split("#", 1)[0]) for n, line in enumerate(text.splitlines(), start=1)]


def test_sql_runs_only_in_the_store_modules() -> None:
    sources = _sources()
    assert set(sources) >= SQL_OWNERS, "an owner module moved: update SQL_OWNERS"
    found = [
        f"{name}:{n}: {line.strip()}"
        for name, text in sources.items()
        if name not in SQL_OWNERS
        for n, line in _code_lines(text)
        if re.search(r"\bexecute(many|script)?\(", line)
    ]
    assert not found, "SQL outside its owner module:\n" + "\n".join(found)
    for owner in SQL_OWNERS - {"store/sqlite.py"}:
        assert "execute(" in sources[owner], f"{owner} runs no SQL any more: drop it from SQL_OWNERS"


def test_no_module_but_the_owners_opens_a_database() -> None:
    found = [
        f"{name}:{n}"
        for name, text in _sources().items()
        if name not in SQL_OWNERS
        for n, line in _code_lines(text)
        if "sqlite3.connect(" in line or "connect_readonly(" in line
    ]
    assert not found, found


def test_library_file_names_are_spelt_only_in_the_layout() -> None:
    found = [
        f"{name}:{n}: {line.strip()}"
        for name, text in _sources().items()
        if name != "layout.py"
        for n, line in _code_lines(text)
        for file in LIBRARY_FILES
        if f'"{file}' in line or f"'{file}" in line
    ]
    assert not found, "a library file name outside picscope/layout.py:\n" + "\n".join(found)
