"""Counted, logged model events (retries, fallbacks, parse failures). Nothing here ever raises."""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("picscope.models")
_lock = threading.Lock()
_counts: Counter[str] = Counter()


def record(kind: str, detail: str = "") -> None:
    """Count one event of `kind` (e.g. "retry", "fallback.unparsable") and log it at WARNING."""
    with _lock:
        _counts[kind] += 1
    log.warning("model event %s: %s", kind, detail[:300])


def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        _counts.clear()
