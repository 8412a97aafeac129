"""`openai:<base url>#<model>`: any OpenAI-compatible chat-completions endpoint over HTTP (httpx).

Key: `PICSCOPE_OPENAI_API_KEY`, else `OPENAI_API_KEY` (none is sent when neither is set). Images go as
data URLs; structured output uses `response_format: json_schema`, and when the server rejects it (HTTP 400/422
mentioning response_format) the client switches to prompt-plus-repair. Retries with exponential backoff on
timeouts, connection errors, 429 and 5xx; a semaphore bounds concurrent requests.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx

from picscope.errors import ConfigError
from picscope.models.chat import BackendError, BaseChat


def parse_openai_spec(spec: str) -> tuple[str, str]:
    body = spec.split(":", 1)[1] if spec.startswith("openai:") else spec
    base, _, model = body.partition("#")
    base = base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"openai spec needs an http(s) base URL: {spec!r} (e.g. openai:http://127.0.0.1:8080/v1#model)")
    return base, model


class OpenAIChat(BaseChat):
    supports_images = True

    def __init__(self, spec: str, *, api_key: str | None = None, timeout: float = 120.0, max_concurrency: int = 4,
                 connect_timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None, **kw: Any) -> None:
        super().__init__(default_timeout=timeout, **kw)
        self.base_url, self.model_name = parse_openai_spec(spec)
        self.spec = f"openai:{self.base_url}#{self.model_name}" if self.model_name else f"openai:{self.base_url}"
        key = api_key or os.environ.get("PICSCOPE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, transport=transport,
                                    timeout=httpx.Timeout(timeout, connect=connect_timeout))
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self.connect_timeout = connect_timeout

    def _complete(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self._sem:
            try:
                r = self._client.post(f"{self.base_url}/chat/completions", json=payload,
                                      timeout=httpx.Timeout(timeout, connect=self.connect_timeout))
            except httpx.TimeoutException as exc:
                raise BackendError(f"timed out after {timeout:g}s ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise BackendError(f"{type(exc).__name__}: {exc}") from exc
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
