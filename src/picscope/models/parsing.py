"""Robust parsing of model output: JSON extraction and repair, schema validation, P(yes) from log-probabilities."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel, ValidationError

REFUSAL_RE = re.compile(r"\b(i can(?:no|')t|i am unable|i'm unable|as an ai|i cannot help|i won't)\b", re.I)


class ParseError(ValueError):
    """The output could not be turned into a valid object; the message says why (fed back to repair prompts)."""


def schema_dict(schema: Any) -> dict[str, Any]:
    """A JSON-schema dict from a pydantic model class or a dict."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, dict):
        return schema
    raise TypeError(f"schema must be a pydantic model class or a JSON-schema dict, not {type(schema).__name__}")


def _close_truncated(text: str) -> str:
    """Close unterminated strings/brackets of a truncated JSON document (best effort)."""
    stack: list[str] = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = text + ('"' if in_str else "")
    out = re.sub(r",\s*$", "", out)
    out = re.sub(r':\s*$', ": null", out)
    return out + "".join(reversed(stack))


def extract_json(text: str) -> Any:
    """The first JSON value in `text`: handles code fences, prose around it, trailing commas, truncation."""
    if text is None or not text.strip():
        raise ParseError("empty answer")
    t = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)(?:```|$)", t, re.S)
    if fence:
        t = fence.group(1).strip()
    try:
        return json.loads(t)
    except ValueError:
        pass
    starts = [i for i in (t.find("{"), t.find("[")) if i >= 0]
    if not starts:
        if REFUSAL_RE.search(t):
            raise ParseError("the model refused")
        raise ParseError("no JSON object in the answer")
    body = t[min(starts):]
    body = re.sub(r",\s*([}\]])", r"\1", body)
    for candidate in (body, _close_truncated(body)):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    # trailing prose after a complete object: decode the prefix only
    try:
        obj, _ = json.JSONDecoder().raw_decode(body)
        return obj
    except ValueError as exc:
        raise ParseError(f"malformed JSON: {exc}") from exc


def validate(obj: Any, schema: Any) -> Any:
    """Validate against a pydantic model (returns the instance) or a JSON-schema dict (returns the dict)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(obj)
        except ValidationError as exc:
            raise ParseError(f"wrong fields or types: {exc.errors()[:3]}") from exc
    sd = schema_dict(schema)
    try:
        import jsonschema
    except ImportError:  # minimal check without the optional validator: an object with the required keys
        required = sd.get("required", [])
        if sd.get("type") == "object" and (not isinstance(obj, dict) or any(k not in obj for k in required)):
            raise ParseError("wrong fields or types: missing required keys") from None
        return obj
    try:
        jsonschema.validate(obj, sd)
    except jsonschema.ValidationError as exc:
        raise ParseError(f"wrong fields or types: {exc.message}") from exc
    return obj


def parse_structured(text: str, schema: Any) -> Any:
    return validate(extract_json(text), schema)


def p_yes_from_top_logprobs(top: list[dict[str, float]] | None) -> float | None:
    """P(yes) / (P(yes)+P(no)) from the first generated token's top log-probabilities, or None if neither appears."""
    if not top:
        return None
    first = top[0]
    yes = sum(math.exp(lp) for tok, lp in first.items() if tok.strip().lower() in ("yes", "y", "true"))
    no = sum(math.exp(lp) for tok, lp in first.items() if tok.strip().lower() in ("no", "n", "false"))
    if yes + no <= 0:
        return None
    return yes / (yes + no)


def yes_no(text: str) -> float | None:
    """1.0 / 0.0 for an answer that starts with yes/no, None otherwise."""
    m = re.match(r"\W*(yes|no|true|false)\b", text or "", re.I)
    if not m:
        return None
    return 1.0 if m.group(1).lower() in ("yes", "true") else 0.0
