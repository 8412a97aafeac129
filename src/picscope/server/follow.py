"""The server follows its library: another process may re-index it while `picscope serve` runs.

Every request first compares a cheap signature of the library's files (inode, size and mtime of the catalog, its
WAL, and each file of the vector store: a handful of `stat` calls, a few microseconds) with the last one seen.
When it changed, the vector store is brought up to date before the request runs: the `exact` store maps the
rows appended since and forgets its id → row table (`ExactStore.refresh`); a store whose files were replaced
(`--rebuild`) or any other store kind is reopened. The catalog is SQLite and always reads the latest commit.
So photos added by `picscope index` are searchable and usable as references at once, removed ones disappear,
and `/api/status` counts agree with the catalog, with no restart. (The store's own `get` also refreshes once on
a miss, which covers an index committing between this check and the request's read.)
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from picscope.library import Library

Signature = tuple[tuple[str, int, int, int], ...]


class LibraryFollower:
    def __init__(self, library: Library, on_change: Any = None) -> None:
        self.library = library
        self.on_change = on_change  # called after the store was refreshed (e.g. to reload indexed folders)
        self._lock = threading.Lock()
        self.changes = 0
        self._sig = self.signature()
        self._format = library.vector_format if library.dim is not None else None

    def _files(self) -> list[str]:
        layout = self.library.layout
        names = [os.fspath(layout.catalog), os.fspath(layout.catalog_wal)]
        store = os.fspath(layout.store)
        with contextlib.suppress(OSError):  # compact formats keep their files in subfolders (picscope.store.compact)
            names += sorted(os.path.join(root, n) for root, _, files in os.walk(store) for n in files)
        return names

    def signature(self) -> Signature:
        out = []
        for name in self._files():
            try:
                st = os.stat(name)
            except OSError:
                continue
            out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def check(self) -> bool:
        """Bring the open library up to date if its files changed; True when they had."""
        sig = self.signature()
        if sig == self._sig:
            return False
        with self._lock:
            if sig == self._sig:
                return False
            old, self._sig = self._sig, sig
            self._apply(old, sig)
            self.changes += 1
        if self.on_change is not None:
            self.on_change()
        return True

    def _apply(self, old: Signature, new: Signature) -> None:
        lib = self.library
        if lib.dim is None:
            lib.reopen_store()  # nothing indexed (yet, or a rebuild started): opened afresh on first use
            return
        store_dir = os.path.join(os.fspath(lib.path), "store") + os.sep
        inodes_old = {n: ino for n, ino, _, _ in old if n.startswith(store_dir)}
        inodes_new = {n: ino for n, ino, _, _ in new if n.startswith(store_dir)}
        replaced = any(inodes_new.get(n) not in (None, ino) for n, ino in inodes_old.items())
        fmt, self._format = self._format, lib.vector_format
        store = lib.store
        refresh = getattr(store, "refresh", None)
        if replaced or fmt != lib.vector_format or not callable(refresh) or getattr(store, "dim", lib.dim) != lib.dim:
            lib.reopen_store()  # replaced files, or converted to another vector format by `picscope index`
        else:
            refresh()
