"""File metadata that some stores keep next to each vector, and store-side filters over it.

The catalog stays the source of truth; a store that also keeps `path` and `mtime` (Milvus) can
filter on its side (`search(..., filter=MetaFilter(...))`) instead of receiving a list of allowed ids,
which does not scale to millions of files. Stores without metadata ignore it and are filtered by
`allowed_ids` computed from the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class FileMeta:
    path: str
    mtime_ns: int


@dataclass(frozen=True)
class MetaFilter:
    """Candidates must satisfy every given condition. Times are Unix seconds (file modification time)."""

    path_prefix: str | None = None
    modified_after: float | None = None  # inclusive
    modified_before: float | None = None  # exclusive

    def is_empty(self) -> bool:
        return self.path_prefix is None and self.modified_after is None and self.modified_before is None

    def to_milvus(self) -> str:
        """A Milvus boolean expression over the `path` (VARCHAR) and `mtime` (INT64 seconds) fields.

        A prefix is a half-open string range `[p, succ(p))` rather than `like "p%"`: `_` and `%` are
        wildcards in `like` and Milvus 2.5 has no working escape for them.
        """
        parts: list[str] = []
        if self.path_prefix:
            p = self.path_prefix
            upper = p[:-1] + chr(ord(p[-1]) + 1)
            parts.append(f"(path >= {milvus_string(p)} and path < {milvus_string(upper)})")
        if self.modified_after is not None:
            parts.append(f"mtime >= {int(np.ceil(self.modified_after))}")
        if self.modified_before is not None:
            parts.append(f"mtime < {int(np.ceil(self.modified_before))}")
        return " and ".join(parts)

    def matches(self, meta: FileMeta) -> bool:
        """The same predicate evaluated locally (used by tests and by stores without a server)."""
        secs = meta.mtime_ns // 1_000_000_000
        if self.path_prefix and not meta.path.startswith(self.path_prefix):
            return False
        if self.modified_after is not None and secs < int(np.ceil(self.modified_after)):
            return False
        return not (self.modified_before is not None and secs >= int(np.ceil(self.modified_before)))


def milvus_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@runtime_checkable
class SupportsMeta(Protocol):
    """A store that keeps file metadata with each vector and can filter on it."""

    def upsert_with_meta(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[FileMeta]) -> None: ...

    def get_meta(self, ids: np.ndarray) -> dict[int, FileMeta]: ...
