"""`openai:<base url>#<model>`: any OpenAI-compatible chat-completions endpoint over HTTP (httpx).

Key: `PICSCOPE_OPENAI_API_KEY`, else `OPENAI_API_KEY` (none is sent when neither is set). Images go as
data URLs; structured output uses `response_format: json_schema`, and when the server rejects it (HTTP 400/422
mentioning response_format) the client switches to prompt-plus-repair. Retries with exponential backoff on
connection errors, 429 and 5xx; a semaphore bounds concurrent requests.

Every call has one total deadline (retries included; default 5 s for a backend on this machine, 30 s for a remote
one, less when the request's budget has less left: `picscope.models.deadline`). It is a wall-clock deadline, not
a per-read timeout: a timer shuts the call's socket down when it passes, so an endpoint that trickles a byte every
few seconds is cut as surely as one that never answers. A call cut at its deadline is not retried. A circuit
breaker per endpoint (`picscope.models.breaker`) skips it for a cool-down after consecutive failures.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from picscope.errors import ConfigError
from picscope.models.breaker import DEFAULT_COOLDOWN_S, DEFAULT_FAILURES, breaker_for
from picscope.models.chat import BackendError, BaseChat
from picscope.models.deadline import Cutter, current_scope

LOCAL_DEADLINE_S = 5.0  # a backend on this machine (loopback): a few seconds per call
REMOTE_DEADLINE_S = 30.0


def parse_openai_spec(spec: str) -> tuple[str, str]:
    body = spec.split(":", 1)[1] if spec.startswith("openai:") else spec
    base, _, model = body.partition("#")
    base = base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"openai spec needs an http(s) base URL: {spec!r} (e.g. openai:http://127.0.0.1:8080/v1#model)")
    return base, model


def is_local_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_deadline(url: str) -> float:
    return LOCAL_DEADLINE_S if is_local_url(url) else REMOTE_DEADLINE_S


class OpenAIChat(BaseChat):
    supports_images = True

    def __init__(self, spec: str, *, api_key: str | None = None, timeout: float | None = None,
                 max_concurrency: int = 4, connect_timeout: float = 5.0, breaker_failures: int = DEFAULT_FAILURES,
                 breaker_cooldown_s: float = DEFAULT_COOLDOWN_S,
                 transport: httpx.BaseTransport | None = None, **kw: Any) -> None:
        """`timeout`: the total deadline of one call (None: 5 s on loopback, 30 s otherwise)."""
        base_url, model_name = parse_openai_spec(spec)
        deadline = float(timeout) if timeout is not None else default_deadline(base_url)
        kw.setdefault("breaker", breaker_for(f"openai:{base_url}", breaker_failures, breaker_cooldown_s))
        super().__init__(default_timeout=deadline, **kw)
        self.base_url, self.model_name = base_url, model_name
        self.spec = f"openai:{self.base_url}#{self.model_name}" if self.model_name else f"openai:{self.base_url}"
        key = api_key or os.environ.get("PICSCOPE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # No keep-alive: every call opens its own connection, so its socket can be cut at the deadline.
        self._client = httpx.Client(headers=headers, transport=transport,
                                    limits=httpx.Limits(max_keepalive_connections=0),
                                    timeout=httpx.Timeout(deadline, connect=connect_timeout))
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self.connect_timeout = connect_timeout

    def _complete(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        if not self._sem.acquire(timeout=max(0.0, timeout)):
            raise BackendError(f"deadline of {timeout:.3g} s passed waiting for a free connection", deadline=True)
        try:
            status, body = self._post(payload, timeout, end)
        finally:
            self._sem.release()
        return self._decode(payload, status, body)

    def _post(self, payload: dict[str, Any], timeout: float, end: float) -> tuple[int, bytes]:
        """POST under a wall-clock deadline: a timer cuts the socket at `end`; the body is read in chunks and
        the clock is checked after each one."""
        cutter = Cutter()
        left = max(0.01, end - time.monotonic())
        timer = threading.Timer(left, cutter.fire)
        timer.daemon = True
        scope = current_scope()
        timer.start()
        try:
            with (scope.cutting(cutter) if scope is not None else contextlib.nullcontext()), self._client.stream(
                    "POST", f"{self.base_url}/chat/completions", json=payload, extensions={"trace": cutter.trace},
                    timeout=httpx.Timeout(left, connect=min(self.connect_timeout, left))) as r:
                chunks = []
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > end:
                        cutter.fired = True
                        raise httpx.ReadTimeout("deadline")
                return r.status_code, b"".join(chunks)
        except httpx.HTTPError as exc:
            if scope is not None and scope.cancelled.is_set():
                raise BackendError("cancelled: the request went away", retryable=False) from exc
            if cutter.fired or time.monotonic() >= end or isinstance(exc, httpx.TimeoutException):
                raise BackendError(f"deadline of {timeout:.3g} s exceeded ({type(exc).__name__}): the backend did "
                                   "not answer in time", deadline=True) from exc
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()

    def _decode(self, payload: dict[str, Any], status: int, content: bytes) -> dict[str, Any]:
        r = httpx.Response(status, content=content)
        if r.status_code == 429 or r.status_code >= 500:
            raise BackendError(f"HTTP {r.status_code}: {r.text[:200]}")
        if r.status_code >= 400:
            body = r.text[:300]
            unsupported = "response_format" in payload and any(
                w in body.lower() for w in ("response_format", "json_schema", "schema"))
            raise BackendError(f"HTTP {r.status_code}: {body}", retryable=False, schema_unsupported=unsupported)
        try:
            data = r.json()
        except ValueError as exc:
            raise BackendError(f"not JSON: {r.text[:200]}") from exc
        if not isinstance(data, dict):
            raise BackendError(f"unexpected response: {str(data)[:200]}")
        return data

    def list_models(self) -> list[str]:
        try:
            r = self._client.get(f"{self.base_url}/models", timeout=10)
            r.raise_for_status()
            return [m.get("id", "") for m in r.json().get("data", [])]
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()

