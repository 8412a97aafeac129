"""The file catalog: SQLite (WAL) with a schema version and forward migrations.

`files` holds every file the indexer has looked at: path (raw bytes as the key, so non-UTF-8 names
survive, plus a display string), size, mtime, content hash, width, height, status (`ok` = has a
vector, `error` = could not be indexed), and the error reason. An `ok` file whose refresh failed keeps
its vector and gets a reason too (shown by `picscope status`). `skips` (schema 2) holds everything the
last scan of each root saw and did not index, with the reason: files that are not images, FIFOs and
devices, dangling symlinks, symlink loops, paths over the OS limit, folders that could not be listed,
RAW files beside a JPEG. `problems()` is the one list of problems that the index summary and
`picscope status` both print.

A catalog on a read-only folder or mount is opened read-only (`mode=ro`, no WAL switch; `immutable=1`
when the WAL side files are missing and cannot be created): reading works, writing raises
`LibraryReadOnlyError`. SQLite's "disk full" becomes `DiskFullError`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from picscope.diskspace import DiskFullError, free_bytes
from picscope.errors import LibraryError, LibraryReadOnlyError
from picscope.store.sqlite import chunks, marks, too_new, user_version
from picscope.store.sqlite import run_script as _run_script

SCHEMA_VERSION = 3
RETRY_MTIME = -1  # recorded for files to retry on the next run, whatever their stat says
_RESET_META = ("dim", "encoder_name", "vector_format")  # what a rebuild forgets (the new encoder sets them again)


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


def _v2(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS skips (
            raw BLOB PRIMARY KEY,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL,
            seen_at REAL NOT NULL
        )
        """,
    )


def _v3_perceptual_hashes(db: sqlite3.Connection) -> None:
    """Near-duplicates: a 64-bit dHash and the mean colour per content hash (byte-identical copies share them)."""
    db.execute("CREATE TABLE IF NOT EXISTS perceptual_hashes (hash TEXT PRIMARY KEY, dhash INTEGER NOT NULL, "
               "colour INTEGER NOT NULL)")


# MIGRATIONS[i] brings a database from version i to i + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3_perceptual_hashes]
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


class Known(NamedTuple):
    """What the catalog recorded for a path (`Catalog.stat_index`): enough to skip an unchanged file."""

    id: int
    size: int
    mtime_ns: int
    status: str
    error: str | None


