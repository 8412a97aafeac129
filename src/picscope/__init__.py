"""picscope: find the picture a person means."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picscope.library import Library, LibraryStatus, SearchResult


def __getattr__(name: str) -> Any:
    """`picscope.Library` and friends, imported on first use: `picscope --version` and the CLI's start need none."""
    if name in ("Library", "LibraryStatus", "SearchResult"):
        from picscope import library

        return getattr(library, name)
    raise AttributeError(f"module 'picscope' has no attribute {name!r}")


__all__ = ["Library", "LibraryStatus", "SearchResult", "__version__"]
