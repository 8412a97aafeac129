"""Free-space checks before writing, so that a full disk gives a clear message instead of a torn write
or a SIGBUS from a memory-mapped file that could not be backed by disk blocks.

    ensure_free(library_path, bytes_about_to_be_written)   # raises DiskFullError with N MB needed, M free
"""

from __future__ import annotations

import errno
import os

from picscope.errors import DiskFullError

__all__ = ["HEADROOM_BYTES", "DiskFullError", "ensure_free", "free_bytes", "is_enospc"]

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


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
