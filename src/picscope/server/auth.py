"""The request guard, one pure ASGI middleware in front of every route:

1. Host header: a loopback server answers only to loopback names (stops DNS-rebinding pages).
2. Token (when configured): `Authorization: Bearer T`, the `X-Picscope-Token` header, or the `picscope_token`
   cookie. Opening any page with `?token=T` once sets that cookie (HttpOnly, SameSite=Strict) and redirects to
   the same URL without the token, so a browser never needs the token again.
3. Cross-site writes: a POST/DELETE whose `Origin` is neither this server nor a configured CORS origin is refused.
4. Body size: bodies over the limit get 413 before they are read (Content-Length) or as soon as they exceed it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "picscope_token"
TOKEN_HEADER = "x-picscope-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: the limit is {limit} bytes")


def split_host(value: str) -> str:
    """'example:80' -> 'example', '[::1]:8765' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def send_json(send: Send, status: int, detail: str, code: str,
                    headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail, "code": code}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def same_site_location(root_path: str, path: str, query: str) -> str:
    """The redirect target after a `?token=` link: this site's own path, never another site's.

    `//evil.example/`, `/%2F%2Fevil.example` (decoded: `///evil.example`) and `/\\evil.example` are read by
    browsers as another host, so any path that does not start with exactly one `/` followed by a plain segment,
    or that holds a backslash or a control character, becomes `/`. The path is percent-encoded again.
    """
    full = root_path + path
    unsafe = (not full.startswith("/") or full.startswith(("//", "/\\")) or "\\" in full
              or any(ord(c) < 0x20 or ord(c) == 0x7F for c in full))
    target = "/" if unsafe else quote(full, safe="/-._~!$&'()*+,;=:@")
    if target.startswith("//"):  # belt and braces: quote() never adds slashes
        target = "/"
    return target + (f"?{query}" if query else "")


class Guard:
    def __init__(self, app: ASGIApp, *, token: str | None, hosts: list[str], cors_origins: list[str],
                 body_limit: Callable[[str], int]) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.hosts = {h.strip("[]").lower() for h in hosts}
        self.any_host = "*" in self.hosts
        self.origins = {o.rstrip("/").lower() for o in cors_origins}
        self.body_limit = body_limit

    def _token_ok(self, headers: dict[bytes, bytes]) -> bool:
        assert self.token is not None
        candidates: list[bytes] = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            candidates.append(auth[7:].strip())
        if b"x-picscope-token" in headers:
            candidates.append(headers[b"x-picscope-token"].strip())
        cookie = headers.get(b"cookie")
        if cookie:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(cookie.decode("latin-1"))
            except Exception:
                jar = SimpleCookie()
            if COOKIE in jar:
                candidates.append(jar[COOKIE].value.encode("latin-1", "replace"))
        return any(hmac.compare_digest(c, self.token) for c in candidates)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = split_host(headers.get(b"host", b"").decode("latin-1"))
        if not self.any_host and host not in self.hosts:
            await send_json(send, 400, f"unexpected Host header {host!r}: this server answers to "
                            f"{', '.join(sorted(self.hosts))}", "bad_host")
            return
        if await self._refused_token(scope, headers, send) or await self._refused_origin(scope, headers, host, send):
            return
        limit = self.body_limit(scope["path"])
        if await self._refused_length(headers, limit, send):
            return
        await self.app(scope, counted_receive(receive, limit), send)

    async def _refused_token(self, scope: Scope, headers: dict[bytes, bytes], send: Send) -> bool:
        """Answer a request without a valid token (a `?token=` link: set the cookie and redirect); True if so."""
        method = scope["method"]
        preflight = method == "OPTIONS" and bool(self.origins)  # answered by the CORS middleware
        if self.token is None or preflight or self._token_ok(headers):
            return False
        query = scope.get("query_string", b"").decode("latin-1")
        pairs = parse_qsl(query, keep_blank_values=True)
        given = next((v for k, v in pairs if k == "token"), None)
        if given is not None and method in ("GET", "HEAD") and hmac.compare_digest(given.encode(), self.token):
            rest = urlencode([(k, v) for k, v in pairs if k != "token"])
            location = same_site_location(scope.get("root_path", ""), scope["path"], rest)
            cookie = f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode("latin-1", "replace")),
                                    (b"set-cookie", cookie.encode("latin-1", "replace")),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return True
        await send_json(send, 401, "a token is required: open the address printed by `picscope serve` "
                        "(…/?token=…) or send 'Authorization: Bearer TOKEN'", "unauthorized",
                        [(b"www-authenticate", b"Bearer")])
        return True

    async def _refused_origin(self, scope: Scope, headers: dict[bytes, bytes], host: str, send: Send) -> bool:
        """Refuse a cross-site write (an `Origin` neither this server nor a CORS origin); True if refused."""
        origin = headers.get(b"origin")
        if origin is None or scope["method"] in SAFE_METHODS:
            return False
        o = origin.decode("latin-1").rstrip("/").lower()
        same = split_host(urlsplit(o).netloc) == host and urlsplit(o).netloc == \
            headers.get(b"host", b"").decode("latin-1").lower()
        if same or o in self.origins:
            return False
        await send_json(send, 403, f"cross-site request from {o!r} refused", "forbidden_origin")
        return True

    @staticmethod
    async def _refused_length(headers: dict[bytes, bytes], limit: int, send: Send) -> bool:
        """Refuse a bad or too large Content-Length before reading the body; True if refused."""
        length = headers.get(b"content-length")
        if length is None:
            return False
        try:
            n = int(length)
        except ValueError:
            await send_json(send, 400, "invalid Content-Length header", "bad_request")
            return True
        if n > limit:
            await send_json(send, 413, f"request body too large ({n} bytes): the limit is {limit} bytes",
                            "too_large")
            return True
        return False


def counted_receive(receive: Receive, limit: int) -> Receive:
    """`receive`, raising `BodyTooLarge` as soon as the request body exceeds `limit` bytes."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted
