"""A misbehaving OpenAI-compatible endpoint on 127.0.0.1 (raw sockets, one thread per connection), for the
deadline and circuit-breaker tests:

- `hang`: accepts the connection, reads the request, never answers (counts clients that give up: `closed`);
- `trickle`: sends the status line and headers, then one byte of the body every `interval` seconds;
- `ok`: answers a chat completion whose message content is `answer` (or `answer(request)` when it is a callable
  of the parsed request body: a scripted endpoint for contract tests).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


class FakeOpenAI:
    def __init__(self, mode: str = "hang", *, interval: float = 0.5,
                 answer: str | Callable[[dict[str, Any]], str] = "ok") -> None:
        self.mode, self.interval, self.answer = mode, interval, answer
        self.requests = 0
        self.closed = 0  # hang mode: connections the client closed while waiting
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self.base = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def spec(self, model: str = "m") -> str:
        return f"openai:{self.base}#{model}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        return body

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            request = self._read_request(conn)
            if request is None:
                return
            with self._lock:
                self.requests += 1
            if self.mode == "hang":
                while not self._stop.is_set():  # until the client closes the connection (or we stop)
                    if not conn.recv(1):
                        with self._lock:
                            self.closed += 1
                        break
            elif self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not self._stop.wait(self.interval):
                    conn.sendall(b" ")
            else:
                answer = self.answer(json.loads(request or b"{}")) if callable(self.answer) else self.answer
                body = json.dumps(completion(answer)).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        with contextlib.suppress(OSError):
            conn.close()

    def wait_requests(self, n: int, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.requests >= n:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def completion(text: str) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
            "content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
