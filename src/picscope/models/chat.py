"""Shared ChatModel plumbing: request building, disk cache, retries with backoff, structured output with repair.

Backends implement `_complete(payload, timeout) -> dict` returning an OpenAI-style chat-completion response and
raising `BackendError` for transport/server failures. Documented fallback when every attempt fails: a `ChatResult`
with `text=""` (or the last raw text), `parsed=None` and `fallback` set to the reason; the event is logged and
counted (`picscope.models.events.counts()`). `chat()` never raises for model misbehaviour.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from picscope.models import events
from picscope.models.base import ChatResult, Message, Usage
from picscope.models.breaker import CircuitBreaker
from picscope.models.cache import ResponseCache, image_hash, image_png_bytes, make_key
from picscope.models.deadline import current_scope
from picscope.models.parsing import ParseError, parse_structured, schema_dict


class BackendError(RuntimeError):
    """A transport or server failure (timeout, connection refused, 5xx, malformed response envelope)."""

    def __init__(self, message: str, *, retryable: bool = True, schema_unsupported: bool = False,
                 deadline: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable and not deadline  # a call cut at its deadline is never retried
        self.schema_unsupported = schema_unsupported
        self.deadline = deadline


def data_url(image: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(image_png_bytes(image)).decode("ascii")


def to_openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}]
            parts += [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in m.images]
            out.append({"role": m.role, "content": parts})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


SCHEMA_INSTRUCTION = (
    "Reply with a single JSON value and nothing else. It must validate against this JSON schema:\n{schema}"
)
REPAIR_INSTRUCTION = "Your previous reply could not be used ({error}). Reply again with only valid JSON for the schema."


@dataclass
class _Attempts:
    """What one call's attempts have learnt so far."""

    native: bool  # ask for the schema natively (until the backend says it cannot)
    last_text: str = ""  # the last unparsable answer (shown to the model in the repair request)
    last_error: str = ""
    usage: Usage = field(default_factory=Usage)


