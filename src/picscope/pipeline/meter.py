"""Counts model calls and tokens that go through a ChatModel (the pipeline's cost report and budget)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from picscope.models.base import ChatModel, ChatResult, Message


class MeteredChat:
    """A ChatModel proxy: same behaviour, plus `calls` / `tokens` / `cached` counters."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.calls = 0
        self.tokens = 0
        self.cached = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # check(), supports_images, ... of the wrapped model
        return getattr(self.inner, name)

    def chat(self, messages: Sequence[Message], **kw: Any) -> ChatResult:
        res = self.inner.chat(messages, **kw)
        with self._lock:
            self.calls += 1
            self.cached += int(bool(res.cached))
            self.tokens += int(res.usage.prompt_tokens + res.usage.completion_tokens)
        return res

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.calls, self.tokens
