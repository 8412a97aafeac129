"""Ready-to-use copies of vector codecs in the cache folder, so that a new process opens a codec in milliseconds.

A codec file is small to ship: compressed, most matrix rows int8 with row scales. Using one means decompressing
it, expanding both matrices to float32 (2 × 20 MB for the bundled codec) and hashing every array for the codec's
pinned name: 0.1–0.25 s, paid again by every `picscope search` process. The first process that opens a codec
file therefore keeps what it built:

    <cache>/codecs/index.json            resolved codec path → (size and mtime of its files, the codec's name)
    <cache>/codecs/<digest of name>/     the codec's arrays as they are used (`modelcache.save_arrays`: one packed file,
                                         memory-mapped by `load_arrays`)

A later process that finds the file unchanged (same size and mtime, as `modelcache.file_digest` checks model
files) maps the arrays instead: no decompression, no expansion, no hashing, and only the pages a query touches
are read. Entries are keyed by the codec's name, so every library holding a copy of the shipped codec shares one
entry. Anything missing or unreadable is rebuilt from the codec file; a read-only cache folder only costs speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

_lock = threading.Lock()


def _folder() -> Path:
    from picscope.paths import cache_dir

    return cache_dir() / "codecs"


def _stamp(files: Sequence[Path]) -> str:
    parts = []
    for f in files:
        st = Path(f).stat()
        parts.append(f"{Path(f).name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _entry(name: str) -> Path:
    return _folder() / hashlib.sha256(name.encode()).hexdigest()[:16]


def _read_index() -> dict[str, object]:
    try:
        index = json.loads((_folder() / "index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def lookup(files: Sequence[Path]) -> tuple[str, dict[str, np.ndarray]] | None:
    """(name, arrays) of an unchanged codec file kept earlier, or None (never kept, changed, or unreadable)."""
    from picscope.encoders.modelcache import load_arrays

    try:
        key, stamp = str(Path(files[0]).resolve()), _stamp(files)
    except OSError:
        return None
    entry = _read_index().get(key)
    if not (isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("name"), str)):
        return None
    name = str(entry["name"])
    folder = _entry(name)
    loaded = load_arrays(folder)
    if loaded is None or loaded[1].get("name") != name:
        shutil.rmtree(folder, ignore_errors=True)  # damaged: the caller reads the codec file and keeps it again
        return None
    return name, loaded[0]


def keep(files: Sequence[Path], name: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Remember `files` as codec `name` with its ready-to-use `arrays` (best effort: errors only cost speed)."""
    from picscope.encoders.modelcache import atomic_write, save_arrays

    try:
        key, stamp = str(Path(files[0]).resolve()), _stamp(files)
        folder = _entry(name)
        if not (folder / "meta.json").exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            save_arrays(folder, dict(arrays), {"name": name})
        with _lock:
            index = {k: v for k, v in _read_index().items() if os.path.exists(k)}  # forget removed libraries
            index[key] = {"stamp": stamp, "name": name}
            _forget_unused(index)
            atomic_write(_folder() / "index.json", json.dumps(index, indent=1).encode())
    except OSError:
        pass


def _forget_unused(index: Mapping[str, object]) -> None:
    """Remove entries no codec file refers to any more (a removed library's own codec, a replaced file)."""
    used = {_entry(str(v["name"])).name for v in index.values() if isinstance(v, dict) and "name" in v}
    for folder in _folder().iterdir():
        if folder.is_dir() and folder.name not in used and not folder.name.endswith(".tmp"):
            shutil.rmtree(folder, ignore_errors=True)


class StoredArrays(Mapping[str, np.ndarray]):
    """A codec file's arrays as stored, read on first use (only re-saving a codec needs them)."""

    def __init__(self, files: Sequence[Path]) -> None:
        self._files = list(files)
        self._arrays: dict[str, np.ndarray] | None = None

    def _all(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays: dict[str, np.ndarray] = {}
            for part in self._files:
                with np.load(part) as f:
                    arrays.update({k: f[k] for k in f.files})
            self._arrays = arrays
        return self._arrays

    def __getitem__(self, key: str) -> np.ndarray:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())
