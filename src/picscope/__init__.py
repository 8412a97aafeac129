"""picscope: find the picture a person means."""

from __future__ import annotations

__version__ = "0.1.0"

from picscope.library import Library, LibraryStatus, SearchResult

__all__ = ["Library", "LibraryStatus", "SearchResult", "__version__"]
