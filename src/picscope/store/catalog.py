"""The file catalog: SQLite (WAL) with a schema version and forward migrations.

`files` holds every file the indexer has looked at: path (raw bytes as the key, so non-UTF-8 names
survive, plus a display string), size, mtime, content hash, width, height, status (`ok` = has a
vector, `error` = could not be indexed), and the error reason. An `ok` file whose refresh failed keeps
its vector and gets a reason too (shown by `picscope status`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from picscope.errors import LibraryError, SchemaTooNewError

SCHEMA_VERSION = 2


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated DDL inside the caller's transaction (executescript would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _v1(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS files (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            raw BLOB NOT NULL UNIQUE,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            hash TEXT,
            width INTEGER,
            height INTEGER,
            status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
            error TEXT,
            indexed_at REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
        CREATE INDEX IF NOT EXISTS files_path ON files(path);
        CREATE TABLE IF NOT EXISTS roots (raw BLOB PRIMARY KEY, path TEXT NOT NULL, last_scan REAL);
        """,
    )


def _v2_perceptual_hashes(db: sqlite3.Connection) -> None:
    """Near-duplicates: a 64-bit dHash and the mean colour per content hash (byte-identical copies share them)."""
    db.execute("CREATE TABLE IF NOT EXISTS perceptual_hashes (hash TEXT PRIMARY KEY, dhash INTEGER NOT NULL, "
               "colour INTEGER NOT NULL)")


# MIGRATIONS[i] brings a database from version i to i + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2_perceptual_hashes]
assert len(MIGRATIONS) == SCHEMA_VERSION


@dataclass(frozen=True)
class FileRecord:
    id: int
    raw: bytes
    path: str
    size: int
    mtime_ns: int
    hash: str | None
    width: int | None
    height: int | None
    status: str
    error: str | None
    indexed_at: float


_COLS = "id, raw, path, size, mtime_ns, hash, width, height, status, error, indexed_at"


