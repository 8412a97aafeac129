"""`gguf:<path>`: an in-process llama.cpp model via the prebuilt `xllamacpp` wheel.

Threads default to 1 (llama.cpp's OpenMP threads spin-wait; on a shared 2-core box one thread is faster);
set `n_threads=` or `PICSCOPE_LLM_THREADS`. JSON-schema constrained decoding is used for structured output.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any

from picscope.errors import ConfigError
from picscope.models.chat import BackendError, BaseChat

_LIVE: weakref.WeakSet[GgufChat] = weakref.WeakSet()  # models whose llama.cpp server is running


def close_all() -> None:
    """Stop every running llama.cpp server now (it logs while shutting down: the CLI does this while the
    engine log still captures fd 2, instead of at interpreter exit). A later call starts it again."""
    for model in list(_LIVE):
        model.close()


class GgufChat(BaseChat):
    def __init__(self, path: str | Path, *, n_threads: int | None = None, n_ctx: int = 4096,
                 spec: str | None = None, provenance: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"gguf model not found: {self.path}")
        with self.path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ConfigError(f"{self.path} is not a GGUF file")
        self.n_threads = int(n_threads or os.environ.get("PICSCOPE_LLM_THREADS", "1"))
        self.n_ctx = n_ctx
        self.spec = spec or f"gguf:{self.path}"
        self.model_name = self.path.name
        self.provenance = provenance or {"path": str(self.path)}
        self._server: Any = None
        self._lock = threading.Lock()

    def _ensure(self) -> Any:
        if self._server is None:
            import xllamacpp as xlc

            p = xlc.CommonParams()
            p.model.path = str(self.path)
            p.n_ctx = self.n_ctx
            p.cpuparams.n_threads = self.n_threads
            p.cpuparams_batch.n_threads = self.n_threads
            p.hostnames = ["127.0.0.1"]
            p.port = 0
            try:
                self._server = xlc.Server(p)
            except Exception as exc:
                raise ConfigError(f"could not load {self.path}: {exc}") from exc
            _LIVE.add(self)
        return self._server

    def _schema_payload(self, payload: dict[str, Any], schema: dict[str, Any]) -> None:
        payload["json_schema"] = schema

    def _complete(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        payload = dict(payload)
        payload.pop("model", None)
        with self._lock:
            server = self._ensure()
            try:
                resp = server.handle_chat_completions(payload)
            except ValueError as exc:
                raise BackendError(f"llama.cpp rejected the request: {exc}", retryable=False) from exc
        if isinstance(resp, dict) and "error" in resp and "choices" not in resp:
            raise BackendError(f"llama.cpp error: {resp['error']}", retryable=False)
        return dict(resp)

    def close(self) -> None:
        with self._lock:
            self._server = None
        _LIVE.discard(self)
