"""Deadlines for model calls: a per-request scope (total time budget, cancellation, what fell back).

A pipeline request (or a server request) opens a `CallScope`; every model call made in that thread while it is
active gets at most the time left in the scope (`ChatModel.chat` asks `time_left()`), is refused at once when the
scope is spent or cancelled, and records its fallback there, so the request's explanation can say what happened:

    with call_scope(seconds=15) as scope:
        out = pipeline.run(request)
    scope.notes  # ["openai:http://…#m: deadline of 5 s exceeded; …", …]

`scope.cancel()` (from any thread, e.g. when the HTTP client went away) marks the scope cancelled and cuts the
connections of calls in flight (`Cutter`), so a hung backend does not keep a worker thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


class Cutter:
    """Cuts one HTTP call at its deadline: remembers the call's socket (httpx `trace` extension: the new TCP
    connection) and shuts it down when fired, which wakes a thread blocked in recv() with an error."""

    def __init__(self) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with self._lock:
                self._sock = sock
                fired = self.fired
            if fired:
                self._shutdown()

    def fire(self) -> None:
        with self._lock:
            self.fired = True
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class CallScope:
    def __init__(self, seconds: float | None = None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + max(0.0, seconds)
        self.seconds = seconds
        self.notes: list[str] = []
        self.cancelled = threading.Event()
        self._active: set[Cutter] = set()
        self._lock = threading.Lock()

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def spent(self) -> str | None:
        """Why no further model call may start (None: it may)."""
        if self.cancelled.is_set():
            return "request cancelled (the client went away)"
        left = self.time_left()
        if left is not None and left <= 0:
            return f"request time budget of {self.seconds:g} s spent"
        return None

    def note(self, text: str) -> None:
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)

    def tighten(self, seconds: float | None) -> tuple[float | None, float | None]:
        """Lower the deadline to `seconds` from now (if sooner); returns the previous (deadline, seconds)."""
        before = (self.deadline, self.seconds)
        if seconds is not None:
            new = time.monotonic() + max(0.0, seconds)
            if self.deadline is None or new < self.deadline:
                self.deadline, self.seconds = new, seconds
        return before

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            active = list(self._active)
        for c in active:
            c.fire()

    @contextlib.contextmanager
    def cutting(self, cutter: Cutter) -> Iterator[None]:
        with self._lock:
            self._active.add(cutter)
        if self.cancelled.is_set():
            cutter.fire()
        try:
            yield
        finally:
            with self._lock:
                self._active.discard(cutter)


_current: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("picscope_call_scope", default=None)


def current_scope() -> CallScope | None:
    return _current.get()


@contextlib.contextmanager
def call_scope(seconds: float | None = None, scope: CallScope | None = None) -> Iterator[CallScope]:
    """Activate `scope` (or a new one of `seconds`) in this thread. Inside an active scope a nested call only
    tightens its deadline (restored on exit), so notes and cancellation stay shared with the outer request."""
    outer = _current.get()
    if scope is None and outer is not None:
        before = outer.tighten(seconds)
        try:
            yield outer
        finally:
            outer.deadline, outer.seconds = before
        return
    active = scope if scope is not None else CallScope(seconds)
    if scope is not None and seconds is not None:
        active.tighten(seconds)
    token = _current.set(active)
    try:
        yield active
    finally:
        _current.reset(token)


def time_left() -> float | None:
    scope = _current.get()
    return scope.time_left() if scope is not None else None
