"""A circuit breaker per model backend: after N consecutive failures or timeouts the backend is skipped for a
cool-down (calls fall back at once, and say so), then one trial call decides whether it is back.

Breakers are shared by every client of the same backend in the process (`breaker_for(key)`), so the LLM and the
vision model talking to one endpoint, or the pipelines of concurrent server requests, learn together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_FAILURES = 3
DEFAULT_COOLDOWN_S = 30.0


class CircuitBreaker:
    def __init__(self, name: str, failures: int = DEFAULT_FAILURES, cooldown_s: float = DEFAULT_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.failures = max(1, int(failures))
        self.cooldown_s = float(cooldown_s)
        self.clock = clock
        self.consecutive = 0
        self.open_until = 0.0
        self.last_error = ""
        self._trial = False
        self._lock = threading.Lock()

    def configure(self, failures: int, cooldown_s: float) -> None:
        with self._lock:
            self.failures, self.cooldown_s = max(1, int(failures)), float(cooldown_s)

    def blocked(self) -> str | None:
        """None when a call may go out; else why the backend is being skipped. After the cool-down one trial
        call is let through (half-open); the others keep falling back until it succeeds or fails."""
        with self._lock:
            if self.consecutive < self.failures:
                return None
            now = self.clock()
            if now >= self.open_until and not self._trial:
                self._trial = True
                return None
            wait = max(0.0, self.open_until - now)
            return (f"circuit breaker open: {self.name} skipped after {self.consecutive} consecutive failures or "
                    f"timeouts (last: {self.last_error[:120]}); next try in {wait:.0f} s")

    def success(self) -> None:
        with self._lock:
            self.consecutive, self._trial, self.last_error = 0, False, ""

    def failure(self, error: str) -> None:
        with self._lock:
            self.consecutive += 1
            self.last_error = error
            self._trial = False
            if self.consecutive >= self.failures:
                self.open_until = self.clock() + self.cooldown_s

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self.consecutive >= self.failures and self.clock() < self.open_until


_breakers: dict[str, CircuitBreaker] = {}
_lock = threading.Lock()


def breaker_for(key: str, failures: int = DEFAULT_FAILURES, cooldown_s: float = DEFAULT_COOLDOWN_S) -> CircuitBreaker:
    """The process-wide breaker of one backend (made on first use; later calls update its settings)."""
    with _lock:
        b = _breakers.get(key)
        if b is None:
            b = _breakers[key] = CircuitBreaker(key, failures, cooldown_s)
        else:
            b.configure(failures, cooldown_s)
        return b


def reset_breakers() -> None:
    """Forget every backend's history (tests; a configuration change)."""
    with _lock:
        _breakers.clear()
