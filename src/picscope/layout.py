"""`LibraryLayout`: the names of the files and folders inside a library folder, in one place.

Every module asks a layout for a library path (`LibraryLayout(folder).catalog`) instead of joining a file name
itself; the owner module of each persistent file is listed in docs/architecture.md ("Who owns which file").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CATALOG = "catalog.sqlite"
CONFIG = "config.toml"
STORE_DIR = "store"
LOCK = "write.lock"
SESSIONS = "sessions.sqlite"
CAPTIONS = "captions.sqlite"
CELLS = "cells"
THUMBS = "thumbs"
LOGS = "logs"


@dataclass(frozen=True)
class LibraryLayout:
    """Where each file of the library at `root` lives."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def catalog(self) -> Path:
        """The file catalog (`picscope.store.catalog.Catalog`)."""
        return self.root / CATALOG

    @property
    def catalog_wal(self) -> Path:
        return self.root / f"{CATALOG}-wal"

    @property
    def config(self) -> Path:
        """The typed configuration (`picscope.config.PicscopeConfig`)."""
        return self.root / CONFIG

    @property
    def store(self) -> Path:
        """The vector store's folder (`picscope.store`)."""
        return self.root / STORE_DIR

    @property
    def lock(self) -> Path:
        """The writers' lock file (`Library.write_lock`)."""
        return self.root / LOCK

    @property
    def sessions(self) -> Path:
        """Feedback sessions (`picscope.sessions.store.SessionStore`)."""
        return self.root / SESSIONS

    @property
    def captions(self) -> Path:
        """Captions of library images (`picscope.pipeline.captions.CaptionStore`)."""
        return self.root / CAPTIONS

    @property
    def cells(self) -> Path:
        """The verifier's cell features per photo (`picscope.store.cells.CellStore`)."""
        return self.root / CELLS

    @property
    def thumbs(self) -> Path:
        """The web app's thumbnail cache (`picscope.server.images`)."""
        return self.root / THUMBS

    @property
    def logs(self) -> Path:
        """What the local model engines print (`picscope.cli.engines`)."""
        return self.root / LOGS

    def is_library(self) -> bool:
        """A library exists here (its catalog does)."""
        return self.catalog.exists()
