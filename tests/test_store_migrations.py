"""Schema versions of sessions.sqlite and captions.sqlite: files written before versions existed (user_version 0)
open with the new code, keep their data and get their version; a file from a newer picscope is refused as it is.

The CREATE statements below are copied from `sessions/store.py` and `pipeline/captions.py` as they were before
the versions (main, issue 19): they are the layout of every file users have today.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from picscope.errors import SchemaTooNewError
from picscope.feedback.base import FeedbackState
from picscope.pipeline.captions import SCHEMA_VERSION as CAPTIONS_VERSION
from picscope.pipeline.captions import CaptionStore, stored_caption
from picscope.sessions.store import SCHEMA_VERSION as SESSIONS_VERSION
from picscope.sessions.store import RoundRecord, SessionStore, state_to_json

UNVERSIONED_SESSIONS = """
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

UNVERSIONED_CAPTIONS = """
CREATE TABLE IF NOT EXISTS captions (
    id INTEGER NOT NULL, model TEXT NOT NULL, style TEXT NOT NULL, hash TEXT,
    caption TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (id, model, style)
);
"""


def _version(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def _state() -> FeedbackState:
    vec = np.array([0.6, 0.8, 0.0], np.float32)
    return FeedbackState("a red car", "a red car", vec, anchor_vector=vec, notes=["the user's query"])


@pytest.fixture()
def old_sessions(tmp_path: Path) -> Path:
    """A sessions.sqlite as picscope wrote it before versions: one session, two rounds, marks (one undone)."""
    path = tmp_path / "sessions.sqlite"
    con = sqlite3.connect(path)
    con.executescript(UNVERSIONED_SESSIONS)
    con.execute("INSERT INTO sessions VALUES ('s1', 'a red car', 'rocchio', 3, 1.0, 2.0, 4, '{\"k\": 1}')")
    for n, shown in ((0, [11, 12, 13]), (1, [14, 15, 16])):
        con.execute("INSERT INTO rounds VALUES ('s1', ?, ?, ?, ?, 0.5, 1.0)",
                    (n, state_to_json(_state()), str(shown), "[0.9, 0.8, 0.7]"))
    con.executemany("INSERT INTO marks(session_id, n, file_id, relevant, action, undone, created) "
                    "VALUES ('s1', ?, ?, ?, ?, ?, 1.0)",
                    [(0, 11, 1, 1, 0), (0, 12, 0, 1, 0), (1, 14, 1, 2, 1), (1, 15, 1, 3, 0)])
    con.commit()
    con.close()
    assert _version(path) == 0
    return path


def test_an_unversioned_session_store_is_migrated_and_keeps_its_sessions(old_sessions: Path) -> None:
    store = SessionStore(old_sessions)
    assert _version(old_sessions) == SESSIONS_VERSION == store.schema_version >= 1
    rec = store.load("s1")
    assert (rec.query, rec.strategy, rec.page_size, rec.version, rec.options) == ("a red car", "rocchio", 3, 4,
                                                                                  {"k": 1})
    assert [(r.n, r.shown, r.scores) for r in rec.rounds] == [(0, [11, 12, 13], [0.9, 0.8, 0.7]),
                                                               (1, [14, 15, 16], [0.9, 0.8, 0.7])]
    np.testing.assert_allclose(rec.rounds[1].state.query_vector, [0.6, 0.8, 0.0])
    assert [(m["round"], m["id"], m["relevant"], m["action"]) for m in rec.marks] == [
        (0, 11, True, 1), (0, 12, False, 1), (1, 15, True, 3)]  # the undone mark stays undone
    assert store.list() == [{"id": "s1", "query": "a red car", "strategy": "rocchio", "updated": 2.0, "round": 1}]


def test_a_migrated_session_store_takes_new_changes(old_sessions: Path) -> None:
    store = SessionStore(old_sessions)
    with store.transaction() as tx:
        assert tx.add_marks("s1", 1, [16], False) == 4  # numbering continues after the old actions
    with store.transaction() as tx:
        assert [m["id"] for m in tx.undo_last("s1", 1)] == [16]
        assert tx.undo_last("s1", 0) == [{"seq": 1, "round": 0, "id": 11, "relevant": True, "action": 1},
                                          {"seq": 2, "round": 0, "id": 12, "relevant": False, "action": 1}]
        assert tx.undo_last("s1", 0) == []
    with store.transaction() as tx:
        tx.drop_round("s1", 1)
    with store.transaction() as tx:
        tx.append_round("s1", RoundRecord(1, _state(), [20, 21], [0.5, 0.4]), version=4 + 4)
    rec = SessionStore(old_sessions).load("s1")  # a second open: already at the current version
    assert rec.version == 9 and [r.shown for r in rec.rounds] == [[11, 12, 13], [20, 21]] and rec.marks == []


def test_opening_an_old_store_from_several_threads_migrates_it_once(old_sessions: Path) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            SessionStore(old_sessions).load("s1")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _version(old_sessions) == SESSIONS_VERSION


def test_a_new_session_store_is_created_at_the_current_version(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite")
    assert store.schema_version == SESSIONS_VERSION and store.list() == []


def test_a_session_store_from_a_newer_picscope_is_refused_untouched(old_sessions: Path) -> None:
    con = sqlite3.connect(old_sessions)
    con.execute(f"PRAGMA user_version={SESSIONS_VERSION + 1}")
    con.close()
    with pytest.raises(SchemaTooNewError, match="newer picscope"):
        SessionStore(old_sessions)
    con = sqlite3.connect(old_sessions)
    assert con.execute("SELECT COUNT(*) FROM marks").fetchone()[0] == 4
    con.close()
    assert _version(old_sessions) == SESSIONS_VERSION + 1


@pytest.fixture()
def old_captions(tmp_path: Path) -> Path:
    path = tmp_path / "captions.sqlite"
    con = sqlite3.connect(path)
    con.executescript(UNVERSIONED_CAPTIONS)
    con.executemany("INSERT INTO captions VALUES (?, ?, ?, ?, ?, ?)", [
        (1, "socratic", "short", "h1", "a red car", 1.0),
        (1, "socratic", "dense", "h1", "a red car parked on a street at night", 2.0),
        (2, "socratic", "short", "h2", "a dog on a beach", 1.0),
    ])
    con.commit()
    con.close()
    return path


def test_an_unversioned_caption_store_is_migrated_and_keeps_its_captions(old_captions: Path) -> None:
    store = CaptionStore(old_captions)
    assert _version(old_captions) == CAPTIONS_VERSION == store.schema_version >= 1
    assert store.get_many([1, 2, 3], "socratic", "short") == {1: "a red car", 2: "a dog on a beach"}
    assert store.all_for([1, 2]) == {1: "a red car parked on a street at night", 2: "a dog on a beach"}
    assert store.count("socratic", "short") == 2
    store.put(3, "socratic", "short", "a cat", "h3")
    assert CaptionStore(old_captions).get_many([3], "socratic", "short") == {3: "a cat"}


def test_the_server_reads_captions_without_writing(old_captions: Path, tmp_path: Path) -> None:
    before = old_captions.read_bytes()
    assert stored_caption(old_captions, 1) == "a red car parked on a street at night"  # the newest
    assert stored_caption(old_captions, 9) is None
    assert stored_caption(tmp_path / "none.sqlite", 1) is None and not (tmp_path / "none.sqlite").exists()
    assert old_captions.read_bytes() == before and _version(old_captions) == 0  # read as it is, not migrated
    ro = CaptionStore.open_readonly(old_captions)
    assert ro is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.put(5, "m", "short", "x")
    ro.close()


def test_a_caption_store_from_a_newer_picscope_is_refused(old_captions: Path) -> None:
    con = sqlite3.connect(old_captions)
    con.execute(f"PRAGMA user_version={CAPTIONS_VERSION + 1}")
    con.close()
    with pytest.raises(SchemaTooNewError, match="newer picscope"):
        CaptionStore(old_captions)
    assert stored_caption(old_captions, 1) is None  # the server shows no caption rather than failing
    assert _version(old_captions) == CAPTIONS_VERSION + 1
