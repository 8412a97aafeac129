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
    walk = _Walk(os.path.abspath(root), result, include, exclude, follow_symlinks, skip_raw_with_sibling)
    try:
        st = os.stat(walk.root)
        walk.visited.add((st.st_dev, st.st_ino))
    except OSError as exc:
        result.dir_errors.append((walk.root, exc.strerror or str(exc)))
        return
    stack: list[bytes] = [walk.root]
    while stack:
        entries = walk.list_folder(stack.pop())
        if entries is None:
            continue
        siblings = {_stem(e.name).lower() for e in entries if e.name.lower().endswith(SIBLING_EXTENSIONS)}
        subdirs: list[bytes] = []
        for entry in entries:
            found = walk.visit(entry, siblings, subdirs)
            if found is not None:
                yield found
        stack.extend(reversed(subdirs))


@dataclass
class _Walk:
    """One scan's root, options and folders seen; each method records its problems in `result`."""

    root: bytes
    result: ScanResult
    include: Sequence[str]
    exclude: Sequence[str]
    follow_symlinks: bool
    skip_raw_with_sibling: bool
    visited: set[tuple[int, int]] = field(default_factory=set)

    def list_folder(self, folder: bytes) -> list[os.DirEntry[bytes]] | None:
        """The folder's entries sorted by name, or None (recorded) when it cannot be listed."""
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            self.result.dir_errors.append((folder, "folder disappeared during the scan"))
        except OSError as exc:
            reason = _stat_reason(exc) if exc.errno == errno.ENAMETOOLONG else f"cannot list folder: {exc.strerror}"
            self.result.dir_errors.append((folder, reason))
        return None

    def excluded(self, rel: str) -> bool:
        return bool(self.exclude) and _matches(rel, self.exclude)

    def visit(self, entry: os.DirEntry[bytes], siblings: set[bytes], subdirs: list[bytes]) -> ScanEntry | None:
        """A file to hand on, or None: a folder (appended to `subdirs`), something skipped, or a problem."""
        path = entry.path
        rel = os.path.relpath(path, self.root).decode("utf-8", "backslashreplace")
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=self.follow_symlinks)
        except OSError as exc:
            if not self.excluded(rel):
                self.result.file_errors.append((path, _stat_reason(exc)))
            return None
        if is_link and not self.follow_symlinks and not entry.is_file(follow_symlinks=False):
            if not self.excluded(rel):
                self.result.skipped.append((path, "symlink not followed (index.follow_symlinks = false)"))
            return None
        if is_dir:
            if not self.excluded(rel + "/") and self.new_folder(entry):
                subdirs.append(path)
            return None
        if (self.include and not _matches(rel, self.include)) or self.excluded(rel):
            return None
        return self.regular_file(entry, rel, is_link, siblings)

    def new_folder(self, entry: os.DirEntry[bytes]) -> bool:
        """Whether a folder is one to descend into: stat-able, and not reached before (a symlink loop)."""
        try:
            dst = os.stat(entry.path) if self.follow_symlinks else entry.stat(follow_symlinks=False)
        except OSError as exc:
            special = exc.errno in (errno.ENAMETOOLONG, errno.ELOOP)
            reason = _stat_reason(exc) if special else f"cannot stat folder: {exc.strerror or exc}"
            self.result.dir_errors.append((entry.path, reason))
            return False
        key = (dst.st_dev, dst.st_ino)
        if key in self.visited:
            return False  # symlink loop or a folder reached twice
        self.visited.add(key)
        return True

    def regular_file(
        self, entry: os.DirEntry[bytes], rel: str, is_link: bool, siblings: set[bytes]
    ) -> ScanEntry | None:
        """The entry when it is a regular file to index; else None, with the reason recorded."""
        path = entry.path
        try:
            fst = entry.stat(follow_symlinks=self.follow_symlinks)
        except FileNotFoundError:
            if is_link:
                self.result.skipped.append((path, _dangling_reason(path)))
            return None  # otherwise it vanished between listing and stat: simply not there any more
        except OSError as exc:
            self.result.file_errors.append((path, _stat_reason(exc)))
            return None
        if not statmod.S_ISREG(fst.st_mode):
            via = " (through a symlink)" if is_link else ""
            self.result.skipped.append((path, f"not a regular file: {file_kind(fst.st_mode)}{via}"))
            return None
        if self.skip_raw_with_sibling and is_raw_name(entry.name) and _stem(entry.name).lower() in siblings:
            self.result.skipped.append(
                (path, "RAW file with a same-named JPEG/PNG beside it: the JPEG/PNG is indexed instead "
                 "(set index.skip_raw_with_sibling = false to index both)")
            )
            return None
        return ScanEntry(path, rel, fst.st_size, fst.st_mtime_ns)
