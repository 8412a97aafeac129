"""Connection hygiene for `picscope serve`: slow or idle clients cannot lock everyone else out.

uvicorn counts every open connection against one global limit and only times out keep-alive connections after a
response, so a thousand sockets that never finish their request head (a slowloris) got every other request a
503, with no token needed. This module runs uvicorn's h11 protocol with three more rules (`ConnectionGuard`):

- **Request-head deadline** (`header_timeout_s`): a connection must deliver a complete request head within this
  time of opening (or of its previous response); trickling bytes does not extend it. Then it is closed.
- **Body deadline** (`body_timeout_s`): a request body must be complete within this time of its head.
- **Per-client cap** (`per_client`): at most this many connections per client address. A new connection over the
  cap closes that client's oldest connection that is only waiting for a request head (it holds no work); when
  every one of them is busy with a request, the newcomer gets 503 and is closed.

`uvicorn_config(app, settings)` builds the server configuration `picscope serve` (and the tests) run with;
`Server` ends model work in flight at SIGTERM/SIGINT so shutdown takes seconds, not a model deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from picscope.server.settings import ServerSettings

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Retry-After: 1\r\nContent-Length: 77\r\n\r\n"
        b'{"detail": "too many connections from your address; retry", "code": "busy"}\n')


class ConnectionGuard:
    def __init__(self, *, per_client: int = 32, header_timeout_s: float = 10.0, body_timeout_s: float = 60.0) -> None:
        self.per_client = max(1, per_client)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self._by_client: dict[str, OrderedDict[int, Any]] = {}
        self._lock = threading.Lock()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def admit(self, proto: Any) -> bool:
        """Register a new connection; make room by closing the client's oldest idle one. False: refuse it."""
        client = proto.client[0] if proto.client else "?"
        with self._lock:
            conns = self._by_client.setdefault(client, OrderedDict())
            victim = None
            if len(conns) >= self.per_client:
                victim = next((c for c in conns.values() if _waiting_for_head(c)), None)
                if victim is None:
                    self.refused += 1
                    return False
                conns.pop(id(victim), None)
                self.evicted += 1
            conns[id(proto)] = proto
        if victim is not None:
            victim.transport.close()
        return True

    def release(self, proto: Any) -> None:
        client = proto.client[0] if proto.client else "?"
        with self._lock:
            conns = self._by_client.get(client)
            if conns is not None:
                conns.pop(id(proto), None)
                if not conns:
                    del self._by_client[client]

    def open_connections(self) -> int:
        with self._lock:
            return sum(len(c) for c in self._by_client.values())


def _waiting_for_head(proto: Any) -> bool:
    """No request of this connection is being read or answered: closing it loses no work."""
    cycle = proto.cycle
    return proto.conn.their_state is h11.IDLE and (cycle is None or cycle.response_complete)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a `ConnectionGuard`: admitted or refused on opening, closed when its request
    head or body misses its deadline. `guarded_protocol(guard)` makes the subclass bound to one guard."""

    guard: ConnectionGuard
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.write(BUSY)
            transport.close()
            return
        self._admitted = True
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._admitted:
            self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    # -- timers ---------------------------------------------------------------------------------------
    def _track(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm_head()
        else:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if state is h11.SEND_BODY and self._body_timer is None:
                self._body_timer = self.loop.call_later(self.guard.body_timeout_s, self._timeout, "body")
            elif state is not h11.SEND_BODY and self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

    def _arm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._timeout, "head")

    def _cancel_timers(self) -> None:
        for t in (self._head_timer, self._body_timer):
            if t is not None:
                t.cancel()
        self._head_timer = self._body_timer = None

    def _timeout(self, what: str) -> None:
        if what == "head":
            self._head_timer = None
            if not _waiting_for_head(self):
                return
        else:
            self._body_timer = None
            if self.conn.their_state is not h11.SEND_BODY:
                return
        if not self.transport.is_closing():
            self.guard.timed_out += 1
            self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[H11Protocol]:
    """The protocol class uvicorn runs (`http=`): `GuardedH11Protocol` bound to `guard`."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


class Server(uvicorn.Server):
    """uvicorn's server; at SIGTERM/SIGINT it first cuts the model calls in flight (their requests then finish
    at once with encoder results), so shutdown waits seconds, not a model deadline."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], object] | None = None) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)


def uvicorn_config(app: Any, settings: ServerSettings, *, log_level: str = "warning",
                   graceful_s: int = 3) -> uvicorn.Config:
    """How `picscope serve` runs uvicorn: the guarded protocol, a 1,024-connection ceiling, short keep-alive,
    and `graceful_s` seconds for requests in flight at shutdown."""
    guard = ConnectionGuard(per_client=settings.per_client_connections, header_timeout_s=settings.header_timeout_s,
                            body_timeout_s=settings.body_timeout_s)
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, timeout_keep_alive=5,
                          limit_concurrency=1024, server_header=False, timeout_graceful_shutdown=graceful_s,
                          http=guarded_protocol(guard))
