"""SQLite persistence of interactive sessions: `<library>/sessions.sqlite`, owned by `SessionStore` (the only
module that runs SQL on it; `Session` works through `SessionWriter`, never a connection).

Tables: `sessions` (one row per session: query, strategy, page size, version), `rounds` (one row per round: the
feedback state the round searched with, as JSON, and the ids it showed, in order) and `marks` (an append-only log of
mark actions; `undone` flags the ones taken back). Every change runs in one `BEGIN IMMEDIATE` transaction that
checks the session's `version`, so concurrent requests (threads or processes) cannot interleave: the loser gets a
`StaleRoundError` and nothing is lost. The schema version is kept in `PRAGMA user_version` (1: the layout
below; a file written before versions existed is version 0 with the same tables and is stamped on first open).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.errors import PicscopeError
from picscope.feedback.base import FeedbackState
from picscope.layout import LibraryLayout
from picscope.store.sqlite import Migration, migrate, run_script, user_version

if TYPE_CHECKING:
    from picscope.library import Library

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    query TEXT NOT NULL,
    strategy TEXT NOT NULL,
    page_size INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS rounds (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    state TEXT NOT NULL,
    shown TEXT NOT NULL,
    scores TEXT NOT NULL DEFAULT '[]',
    seconds REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    PRIMARY KEY (session_id, n)
);
CREATE TABLE IF NOT EXISTS marks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    file_id INTEGER NOT NULL,
    relevant INTEGER NOT NULL,
    action INTEGER NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS marks_by_round ON marks(session_id, n);
"""


class SessionError(PicscopeError):
    """A session operation cannot be done as asked."""


class SessionNotFoundError(SessionError):
    pass


class StaleRoundError(SessionError):
    """The request refers to a round that is no longer the current one (or another request changed it first)."""


class NotShownError(SessionError):
    """An image was marked that this session never showed."""


@dataclass
class RoundRecord:
    n: int
    state: FeedbackState
    shown: list[int]
    scores: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SessionRecord:
    id: str
    query: str
    strategy: str
    page_size: int
    created: float
    updated: float
    version: int
    options: dict[str, Any]
    rounds: list[RoundRecord]
    marks: list[dict[str, Any]]  # live (not undone) mark rows, oldest first


def _vec(v: np.ndarray | None) -> str | None:
    if v is None:
        return None
    return base64.b64encode(np.asarray(v, np.float32).tobytes()).decode("ascii")


def _unvec(s: str | None) -> np.ndarray | None:
    if s is None:
        return None
    return np.frombuffer(base64.b64decode(s), np.float32).copy()


def state_to_json(state: FeedbackState) -> str:
    d = asdict(state)
    d["query_vector"] = _vec(state.query_vector)
    d["anchor_vector"] = _vec(state.anchor_vector)
    d["captions"] = {str(k): v for k, v in state.captions.items()}
    return json.dumps(d)


def state_from_json(text: str) -> FeedbackState:
    d = json.loads(text)
    d["query_vector"] = _unvec(d["query_vector"])
    d["anchor_vector"] = _unvec(d.get("anchor_vector"))
    d["captions"] = {int(k): v for k, v in d.get("captions", {}).items()}
    known = set(FeedbackState.__dataclass_fields__)
    return FeedbackState(**{k: v for k, v in d.items() if k in known})


def _v1_unversioned_layout(db: sqlite3.Connection) -> None:
    """Version 1 is the layout every file had before versions (user_version 0): created where missing."""
    run_script(db, SCHEMA)


# MIGRATIONS[i] brings a file from version i to i + 1 (see picscope.store.sqlite.migrate).
MIGRATIONS: list[Migration] = [_v1_unversioned_layout]
SCHEMA_VERSION = len(MIGRATIONS)

_SESSION_COLS = "id, query, strategy, page_size, created, updated, version, options"


def _load(con: sqlite3.Connection, session_id: str) -> SessionRecord:
    row = con.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id=?", (session_id,)).fetchone()
    if row is None:
        raise SessionNotFoundError(f"unknown session id {session_id!r} (see `picscope session --list`)")
    rounds = [
        RoundRecord(n, state_from_json(st), json.loads(sh), json.loads(sc), secs)
        for n, st, sh, sc, secs in con.execute(
            "SELECT n, state, shown, scores, seconds FROM rounds WHERE session_id=? ORDER BY n", (session_id,)
        )
    ]
    return SessionRecord(
        row[0], row[1], row[2], int(row[3]), row[4], row[5], int(row[6]), json.loads(row[7]), rounds,
        _live_marks(con, session_id),
    )


def _live_marks(con: sqlite3.Connection, session_id: str) -> list[dict[str, Any]]:
    return [
        {"seq": s, "round": n, "id": f, "relevant": bool(r), "action": a}
        for s, n, f, r, a in con.execute(
            "SELECT seq, n, file_id, relevant, action FROM marks WHERE session_id=? AND undone=0 ORDER BY seq",
            (session_id,),
        )
    ]