@dataclass(frozen=True)
class Problem:
    """One entry of the problem list: a file that is not indexed (`error`), indexed but whose refresh
    failed (`stale`: the previous version is kept), or seen by the scan and skipped (`skipped`)."""

    path: str
    status: str
    reason: str
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def display_path(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _range(root_raw: bytes) -> tuple[bytes, bytes]:
    prefix = root_raw.rstrip(b"/") + b"/"
    return prefix, prefix[:-1] + b"0"  # '/' + 1 == '0': every path starting with prefix sorts below this


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL (or an I/O error that is really ENOSPC)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def connect_readonly(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    """A read-only connection to a catalog (or any WAL database), also on a read-only folder or mount."""
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
    side = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    if not all(p.exists() for p in side) and not os.access(Path(path).parent, os.W_OK):
        # WAL readers need the -shm file; on a read-only folder it cannot be created. Nothing can write to
        # this database while the folder is read-only, so reading it as immutable is exact.
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False, isolation_level=None)


class Catalog:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        try:
            if readonly:
                self.db = self._connect_readonly()
            else:
                self.db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise self.disk_full_error() from exc
            raise LibraryError(f"cannot open catalog {self.path}: {exc}") from exc

    @classmethod
    def open_readonly(cls, path: Path) -> Catalog:
        """A read-only catalog (the server's view; also on a read-only mount): writing raises."""
        return cls(path, readonly=True)

    def _connect_readonly(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise LibraryError(f"no catalog at {self.path}")
        return connect_readonly(self.path)

    def disk_full_error(self) -> DiskFullError:
        return DiskFullError(
            f"disk full: the catalog {self.path} cannot grow ({free_bytes(self.path.parent) / 1e6:.1f} MB free "
            f"at {self.path.parent}); free some space and run the command again (nothing was lost)"
        )

    def _refuse_write(self) -> None:
        if self.readonly:
            raise LibraryReadOnlyError(f"the catalog {self.path} is open read-only; it cannot be changed")

    # -- schema ------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        with self._lock:
            return user_version(self.db)

    def _migrate(self) -> None:
        version = user_version(self.db)
        self._has_skips = version >= 2
        if version > SCHEMA_VERSION:
            raise too_new("library catalog", self.path, version, SCHEMA_VERSION)
        if self.readonly:
            return  # read an older schema as it is (no skips table before version 2)
        while version < SCHEMA_VERSION:
            with self.transaction():
                MIGRATIONS[version](self.db)
                version += 1
                self.db.execute(f"PRAGMA user_version={version}")
        self._has_skips = True

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._refuse_write()
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
                else:
                    self.db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if is_disk_full(exc):
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise self.disk_full_error() from exc
                raise

    # -- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._refuse_write()
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
        out: dict[int, FileRecord] = {}
        for chunk in chunks([int(i) for i in ids]):
            for rec in self._records(f"SELECT {_COLS} FROM files WHERE id IN ({marks(len(chunk))})", chunk):
                out[rec.id] = rec
        return out

    def by_raw(self, raw: bytes) -> FileRecord | None:
        recs = self._records(f"SELECT {_COLS} FROM files WHERE raw=?", (raw,))
        return recs[0] if recs else None

    def under(self, root_raw: bytes) -> list[FileRecord]:
        """All records whose path is below the folder `root_raw`."""
        prefix, upper = _range(root_raw)
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

    def stat_index(self, root_raw: bytes) -> dict[bytes, Known]:
        """raw -> `Known` (id, size, mtime_ns, status, error) for files under `root_raw` (one query)."""
        prefix, upper = _range(root_raw)
        with self._lock:
            rows = self.db.execute(
                "SELECT raw, id, size, mtime_ns, status, error FROM files WHERE raw >= ? AND raw < ?",
                (prefix, upper),
            ).fetchall()
        return {r[0]: Known(*r[1:]) for r in rows}

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

    def keep_previous(self, db: sqlite3.Connection, file_id: int, reason: str) -> None:
        """Inside a transaction: an indexed file could not be refreshed; it keeps its vector, gets the reason, and
        is retried on the next run."""
        db.execute("UPDATE files SET error=?, mtime_ns=? WHERE id=?",
                   (f"kept previous version: {reason}", RETRY_MTIME, int(file_id)))

    def delete_files(self, db: sqlite3.Connection, ids: Iterable[int]) -> None:
        """Inside a transaction: forget these files."""
        for chunk in chunks([int(i) for i in ids]):
            db.execute(f"DELETE FROM files WHERE id IN ({marks(len(chunk))})", chunk)

    def mark_missing(self, ids: Iterable[int]) -> None:
        """Files whose vector is missing from the store (a crash): errors, re-indexed on the next run."""
        with self.transaction() as db:
            for chunk in chunks([int(i) for i in ids]):
                db.execute(
                    f"UPDATE files SET mtime_ns=?, status='error', error='vector missing; re-index' "
                    f"WHERE id IN ({marks(len(chunk))})",
                    [RETRY_MTIME, *chunk],
                )

    def reset(self, encoder_spec: str) -> None:
        """Forget every file and the vectors' dimension, name and format; the library now uses `encoder_spec`
        (a rebuild). Roots, skips and perceptual hashes stay."""
        with self.transaction() as db:
            db.execute("DELETE FROM files")
            db.execute(f"DELETE FROM meta WHERE key IN ({marks(len(_RESET_META))})", _RESET_META)
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('encoder', ?)", (encoder_spec,))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall()
            stale = self.db.execute("SELECT COUNT(*) FROM files WHERE status='ok' AND error IS NOT NULL").fetchone()[0]
            skipped = self.db.execute("SELECT COUNT(*) FROM skips").fetchone()[0] if self._has_skips else 0
        out = {"ok": 0, "error": 0}
        out.update({s: int(n) for s, n in rows})
        out["stale"] = int(stale)
        out["skipped"] = int(skipped)
        return out

    # -- skips and problems --------------------------------------------------------------------
    def skip_index(self, root_raw: bytes) -> dict[bytes, tuple[int, int, str]]:
        """raw -> (size, mtime_ns, reason) of the skipped paths under `root_raw`."""
        if not self._has_skips:
            return {}
        prefix, upper = _range(root_raw)
        with self._lock:
            rows = self.db.execute(
                "SELECT raw, size, mtime_ns, reason FROM skips WHERE raw >= ? AND raw < ?", (prefix, upper)
            ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def replace_skips(
        self, db: sqlite3.Connection, root_raw: bytes, skips: dict[bytes, tuple[int, int, str]],
        keep_under: Sequence[bytes] = (),
    ) -> None:
        """Inside a transaction: the skips under `root_raw` become exactly `skips` (raw -> size, mtime, reason),
        except that old entries under a folder in `keep_under` (one that could not be listed) stay."""
        prefix, upper = _range(root_raw)
        old = {
            r[0]: (r[1], r[2], r[3])
            for r in db.execute(
                "SELECT raw, size, mtime_ns, reason FROM skips WHERE (raw >= ? AND raw < ?) OR raw = ?",
                (prefix, upper, root_raw),
            )
        }
        keep = [k.rstrip(b"/") + b"/" for k in keep_under]
        stale = [raw for raw in old if raw not in skips and not any(raw.startswith(k) for k in keep)]
        for chunk in chunks(stale):
            db.execute(f"DELETE FROM skips WHERE raw IN ({marks(len(chunk))})", chunk)
        now = time.time()
        db.executemany(  # only what is new or changed: a re-run over unchanged files writes nothing
            "INSERT OR REPLACE INTO skips(raw, path, size, mtime_ns, reason, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (raw, display_path(raw), size, mtime, reason, now)
                for raw, (size, mtime, reason) in skips.items()
                if old.get(raw) != (size, mtime, reason)
            ],
        )

    def problems(self, root_raw: bytes | None = None) -> list[Problem]:
        """Every current problem (under `root_raw`, or in the whole library), sorted by path."""
        where = ""
        args: tuple[bytes, ...] = ()
        if root_raw is not None:
            where, args = " AND raw >= ? AND raw < ?", _range(root_raw)
        with self._lock:
            rows = self.db.execute(
                f"SELECT id, path, status, error FROM files WHERE error IS NOT NULL{where}", args
            ).fetchall()
            skips = (
                self.db.execute(f"SELECT path, reason FROM skips WHERE 1{where}", args).fetchall()
                if self._has_skips
                else []
            )
            if root_raw is not None and self._has_skips:  # the root itself (e.g. it could not be listed)
                skips += self.db.execute("SELECT path, reason FROM skips WHERE raw = ?", (root_raw,)).fetchall()
        out = [Problem(p, "stale" if s == "ok" else "error", e, int(i)) for i, p, s, e in rows]
        out += [Problem(p, "skipped", r) for p, r in skips]
        return sorted(out, key=lambda p: (p.path, p.status))

    def record_root(self, raw: bytes) -> None:
        self._refuse_write()
        with self._lock:
            self.db.execute(
                "INSERT INTO roots(raw, path, last_scan) VALUES (?, ?, ?) "
                "ON CONFLICT(raw) DO UPDATE SET last_scan=excluded.last_scan",
                (raw, display_path(raw), time.time()),
            )

    def roots(self) -> list[tuple[str, float | None]]:
        with self._lock:
            return [(r[0], r[1]) for r in self.db.execute("SELECT path, last_scan FROM roots ORDER BY path")]

    def root_raws(self) -> list[bytes]:
        """The indexed folders as raw paths (bytes: non-UTF-8 names survive)."""
        with self._lock:
            return [bytes(r[0]) for r in self.db.execute("SELECT raw FROM roots")]

    # -- perceptual hashes (near-duplicates; picscope.dedupe) ----------------------------------------
    def put_phash(self, db: sqlite3.Connection, content_hash: str, dhash: int, colour: int) -> None:
        """Store dHash and mean colour of a content hash inside an open transaction (dHash kept as signed 64-bit)."""
        signed = dhash - (1 << 64) if dhash >= (1 << 63) else dhash
        db.execute("INSERT OR REPLACE INTO perceptual_hashes(hash, dhash, colour) VALUES (?, ?, ?)",
                   (content_hash, signed, colour))

    def put_phashes_if_free(self, computed: dict[str, tuple[int, int]]) -> None:
        """Store perceptual hashes computed by a reader, unless a writer holds the catalog (computed again next
        time) or it is read-only."""
        if self.readonly or not computed:
            return
        with contextlib.suppress(sqlite3.OperationalError), self.transaction() as db:
            for h, (d, c) in computed.items():
                self.put_phash(db, h, d, c)

    def phashes(self, content_hashes: Iterable[str]) -> dict[str, tuple[int, int]]:
        """content hash -> (unsigned 64-bit dHash, mean colour 0xRRGGBB), for the hashes that have them."""
        keys = list(dict.fromkeys(content_hashes))
        out: dict[str, tuple[int, int]] = {}
        with self._lock:
            for chunk in chunks(keys):
                try:
                    rows = self.db.execute(
                        f"SELECT hash, dhash, colour FROM perceptual_hashes WHERE hash IN ({marks(len(chunk))})",
                        chunk,
                    ).fetchall()
                except sqlite3.OperationalError:  # an older catalog opened read-only: no such table (yet)
                    return {}
                out.update({h: (d & ((1 << 64) - 1), c) for h, d, c in rows})
        return out

    def close(self) -> None:
        with self._lock:
            self.db.close()
