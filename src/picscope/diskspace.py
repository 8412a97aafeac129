"""Free-space checks before writing, so that a full disk gives a clear message instead of a torn write
or a SIGBUS from a memory-mapped file that could not be backed by disk blocks.

    ensure_free(library_path, bytes_about_to_be_written)   # raises DiskFullError with N MB needed, M free
"""

from __future__ import annotations

import errno
import os

from picscope.errors import DiskFullError

__all__ = ["HEADROOM_BYTES", "DiskFullError", "ensure_free", "ensure_mappable", "free_bytes", "fs_type", "is_enospc"]

# Filesystems whose pages come from memory: reading a hole of a sparse file mapped from them allocates a
# page, so reading past the free space ends in SIGBUS (not so on disk filesystems, where holes read as zeros).
_RAM_BACKED = frozenset({"tmpfs", "shmem", "hugetlbfs"})

# Kept free on top of what a write needs: SQLite's WAL and journal, the WAL index, temp files.
HEADROOM_BYTES = 1 << 20


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path` (0 if unknown)."""
    p = os.fspath(path)
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        st = os.statvfs(p or ".")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def ensure_free(path: str | os.PathLike[str], needed: int, *, headroom: int = HEADROOM_BYTES) -> None:
    """Raise `DiskFullError("disk full: N MB needed, M free at PATH")` unless `needed + headroom` bytes are free."""
    free = free_bytes(path)
    if free < needed + headroom:
        raise DiskFullError(
            f"disk full: {(needed + headroom) / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free at {os.fspath(path)}; "
            "free some space and run the command again (what was written so far is kept)"
        )


def fs_type(path: str | os.PathLike[str]) -> str | None:
    """The filesystem type holding `path` (from /proc/self/mountinfo), or None where that is unknown."""
    try:
        real = os.path.realpath(os.fspath(path))
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    best, kind = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, right.split()[0]
    return kind


def ensure_mappable(paths: list[os.PathLike[str] | str]) -> None:
    """Before memory-mapping `paths` for reading: on a RAM-backed filesystem (tmpfs) the unallocated parts of
    sparse files need free space when read; raise `DiskFullError` instead of letting the read die by SIGBUS."""
    existing = [os.fspath(p) for p in paths if os.path.exists(p)]
    if not existing or fs_type(existing[0]) not in _RAM_BACKED:
        return
    holes = 0
    for p in existing:
        st = os.stat(p)
        holes += max(0, st.st_size - st.st_blocks * 512)
    free = free_bytes(existing[0])
    if holes > free:
        folder = os.path.dirname(existing[0])
        raise DiskFullError(
            f"disk full: {holes / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free at {folder} (reading the "
            "vector store needs that much on this memory-backed filesystem); free some space or move the library"
        )


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