def display_path(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


class Catalog:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise LibraryError(f"cannot open catalog {self.path}: {exc}") from exc
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    # -- schema ------------------------------------------------------------------------------
    def _version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"library catalog {self.path} has schema version {version}, but this picscope only "
                f"knows up to {SCHEMA_VERSION}: it was written by a newer picscope. Upgrade picscope "
                "(pip install -U picscope); the library was not modified."
            )
        while version < SCHEMA_VERSION:
            with self.transaction():
                MIGRATIONS[version](self.db)
                version += 1
                self.db.execute(f"PRAGMA user_version={version}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            else:
                self.db.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- files -----------------------------------------------------------------------------
    def _records(self, sql: str, args: Sequence[object] = ()) -> list[FileRecord]:
        with self._lock:
            rows = self.db.execute(sql, tuple(args)).fetchall()
        return [FileRecord(*r) for r in rows]

    def get(self, file_id: int) -> FileRecord | None:
        recs = self._records(f"SELECT {_COLS} FROM files WHERE id=?", (file_id,))
        return recs[0] if recs else None

    def get_many(self, ids: Iterable[int]) -> dict[int, FileRecord]:
        ids = [int(i) for i in ids]
        out: dict[int, FileRecord] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for rec in self._records(f"SELECT {_COLS} FROM files WHERE id IN ({marks})", chunk):
                out[rec.id] = rec
        return out

    def by_raw(self, raw: bytes) -> FileRecord | None:
        recs = self._records(f"SELECT {_COLS} FROM files WHERE raw=?", (raw,))
        return recs[0] if recs else None

    def under(self, root_raw: bytes) -> list[FileRecord]:
        """All records whose path is below the folder `root_raw`."""
        prefix = root_raw.rstrip(b"/") + b"/"
        upper = prefix[:-1] + b"0"  # '/' + 1 == '0': every path starting with prefix sorts below this
        return self._records(f"SELECT {_COLS} FROM files WHERE raw >= ? AND raw < ?", (prefix, upper))

    def all(self, status: str | None = None) -> list[FileRecord]:
        if status:
            return self._records(f"SELECT {_COLS} FROM files WHERE status=? ORDER BY id", (status,))
        return self._records(f"SELECT {_COLS} FROM files ORDER BY id")

    def ok_ids(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT id FROM files WHERE status='ok'")]

    def ids_with_prefix(self, prefix: str) -> list[int]:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            return [
                r[0]
                for r in self.db.execute("SELECT id FROM files WHERE status='ok' AND path LIKE ? ESCAPE '\\'", (like,))
            ]

    def ok_by_hash(self) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute("SELECT hash, id FROM files WHERE status='ok' AND hash IS NOT NULL").fetchall()
        return {h: i for h, i in rows}

    def stat_index(self, root_raw: bytes) -> dict[bytes, tuple[int, int, int, str, str | None]]:
        """raw -> (id, size, mtime_ns, status, error) for files under `root_raw` (one query)."""
        prefix = root_raw.rstrip(b"/") + b"/"
        upper = prefix[:-1] + b"0"
        with self._lock:
            rows = self.db.execute(
                "SELECT raw, id, size, mtime_ns, status, error FROM files WHERE raw >= ? AND raw < ?",
                (prefix, upper),
            ).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def upsert_file(
        self,
        db: sqlite3.Connection,
        *,
        raw: bytes,
        size: int,
        mtime_ns: int,
        hash: str | None,
        width: int | None,
        height: int | None,
        status: str,
        error: str | None,
    ) -> int:
        """Insert or update one file inside an open transaction; returns its id (stable across updates)."""
        row = db.execute("SELECT id FROM files WHERE raw=?", (raw,)).fetchone()
        now = time.time()
        if row:
            db.execute(
                "UPDATE files SET size=?, mtime_ns=?, hash=?, width=?, height=?, status=?, error=?, indexed_at=? "
                "WHERE id=?",
                (size, mtime_ns, hash, width, height, status, error, now, row[0]),
            )
            return int(row[0])
        cur = db.execute(
            "INSERT INTO files(raw, path, size, mtime_ns, hash, width, height, status, error, indexed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (raw, display_path(raw), size, mtime_ns, hash, width, height, status, error, now),
        )
        return int(cur.lastrowid or 0)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()
            stale = self.db.execute("SELECT COUNT(*) FROM files WHERE status='ok' AND error IS NOT NULL").fetchone()[0]
        out = {"ok": 0, "error": 0}
        out.update({s: int(n) for s, n in rows})
        out["stale"] = int(stale)
        return out

    def problems(self) -> list[FileRecord]:
        return self._records(f"SELECT {_COLS} FROM files WHERE error IS NOT NULL ORDER BY path")

    def record_root(self, raw: bytes) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO roots(raw, path, last_scan) VALUES (?, ?, ?) "
                "ON CONFLICT(raw) DO UPDATE SET last_scan=excluded.last_scan",
                (raw, display_path(raw), time.time()),
            )

    def roots(self) -> list[tuple[str, float | None]]:
        with self._lock:
            return [(r[0], r[1]) for r in self.db.execute("SELECT path, last_scan FROM roots ORDER BY path")]

    # -- perceptual hashes (near-duplicates; picscope.dedupe) ----------------------------------------
    def put_phash(self, db: sqlite3.Connection, content_hash: str, dhash: int, colour: int) -> None:
        """Store dHash and mean colour of a content hash inside an open transaction (dHash kept as signed 64-bit)."""
        signed = dhash - (1 << 64) if dhash >= (1 << 63) else dhash
        db.execute("INSERT OR REPLACE INTO perceptual_hashes(hash, dhash, colour) VALUES (?, ?, ?)",
                   (content_hash, signed, colour))

    def phashes(self, content_hashes: Iterable[str]) -> dict[str, tuple[int, int]]:
        """content hash -> (unsigned 64-bit dHash, mean colour 0xRRGGBB), for the hashes that have them."""
        keys = list(dict.fromkeys(content_hashes))
        out: dict[str, tuple[int, int]] = {}
        with self._lock:
            for start in range(0, len(keys), 900):
                chunk = keys[start : start + 900]
                rows = self.db.execute(
                    f"SELECT hash, dhash, colour FROM perceptual_hashes WHERE hash IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                out.update({h: (d & ((1 << 64) - 1), c) for h, d, c in rows})
        return out

    def close(self) -> None:
        with self._lock:
            self.db.close()
