"""Helpers for the server tests: a real uvicorn server on 127.0.0.1 in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve `app` on a free loopback port; yields the base URL and stops the server afterwards."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=5)
    with _running(uvicorn.Server(config), port) as url:
        yield url


@contextlib.contextmanager
def guarded_server(app: Any, settings: Any) -> Iterator[str]:
    """Like `live_server`, but run exactly as `picscope serve` runs uvicorn (connection guard, timeouts)."""
    import dataclasses

    from picscope.server.connections import Server, uvicorn_config

    port = free_port()
    with _running(Server(uvicorn_config(app, dataclasses.replace(settings, port=port))), port) as url:
        yield url


@contextlib.contextmanager
def _running(server: Any, port: int) -> Iterator[str]:
    """Run a uvicorn server in a thread until the block ends."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_process(library: str, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[Any, str]]:
    """`picscope serve` in a subprocess (the test encoders registered), yielding (Popen, base URL)."""
    import os
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    port = free_port()
    root = Path(__file__).resolve().parent.parent
    code = ("import sys, tests.feedback_test_doubles; from picscope.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--library", library, "--port", str(port), *args],
                            cwd=root, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _out, err = proc.communicate()
            raise RuntimeError(f"picscope serve did not start: {err.decode(errors='replace')[-2000:]}")
        time.sleep(0.1)
    try:
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
