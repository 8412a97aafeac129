"""Exceptions raised by picscope. Every user-facing failure is one of these, with a clear message."""

from __future__ import annotations


class PicscopeError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits non-zero."""


class LibraryError(PicscopeError):
    """The library on disk cannot be used as asked (missing, locked, newer schema, ...)."""


class ImageNotFoundError(LibraryError):
    """A library id (or reference) names no indexed image (the REST API answers 404)."""


class SchemaTooNewError(LibraryError):
    """The library was written by a newer picscope."""


class EncoderMismatchError(LibraryError):
    """The library's vectors come from a different encoder than the one requested."""


class LibraryLockedError(LibraryError):
    """Another process is writing to the library."""


class EncoderError(PicscopeError):
    """An encoder cannot be built or loaded (unknown spec, missing weights, corrupt weights)."""


class ImageDecodeError(PicscopeError):
    """A file cannot be decoded as an image; the message is the reason recorded for it."""


class StoreError(PicscopeError):
    """A vector store failed (unreachable server, corrupt file, ...)."""


class ConfigError(PicscopeError):
    """A configuration value or spec string is invalid."""


class LibraryReadOnlyError(LibraryError):
    """The library is on a read-only folder or mount: it can be searched but not changed."""


class DiskFullError(PicscopeError):
    """Not enough free disk space to write; the message says how much is needed and where."""
