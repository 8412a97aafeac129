"""Interactive retrieval sessions (rounds, marks, feedback), persisted in `<library>/sessions.sqlite`.

See `Session` for the API and docs/sessions.md for the guide.
"""

from __future__ import annotations

from picscope.sessions.session import DEFAULT_STRATEGY, Session, ShownImage
from picscope.sessions.store import NotShownError, SessionError, SessionNotFoundError, StaleRoundError

__all__ = [
    "DEFAULT_STRATEGY",
    "NotShownError",
    "Session",
    "SessionError",
    "SessionNotFoundError",
    "ShownImage",
    "StaleRoundError",
]
