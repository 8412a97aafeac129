"""Recursive folder scan on byte paths (non-UTF-8 names survive), with include/exclude globs,
symlink-loop protection, and a reason for everything it sees but does not hand on.

The scan yields every regular file (whether it is an image is decided later, by content, and only
for new or changed files). What it skips is recorded in `ScanResult` with a reason: folders that
could not be listed, entries that could not be stat'ed (a symlink to itself, a path over the OS
limit), FIFOs, devices and sockets, dangling symlinks, symlinks not followed (`follow_symlinks`
off), and RAW files with a same-named JPEG/PNG beside them (when `skip_raw_with_sibling`).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat as statmod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from picscope.imageio import file_kind, is_raw_name

SIBLING_EXTENSIONS = (b".jpg", b".jpeg", b".jpe", b".png")


@dataclass(frozen=True)
class ScanEntry:
    raw: bytes  # absolute path
    rel: str  # path relative to the root, for display and glob matching
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    dir_errors: list[tuple[bytes, str]] = field(default_factory=list)  # (folder, reason)
    file_errors: list[tuple[bytes, str]] = field(default_factory=list)  # (entry, reason): could not be stat'ed
    skipped: list[tuple[bytes, str]] = field(default_factory=list)  # (entry, reason): seen and deliberately skipped

    def all_problems(self) -> list[tuple[bytes, str]]:
        """Every path the scan saw and did not hand on, with its reason."""
        return [*self.dir_errors, *self.file_errors, *self.skipped]


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _stat_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link points (through other links) back to itself"
    if exc.errno == errno.ENAMETOOLONG:
        return "path too long for the operating system (ENAMETOOLONG)"
    return f"cannot stat: {exc.strerror or exc}"


def _stem(name: bytes) -> bytes:
    dot = name.rfind(b".")
    return name[:dot] if dot > 0 else name


def _dangling_reason(path: bytes) -> str:
    try:
        target = os.readlink(path).decode("utf-8", "backslashreplace")
    except OSError:
        target = "?"
    return f"dangling symlink: its target {target} does not exist"


def scan(
    root: bytes,
    result: ScanResult,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_symlinks: bool = True,
    skip_raw_with_sibling: bool = True,
) -> Iterator[ScanEntry]:
    """Yield regular files below `root` (depth first, sorted names). Problems go to `result`, never raise."""
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
            reason = _stat_reason(exc) if exc.errno == errno.ENAMETOOLONG else f"cannot list folder: {exc.strerror}"
            result.dir_errors.append((folder, reason))
            continue
        siblings = {_stem(e.name).lower() for e in entries if e.name.lower().endswith(SIBLING_EXTENSIONS)}
        subdirs: list[bytes] = []
        for entry in entries:
            path = entry.path
            rel = os.path.relpath(path, root).decode("utf-8", "backslashreplace")
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=follow_symlinks)
            except OSError as exc:
                if not (exclude and _matches(rel, exclude)):
                    result.file_errors.append((path, _stat_reason(exc)))
                continue
            if is_link and not follow_symlinks and not entry.is_file(follow_symlinks=False):
                if not (exclude and _matches(rel, exclude)):
                    result.skipped.append((path, "symlink not followed (index.follow_symlinks = false)"))
                continue
            if is_dir:
                if exclude and _matches(rel + "/", exclude):
                    continue
                try:
                    dst = os.stat(path) if follow_symlinks else entry.stat(follow_symlinks=False)
                except OSError as exc:
                    special = exc.errno in (errno.ENAMETOOLONG, errno.ELOOP)
                    reason = _stat_reason(exc) if special else f"cannot stat folder: {exc.strerror or exc}"
                    result.dir_errors.append((path, reason))
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key in visited:
                    continue  # symlink loop or a folder reached twice
                visited.add(key)
                subdirs.append(path)
                continue
            if include and not _matches(rel, include):
                continue
            if exclude and _matches(rel, exclude):
                continue
            try:
                fst = entry.stat(follow_symlinks=follow_symlinks)
            except FileNotFoundError:
                if is_link:
                    result.skipped.append((path, _dangling_reason(path)))
                continue  # otherwise it vanished between listing and stat: simply not there any more
            except OSError as exc:
                result.file_errors.append((path, _stat_reason(exc)))
                continue
            if not statmod.S_ISREG(fst.st_mode):
                via = " (through a symlink)" if is_link else ""
                result.skipped.append((path, f"not a regular file: {file_kind(fst.st_mode)}{via}"))
                continue
            if skip_raw_with_sibling and is_raw_name(entry.name) and _stem(entry.name).lower() in siblings:
                result.skipped.append(
                    (path, "RAW file with a same-named JPEG/PNG beside it: the JPEG/PNG is indexed instead "
                     "(set index.skip_raw_with_sibling = false to index both)")
                )
                continue
            yield ScanEntry(path, rel, fst.st_size, fst.st_mtime_ns)
        stack.extend(reversed(subdirs))
