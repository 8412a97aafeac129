"""Captions of library images for stage-1 fusion: stored per (image, vision model, style) in the library.

Captions are made by the vision backend, either ahead of time (`picscope captions build`, resumable) or lazily
for the current candidates within a per-query allowance. They live in `<library>/captions.sqlite` (WAL), so a
caption is never made twice for the same image and model. `CaptionStore` owns that file (the only module that
runs SQL on it); its schema version is kept in `PRAGMA user_version` (1: the layout below; a file written before
versions existed is version 0 with the same table and is stamped on first open).

This is the one captioning path for library images: the pipeline's caption fusion, `picscope captions build`
and the caption-based feedback strategies (`picscope.feedback.text.Captioner`) all go through `ensure`, which
decodes safely (`load_view`: pixel limit, shrunk for the vision model) and stores what it made.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from picscope.errors import PicscopeError
from picscope.imageio import load_image
from picscope.layout import LibraryLayout
from picscope.store.catalog import connect_readonly
from picscope.store.sqlite import Migration, chunks, marks, migrate, run_script, too_new, user_version

if TYPE_CHECKING:
    from picscope.library import Library

SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    id INTEGER NOT NULL, model TEXT NOT NULL, style TEXT NOT NULL, hash TEXT,
    caption TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (id, model, style)
);
"""


def _v1_unversioned_layout(db: sqlite3.Connection) -> None:
    """Version 1 is the layout every file had before versions (user_version 0): created where missing."""
    run_script(db, SCHEMA)


# MIGRATIONS[i] brings a file from version i to i + 1 (see picscope.store.sqlite.migrate).
MIGRATIONS: list[Migration] = [_v1_unversioned_layout]
SCHEMA_VERSION = len(MIGRATIONS)
VIEW_SIZE = 448  # pixels on the long side handed to vision models


def load_view(library: Library, file_id: int, size: int = VIEW_SIZE) -> Image.Image:
    """A library image, decoded safely and shrunk for a vision model."""
    rec = library.get(int(file_id))
    if rec is None or rec.status != "ok":
        raise KeyError(f"no indexed image with id {file_id}")
    img = load_image(rec.raw, max_pixels=library.config.index.max_pixels, target_size=size)
    img.thumbnail((size, size))
    return img.convert("RGB")


class CaptionStore:
    """The owner of `<library>/captions.sqlite`: one connection per thread; `readonly` reads without writing
    anything (no migration, no WAL switch), for the server."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        con = self._con()
        if readonly:
            if user_version(con) > SCHEMA_VERSION:
                raise too_new("caption store", self.path, user_version(con), SCHEMA_VERSION)
        else:
            migrate(con, MIGRATIONS, "caption store", self.path)

    @classmethod
    def for_library(cls, library: Library) -> CaptionStore:
        return cls(LibraryLayout(library.path).captions)

    @classmethod
    def open_readonly(cls, path: Path) -> CaptionStore | None:
        """The store at `path` opened read-only, or None when there is none (no caption was ever made)."""
        return cls(path, readonly=True) if Path(path).exists() else None

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            if self.readonly:
                con = connect_readonly(self.path, timeout=5)
            else:
                con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                con.execute("PRAGMA journal_mode=WAL")
            self._local.con = con
        return con

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    @property
    def schema_version(self) -> int:
        return user_version(self._con())

    def get_many(self, ids: Iterable[int], model: str, style: str) -> dict[int, str]:
        out: dict[int, str] = {}
        con = self._con()
        for chunk in chunks([int(i) for i in ids]):
            for i, c in con.execute(
                f"SELECT id, caption FROM captions WHERE model=? AND style=? AND id IN ({marks(len(chunk))})",
                (model, style, *chunk),
            ):
                out[int(i)] = str(c)
        return out

    def put(self, file_id: int, model: str, style: str, caption: str, hash_: str | None = None) -> None:
        self._con().execute("INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?, ?)",
                            (int(file_id), model, style, hash_, caption, time.time()))

    def all_for(self, ids: Iterable[int]) -> dict[int, str]:
        """Any stored caption per id (newest first), whatever model made it."""
        out: dict[int, str] = {}
        for i in ids:
            row = self._con().execute("SELECT caption FROM captions WHERE id=? ORDER BY created DESC LIMIT 1",
                                      (int(i),)).fetchone()
            if row:
                out[int(i)] = str(row[0])
        return out

    def count(self, model: str, style: str) -> int:
        row = self._con().execute("SELECT COUNT(*) FROM captions WHERE model=? AND style=?", (model, style)).fetchone()
        return int(row[0])

    def ensure(self, library: Library, vision: Any, ids: list[int], style: str, limit: int,
               progress: Callable[[int, int], None] | None = None) -> tuple[dict[int, str], int, list[str]]:
        """Stored captions for `ids`, making at most `limit` missing ones. Returns (captions, calls, errors)."""
        model = str(getattr(vision, "spec", type(vision).__name__))
        have = self.get_many(ids, model, style)
        missing = [i for i in ids if i not in have][:limit]
        errors: list[str] = []
        for n, fid in enumerate(missing, start=1):
            try:
                rec = library.get(fid)
                cap = " ".join(vision.caption(load_view(library, fid), style).split())
            except Exception as exc:  # an unreadable file or a failing backend costs one caption, not the query
                errors.append(f"caption of image {fid} failed: {type(exc).__name__}: {exc}")
                continue
            if cap:
                self.put(fid, model, style, cap, getattr(rec, "hash", None))
                have[fid] = cap
            if progress:
                progress(n, len(missing))
        return have, len(missing), errors


def stored_caption(path: Path, file_id: int) -> str | None:
    """The newest stored caption of one image, for display: None when there is none or the store cannot be read."""
    try:
        store = CaptionStore.open_readonly(path)
        if store is None:
            return None
        try:
            return store.all_for([file_id]).get(int(file_id))
        finally:
            store.close()
    except (sqlite3.Error, PicscopeError):
        return None