class BaseChat:
    spec: str = ""
    model_name: str = ""
    supports_schema: bool = True  # native JSON-schema constrained decoding
    supports_images: bool = False

    def __init__(self, *, retries: int = 2, backoff: float = 0.5, cache: ResponseCache | None = None,
                 default_timeout: float = 120.0, breaker: CircuitBreaker | None = None) -> None:
        self.retries = retries
        self.backoff = backoff
        self.cache = cache if cache is not None else ResponseCache()
        self.default_timeout = default_timeout  # the total deadline of one chat() call, retries included
        self.breaker = breaker  # skip the backend for a cool-down after consecutive failures (None: never)

    # -- backend hook -------------------------------------------------------------------------------
    def _complete(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    def _schema_payload(self, payload: dict[str, Any], schema: dict[str, Any]) -> None:
        payload["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "answer", "schema": schema, "strict": True}}

    # -- public -------------------------------------------------------------------------------------
    def chat(
        self,
        messages: Sequence[Message],
        *,
        schema: Any = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        stop: Sequence[str] | None = None,
        timeout: float | None = None,
        logprobs: int = 0,
    ) -> ChatResult:
        timeout = timeout or self.default_timeout
        sdict = schema_dict(schema) if schema is not None else None
        key = make_key({
            "backend": self.spec, "model": self.model_name,
            "messages": [(m.role, m.content, [image_hash(i) for i in m.images]) for m in messages],
            "schema": sdict, "temperature": temperature, "max_tokens": max_tokens, "stop": list(stop or []),
            "logprobs": logprobs,
        })
        hit = self.cache.get(key) if temperature == 0 else None
        if hit is not None:
            res = self._result_from_cache(hit, schema)
            if res is not None:
                return res
        refused = self._refusal()
        if refused is not None:
            return self._fallback(refused)
        result = self._chat_uncached(messages, schema, sdict, temperature, max_tokens, stop, timeout, logprobs)
        if result.fallback is not None:
            self._note(result.fallback)
        if result.fallback is None and temperature == 0:
            self.cache.put(key, {"text": result.text, "usage": [result.usage.prompt_tokens,
                                                                  result.usage.completion_tokens],
                                 "logprobs": result.logprobs})
        return result

    def _refusal(self) -> str | None:
        """Why this call must not go out at all: the request's budget is spent or it was cancelled, or the
        backend's circuit breaker is open."""
        scope = current_scope()
        why = scope.spent() if scope is not None else None
        if why is None and self.breaker is not None:
            why = self.breaker.blocked()
        return why

    def _fallback(self, reason: str) -> ChatResult:
        events.record("fallback.skipped", f"{self.spec}: {reason}")
        self._note(f"skipped: {reason}")
        return ChatResult(text="", parsed=None, backend=self.spec, fallback=f"skipped: {reason}"[:500])

    def _note(self, fallback: str) -> None:
        scope = current_scope()
        if scope is not None:
            scope.note(f"{self.spec or 'model'} fell back ({fallback[:240]})")

    def _time_left(self, call_end: float) -> float:
        left = call_end - time.monotonic()
        scope = current_scope()
        scope_left = scope.time_left() if scope is not None else None
        return left if scope_left is None else min(left, scope_left)

    def _result_from_cache(self, hit: dict[str, Any], schema: Any) -> ChatResult | None:
        parsed = None
        if schema is not None:
            try:
                parsed = parse_structured(hit["text"], schema)
            except (ParseError, KeyError):
                return None
        return ChatResult(text=hit["text"], parsed=parsed, usage=Usage(*hit.get("usage", [0, 0])),
                          logprobs=hit.get("logprobs"), backend=self.spec, cached=True)

    def _chat_uncached(self, messages: Sequence[Message], schema: Any, sdict: dict[str, Any] | None,
                       temperature: float, max_tokens: int, stop: Sequence[str] | None, timeout: float,
                       logprobs: int) -> ChatResult:
        msgs = to_openai_messages(messages)
        state = _Attempts(native=self.supports_schema)
        call_end = time.monotonic() + timeout  # one deadline for the whole call, retries included
        for attempt in range(self.retries + 1):
            left = self._time_left(call_end)
            if left <= (0.0 if attempt == 0 else 0.05):
                state.last_error = state.last_error or f"no time left of the {timeout:.3g} s deadline"
                break
            payload: dict[str, Any] = {"messages": list(msgs), "temperature": temperature, "max_tokens": max_tokens}
            if self.model_name:
                payload["model"] = self.model_name
            if stop:
                payload["stop"] = list(stop)
            if logprobs:
                payload["logprobs"] = True
                payload["top_logprobs"] = int(logprobs)
            if sdict is not None:
                self._ask_for_schema(payload, sdict, state, attempt)
            try:
                text, lps, u = _unpack(self._complete(payload, left))
            except BackendError as exc:
                if self._may_retry(exc, state, attempt, call_end):
                    continue
                break
            result = self._answer(text, lps, u, schema, state, attempt)
            if result is not None:
                return result
        reason = "unparsable" if state.last_text else "error"
        events.record(f"fallback.{reason}", f"{self.spec}: {state.last_error}")
        return ChatResult(text=state.last_text, parsed=None, usage=state.usage, backend=self.spec,
                          fallback=f"{reason}: {state.last_error}"[:500])

    def _ask_for_schema(self, payload: dict[str, Any], sdict: dict[str, Any], state: _Attempts, attempt: int) -> None:
        """The schema natively, or as a system instruction; after an unparsable answer, a repair request."""
        if state.native:
            self._schema_payload(payload, sdict)
        else:
            payload["messages"] = [{"role": "system", "content": SCHEMA_INSTRUCTION.format(
                schema=json.dumps(sdict))}] + payload["messages"]
        if attempt > 0 and state.last_text:
            payload["messages"] = payload["messages"] + [
                {"role": "assistant", "content": state.last_text[:2000]},
                {"role": "user", "content": REPAIR_INSTRUCTION.format(error=state.last_error[:300])}]

    def _may_retry(self, exc: BackendError, state: _Attempts, attempt: int, call_end: float) -> bool:
        """Record a backend failure; whether to try again (after the backoff, when it fits the deadline)."""
        state.last_error = str(exc)
        if exc.schema_unsupported and state.native:
            state.native = False
            events.record("schema_unsupported", f"{self.spec}: {exc}; falling back to prompt+repair")
            return True
        events.record("backend_error", f"{self.spec} attempt {attempt + 1}: {exc}")
        if exc.retryable or exc.deadline:
            self._failed(str(exc))
        if not exc.retryable or self._refusal() is not None:
            return False
        pause = self.backoff * (2**attempt)
        if attempt < self.retries:
            if self._time_left(call_end) <= pause:
                return False  # no time for another attempt within the deadline
            scope = current_scope()
            if scope is not None:
                scope.cancelled.wait(pause)  # a cancelled request does not sit out the backoff
            else:
                time.sleep(pause)
        return True

    def _answer(self, text: str, lps: Any, u: Usage, schema: Any, state: _Attempts, attempt: int) -> ChatResult | None:
        """The result of an answer that arrived, or None to try again (empty text, or unparsable for the schema)."""
        if self.breaker is not None:
            self.breaker.success()
        state.usage = Usage(state.usage.prompt_tokens + u.prompt_tokens,
                            state.usage.completion_tokens + u.completion_tokens)
        if schema is None:
            if not text.strip() and attempt < self.retries:
                state.last_error = "empty answer"
                events.record("empty_answer", self.spec)
                return None
            return ChatResult(text=text, usage=state.usage, logprobs=lps, backend=self.spec,
                              fallback=None if text.strip() else "empty")
        try:
            parsed = parse_structured(text, schema)
            return ChatResult(text=text, parsed=parsed, usage=state.usage, logprobs=lps, backend=self.spec)
        except ParseError as exc:
            state.last_text, state.last_error = text, str(exc)
            events.record("parse_error", f"{self.spec} attempt {attempt + 1}: {exc}")
            return None

    def _failed(self, error: str) -> None:
        if self.breaker is not None:
            self.breaker.failure(error)

    def check(self) -> str:
        """A live check call; returns a short detail string or raises BackendError."""
        res = self._chat_uncached([Message("user", "Reply with the word: ok")], None, None, 0.0, 4, None, 60.0, 0)
        if res.fallback:
            raise BackendError(res.fallback)
        return f"{self.model_name or self.spec} answered {res.text.strip()[:20]!r}"


def _unpack(resp: Any) -> tuple[str, list[dict[str, float]] | None, Usage]:
    try:
        choice = resp["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BackendError(f"malformed response envelope: {str(resp)[:200]}") from exc
    if not isinstance(text, str):
        text = json.dumps(text)
    lps = None
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if content:
        lps = [{t["token"]: float(t["logprob"]) for t in (c.get("top_logprobs") or [])} or
               {c["token"]: float(c["logprob"])} for c in content]
    u = resp.get("usage") or {}
    return text, lps, Usage(int(u.get("prompt_tokens", 0) or 0), int(u.get("completion_tokens", 0) or 0))
