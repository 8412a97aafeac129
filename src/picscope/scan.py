"""Recursive folder scan on byte paths (non-UTF-8 names survive), with include/exclude globs,
symlink-loop protection, and a record of folders that could not be listed."""

from __future__ import annotations

import fnmatch
import os
import stat as statmod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from picscope.imageio import is_image_name


@dataclass(frozen=True)
class ScanEntry:
    raw: bytes  # absolute path
    rel: str  # path relative to the root, for display and glob matching
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    dir_errors: list[tuple[bytes, str]] = field(default_factory=list)  # (folder, reason)
    file_errors: list[tuple[bytes, str]] = field(default_factory=list)  # (file, reason) from stat


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def scan(
    root: bytes,
    result: ScanResult,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_symlinks: bool = True,
) -> Iterator[ScanEntry]:
    """Yield image files below `root` (depth first, sorted names). Errors go to `result`, never raise."""
    root = os.path.abspath(root)
    stack: list[bytes] = [root]
    visited: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        visited.add((st.st_dev, st.st_ino))
    except OSError as exc:
        result.dir_errors.append((root, exc.strerror or str(exc)))
        return
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            result.dir_errors.append((folder, "folder disappeared during the scan"))
            continue
        except OSError as exc:
            result.dir_errors.append((folder, f"cannot list folder: {exc.strerror or exc}"))
            continue
        subdirs: list[bytes] = []
        for entry in entries:
            path = entry.path
            rel = os.path.relpath(path, root).decode("utf-8", "backslashreplace")
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=follow_symlinks)
            except OSError as exc:
                result.file_errors.append((path, exc.strerror or str(exc)))
                continue
            if is_link and not follow_symlinks and not entry.is_file(follow_symlinks=False):
                continue
            if is_dir:
                if exclude and _matches(rel + "/", exclude):
                    continue
                try:
                    dst = os.stat(path) if follow_symlinks else entry.stat(follow_symlinks=False)
                except OSError as exc:
                    result.dir_errors.append((path, f"cannot stat folder: {exc.strerror or exc}"))
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key in visited:
                    continue  # symlink loop or a folder reached twice
                visited.add(key)
                subdirs.append(path)
                continue
            if not is_image_name(entry.name):
                continue
            if include and not _matches(rel, include):
                continue
            if exclude and _matches(rel, exclude):
                continue
            try:
                fst = entry.stat(follow_symlinks=follow_symlinks)
            except FileNotFoundError:
                continue  # vanished between listing and stat: simply not there any more
            except OSError as exc:
                result.file_errors.append((path, exc.strerror or str(exc)))
                continue
            if not statmod.S_ISREG(fst.st_mode):
                continue
            yield ScanEntry(path, rel, fst.st_size, fst.st_mtime_ns)
        stack.extend(reversed(subdirs))
