"""What the SQLite owners (`Catalog`, `SessionStore`, `CaptionStore`) share: chunked `IN (...)` lists and
schema versions in `PRAGMA user_version` with forward migrations.

Only the store modules run SQL; `tests/test_ownership.py` checks that no other module calls `execute(`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from picscope.errors import SchemaTooNewError

T = TypeVar("T")
MAX_PARAMS = 900  # SQLite allows 999 bound parameters per statement in older builds; stay below with room


def chunks(items: Sequence[T], size: int = MAX_PARAMS) -> Iterator[list[T]]:
    """`items` in lists of at most `size`, for statements with one `?` per item."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def marks(n: int) -> str:
    """`?,?,…` with `n` placeholders."""
    return ",".join("?" * n)


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated DDL inside the caller's transaction (executescript would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def too_new(what: str, path: Path, version: int, known: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{what} {path} has schema version {version}, but this picscope only knows up to {known}: it was "
        "written by a newer picscope. Upgrade picscope (pip install -U picscope); the file was not modified."
    )


Migration = Callable[[sqlite3.Connection], None]


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration], what: str, path: Path) -> int:
    """Bring `db` (autocommit mode) to version `len(migrations)`: `migrations[i]` goes from i to i + 1, each in
    its own `BEGIN IMMEDIATE` transaction that re-reads the version (two processes may open an old file at
    once). Returns the version found before migrating; a newer file raises `SchemaTooNewError`."""
    target = len(migrations)
    found = user_version(db)
    if found > target:
        raise too_new(what, path, found, target)
    version = found
    while version < target:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = user_version(db)  # another process may have migrated meanwhile
            if version < target:
                migrations[version](db)
                version += 1
                db.execute(f"PRAGMA user_version={version}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found