class SessionWriter:
    """The changes a session can make, inside one open transaction (`SessionStore.transaction()`). Every change
    of an existing session raises its version, so a request computed from an older version is refused."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con

    def load(self, session_id: str) -> SessionRecord:
        return _load(self._con, session_id)

    def check_version(self, session_id: str, version: int) -> None:
        row = self._con.execute("SELECT version FROM sessions WHERE id=?", (session_id,)).fetchone()
        if row is None:
            raise SessionNotFoundError(f"unknown session id {session_id!r}")
        if int(row[0]) != version:
            raise StaleRoundError(
                f"session {session_id} was changed by another request (version {row[0]}, expected {version}); "
                "reload it and try again"
            )

    def _bump(self, session_id: str) -> None:
        self._con.execute("UPDATE sessions SET version=version+1, updated=? WHERE id=?", (time.time(), session_id))

    def create(
        self, session_id: str, query: str, strategy: str, page_size: int, options: dict[str, Any], first: RoundRecord
    ) -> None:
        """A new session (version 0) with its first round."""
        now = time.time()
        self._con.execute(
            "INSERT INTO sessions(id, query, strategy, page_size, created, updated, version, options) "
            "VALUES (?,?,?,?,?,?,0,?)",
            (session_id, query, strategy, page_size, now, now, json.dumps(options)),
        )
        self._insert_round(session_id, first)

    def _insert_round(self, session_id: str, rec: RoundRecord) -> None:
        self._con.execute(
            "INSERT INTO rounds(session_id, n, state, shown, scores, seconds, created) VALUES (?,?,?,?,?,?,?)",
            (session_id, rec.n, state_to_json(rec.state), json.dumps(rec.shown), json.dumps(rec.scores),
             rec.seconds, time.time()),
        )

    def append_round(self, session_id: str, rec: RoundRecord, version: int) -> None:
        """Add the next round, computed from the session at `version` (StaleRoundError when it changed since)."""
        self.check_version(session_id, version)
        self._insert_round(session_id, rec)
        self._bump(session_id)

    def add_marks(self, session_id: str, n: int, ids: Sequence[int], relevant: bool) -> int:
        """One mark action: `ids` marked (not) relevant in round `n`. Returns the action's number."""
        row = self._con.execute(
            "SELECT COALESCE(MAX(action), 0) FROM marks WHERE session_id=?", (session_id,)
        ).fetchone()
        action = int(row[0]) + 1
        now = time.time()
        self._con.executemany(
            "INSERT INTO marks(session_id, n, file_id, relevant, action, created) VALUES (?,?,?,?,?,?)",
            [(session_id, n, int(i), int(bool(relevant)), action, now) for i in ids],
        )
        self._bump(session_id)
        return action

    def undo_last(self, session_id: str, n: int) -> list[dict[str, Any]]:
        """Take back the last live mark action of round `n`; returns its marks ([] when there is none)."""
        mine = [m for m in _live_marks(self._con, session_id) if m["round"] == n]
        if not mine:
            return []
        action = mine[-1]["action"]
        self._con.execute("UPDATE marks SET undone=1 WHERE session_id=? AND action=?", (session_id, action))
        self._bump(session_id)
        return [m for m in mine if m["action"] == action]

    def drop_round(self, session_id: str, n: int) -> None:
        """Forget round `n` and its marks (its images become unseen again)."""
        self._con.execute("DELETE FROM rounds WHERE session_id=? AND n=?", (session_id, n))
        self._con.execute("DELETE FROM marks WHERE session_id=? AND n=?", (session_id, n))
        self._bump(session_id)


class SessionStore:
    """The owner of `<library>/sessions.sqlite` (schema version in `PRAGMA user_version`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            con = self._connect()
            try:
                migrate(con, MIGRATIONS, "session store", self.path)
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise SessionError(
                f"cannot open the session store {self.path}: {exc}. Move the file away to start afresh "
                "(the library itself is not affected)"
            ) from exc

    @classmethod
    def for_library(cls, library: Library) -> SessionStore:
        return cls(LibraryLayout(library.path).sessions)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @property
    def schema_version(self) -> int:
        con = self._connect()
        try:
            return user_version(con)
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[SessionWriter]:
        """One `BEGIN IMMEDIATE` transaction: committed when the block ends, rolled back when it raises."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield SessionWriter(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # -- reading ----------------------------------------------------------------------------------
    def load(self, session_id: str) -> SessionRecord:
        con = self._connect()
        try:
            return _load(con, session_id)
        finally:
            con.close()

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT s.id, s.query, s.strategy, s.updated, (SELECT MAX(n) FROM rounds r WHERE r.session_id=s.id) "
                "FROM sessions s ORDER BY s.updated DESC LIMIT ?",
                (limit,),
            ).fetchall()
        finally:
            con.close()
        return [{"id": i, "query": q, "strategy": st, "updated": u, "round": n} for i, q, st, u, n in rows]
