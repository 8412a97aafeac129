"""Bounded concurrency for blocking work: a few requests run, a bounded queue waits, the rest get 429 at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from anyio import to_thread
from starlette.exceptions import HTTPException

T = TypeVar("T")


class Busy(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(429, detail, headers={"Retry-After": "1"})


class WorkLimiter:
    """`await limiter.run(fn, *args)`: run `fn` in a worker thread once one of `slots` is free.

    At most `queue` requests wait; the next one is answered 429 Too Many Requests (Retry-After: 1) without
    doing any work, and so is one that waited `timeout` seconds. Work that started always finishes (a thread
    cannot be cancelled), so a client that gives up never leaves the library or a session half-written.
    """

    def __init__(self, name: str, slots: int, queue: int, timeout: float) -> None:
        self.name = name
        self.slots = max(1, slots)
        self.queue = max(0, queue)
        self.timeout = timeout
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0
        self.running = 0
        self.rejected = 0

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # made lazily, inside the server's event loop
            self._sem = asyncio.Semaphore(self.slots)
        return self._sem

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        sem = self._semaphore()
        if sem.locked() and self.waiting >= self.queue:
            self.rejected += 1
            raise Busy(f"server busy: {self.running} {self.name} requests running and {self.waiting} waiting; "
                       "retry in a moment")
        self.waiting += 1
        try:
            await asyncio.wait_for(sem.acquire(), self.timeout)
        except TimeoutError:
            self.rejected += 1
            raise Busy(f"server busy: no {self.name} slot free within {self.timeout:.0f} s; retry later") from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await to_thread.run_sync(lambda: fn(*args), abandon_on_cancel=False)
        finally:
            self.running -= 1
            sem.release()
