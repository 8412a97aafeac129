"""Typed configuration. One file per library (`config.toml`); every key has a default.

Spec strings select backends (see each factory): encoder
`bundled|labels|hf:<repo or path>|open-clip:<arch>/<pretrained>`, store `exact|ann|milvus:<uri>`;
llm and vision specs are resolved by `picscope.models`.

The sections are plain dataclasses checked by `Section.model_validate` (types, bounds, unknown keys), not
pydantic models: every command opens a library and so reads this file, and importing pydantic and building the
models cost 0.16-0.19 s of a 0.6 s `picscope search` (see README, Benchmarks). They keep pydantic's method names
(`model_validate`, `model_copy`, `model_dump`) so that callers read the same.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from picscope.errors import ConfigError

DEFAULT_EXCLUDES = [".*", "**/.*", "**/@eaDir/**", "@eaDir/**", "**/__MACOSX/**", "__MACOSX/**"]

S = TypeVar("S", bound="Section")


class InvalidConfig(ValueError):
    """One or more keys of a configuration table are wrong (`PicscopeConfig.load` turns it into a ConfigError)."""


def rule(default: Any, *, ge: float | None = None, le: float | None = None, gt: float | None = None,
         description: str = "") -> Any:
    """A field with bounds (checked by `Section.model_validate`) and a description (for readers of this file)."""
    return field(default=default, metadata={"ge": ge, "le": le, "gt": gt, "description": description})


def _check(value: Any, hint: Any, where: str, errors: list[str]) -> Any:
    """`value` as type `hint` (read leniently, see `_lax`), or an error noted."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            trial: list[str] = []
            checked = _check(value, option, where, trial)
            if not trial:
                return checked
        errors.append(f"{where}: expected {_name(hint)}, got {value!r}")
        return value
    if origin is Literal:
        if value not in typing.get_args(hint):
            errors.append(f"{where}: expected one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {value!r}")
            return value
        (item,) = typing.get_args(hint)
        return [_check(v, item, f"{where}[{i}]", errors) for i, v in enumerate(value)]
    if isinstance(hint, type) and issubclass(hint, Section):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a table, got {value!r}")
            return value
        return hint._from(value, f"{where}.", errors)
    if hint not in (bool, int, float, str):
        raise TypeError(f"unsupported configuration type {hint!r}")
    converted = _lax(value, hint)
    if converted is _BAD:
        errors.append(f"{where}: expected {_name(hint)}, got {value!r}")
        return value
    return converted


_BAD = object()
_TRUE = {"true", "yes", "on", "1", "t", "y"}
_FALSE = {"false", "no", "off", "0", "f", "n"}
_INTEGRAL = re.compile(r"[+-]?[0-9][0-9_]*(\.0*)?")


def _lax(value: Any, hint: type) -> Any:
    """`value` as a `hint` scalar the way pydantic's lax mode reads it (the rules this file had before it stopped
    using pydantic): an int or a numeric string for a float, an integral float or an integer string for an int,
    "true"/"no"/1/0... for a bool. `_BAD` when it cannot be read. One deliberate difference: a bool is not a
    number here (pydantic read `k = true` as 1)."""
    if hint is str:
        return value if isinstance(value, str) else _BAD
    if hint is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if isinstance(value, str | int) else None
        return True if word in _TRUE else False if word in _FALSE else _BAD
    if isinstance(value, bool):
        return _BAD
    number: Any = value
    if isinstance(value, str):
        try:
            text = value.strip()
            if hint is int and not _INTEGRAL.fullmatch(text):
                return _BAD
            number = float(text) if hint is float else int(text.split(".")[0])
        except ValueError:
            return _BAD
    if hint is float:
        return float(number) if isinstance(number, int | float) else _BAD
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number if isinstance(number, int) else _BAD


def _name(hint: Any) -> str:
    return " or ".join(_name(h) for h in typing.get_args(hint)) if typing.get_args(hint) else \
        "none" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _bounds(value: Any, meta: Any, where: str, errors: list[str]) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    for key, bad, words in (("ge", value < (meta.get("ge") or 0), "greater than or equal to"),
                            ("le", value > (meta.get("le") or 0), "less than or equal to"),
                            ("gt", value <= (meta.get("gt") or 0), "greater than")):
        if meta.get(key) is not None and bad:
            errors.append(f"{where}: should be {words} {meta[key]}, got {value!r}")


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The configuration keys of a section (not the root's `extra`, which holds the unknown tables)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("extra")]


class Section:
    """A configuration table: a dataclass whose fields are checked on `model_validate`."""

    extra_allowed: ClassVar[bool] = False  # keep unknown keys (the root: `[ann]`, `[milvus]` store tables)

    @classmethod
    def _from(cls: type[S], data: dict[str, Any], prefix: str, errors: list[str]) -> S:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in _fields(cls)}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            f = fields.get(key)
            if f is None:
                if cls.extra_allowed:
                    extra[key] = value
                else:
                    errors.append(f"{prefix}{key}: unknown key")
                continue
            before = len(errors)
            checked = _check(value, hints[key], prefix + key, errors)
            if len(errors) == before:
                _bounds(checked, f.metadata, prefix + key, errors)
            values[key] = checked
        if len(errors):
            return cls()
        obj = cls(**values)
        if cls.extra_allowed:
            obj.extra = extra  # type: ignore[attr-defined]
        return obj

    @classmethod
    def model_validate(cls: type[S], data: Any) -> S:
        """Check `data` (a dict, as read from TOML); raises `InvalidConfig` listing every wrong key."""
        if not isinstance(data, dict):
            raise InvalidConfig(f"expected a table, got {data!r}")
        errors: list[str] = []
        obj = cls._from(data, "", errors)
        if errors:
            raise InvalidConfig(f"{len(errors)} error(s):\n" + "\n".join(f"  {e}" for e in errors))
        return obj

    def model_copy(self: S, update: dict[str, Any] | None = None) -> S:
        """A shallow copy, with `update` applied (unchecked, as in pydantic)."""
        copy = dataclasses.replace(self, **(update or {}))  # type: ignore[type-var]
        if self.extra_allowed:
            copy.extra = dict(getattr(self, "extra", {}))  # type: ignore[attr-defined]
        return copy

    def model_dump(self, *, exclude_none: bool = False) -> dict[str, Any]:
        def dump(value: Any) -> Any:
            if isinstance(value, Section):
                return value.model_dump(exclude_none=exclude_none)
            return list(value) if isinstance(value, list) else value

        data = {f.name: dump(getattr(self, f.name)) for f in _fields(type(self))}
        if exclude_none:
            data = {k: v for k, v in data.items() if v is not None}
        data.update(getattr(self, "extra", {}))
        return data


@dataclass
class IndexConfig(Section):
    include: list[str] = field(default_factory=list, metadata={"description": "glob patterns; empty = every image "
                                                               "file"})
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDES))
    batch_size: int = rule(8, ge=1, le=4096, description="images per encoder call")
    commit_every: int = rule(256, ge=1, description="images per transaction: a kill loses at most this many")
    max_pixels: int = rule(100_000_000, ge=1, description="decompression-bomb guard (width*height)")
    max_file_bytes: int = rule(512 * 1024 * 1024, ge=1)
    decode_workers: int = rule(2, ge=1, le=64)
    follow_symlinks: bool = True
    skip_raw_with_sibling: bool = rule(
        True, description="skip a camera RAW file when a same-named JPEG/PNG lies beside it (listed with a reason)"
    )


@dataclass
class SearchConfig(Section):
    k: int = rule(10, ge=1)
    min_score: float | None = None
    querybank: bool = rule(True, description="text searches rank by score minus each photo's query-bank "
                           "normaliser when the encoder ships a bank (bundled: Flickr8k dev R@1 26.3 → 28.2)")
    rerank: bool | None = rule(None, description="re-rank a text search's top candidates with the bundled verifier "
                               "(picscope.rerank): unset = for the encoders it was measured on (bundled), true = "
                               "always, false = never")


@dataclass
class PipelineConfig(Section):
    """The three-stage pipeline (`picscope search --stages`, `Library`-level defaults). Tuned on train/dev only."""

    stages: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"description": "stages to run (1 is always "
                                                                                         "run)"})
    reasoner: str = rule("auto", description="stage-1/2 reasoner: llm (the library's llm), rules (no model), or "
                         "auto (llm unless it is a bundled tiny model: measured to cost recall)")
    granularities: int = rule(3, ge=1, le=3, description="target descriptions per request (core/detailed/full)")
    anchor_weight: float = rule(0.5, ge=0, le=1, description="weight of the request's own words beside the "
                                "reasoner's descriptions in stage 1 (text and dialogue requests; 0: descriptions only)")
    caption_weight: float = rule(0.15, ge=0, le=1, description="weight of description→caption similarity")
    caption_style: str = rule("short", description="caption style asked of the vision model")
    pool: int = rule(100, ge=1, description="stage-1 candidates whose captions are fused")
    lazy_captions: int = rule(0, ge=0, description="captions made on demand per query (0: stored ones only)")
    verify_k: int = rule(20, ge=1, description="K: stage-1 candidates checked by stage 2")
    # Unset (None): the values the vision model declares as measured for it (`VisionModel.fusion`): the offline
    # `socratic` vision answers from the retrieval encoder itself, so its stage-2 weight is 0; the `bundled`
    # verifier's were tuned on held-out dev captions; other backends get 0.3 / 0.5 / 5.
    verify_weight: float | None = rule(None, ge=0, description="weight of mean log-odds of the expected answers "
                                       "(unset: the vision model's measured default)")
    alpha: int | None = rule(None, ge=2, description="candidates judged by stage 3 (unset: the vision model's)")
    judge_weight: float | None = rule(None, ge=0, description="weight of the judge's standardised score (unset: "
                                      "the vision model's)")
    max_propositions: int = rule(6, ge=1, le=12)
    max_model_calls: int | None = rule(None, ge=1, description="per-query budget; later stages are skipped")
    max_seconds: float | None = rule(15.0, gt=0, description="per-query time budget: model calls get at most the "
                                     "time left and none starts once it is spent (later stages are skipped)")


@dataclass
class ModelsConfig(Section):
    """Deadlines and the circuit breaker of HTTP model backends (`openai:` LLM and vision specs)."""

    call_deadline_s: float | None = rule(None, gt=0, description="total deadline of one model call, retries "
                                         "included (unset: 5 s for a backend on loopback, 30 s otherwise)")
    breaker_failures: int = rule(3, ge=1, description="consecutive failures or timeouts that open the breaker")
    breaker_cooldown_s: float = rule(30.0, ge=0, description="how long an open breaker skips the backend")


@dataclass
class PicscopeConfig(Section):
    extra_allowed: ClassVar[bool] = True

    encoder: str = "bundled"
    store: str = "exact"
    vectors: Literal["compact", "full"] = rule(
        "compact", description="compact: store the encoder's compact codes when it ships a codec (bundled: 1,280 "
        "bytes per photo instead of 9,640); full: float32 vectors")
    llm: str = "bundled"
    vision: str = "bundled"
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, metadata={"extra": True})

    @classmethod
    def load(cls, path: Path) -> PicscopeConfig:
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except InvalidConfig as exc:
            raise ConfigError(f"{path}: invalid configuration:\n{exc}") from exc

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(dump_toml(self.model_dump(exclude_none=True)), encoding="utf-8")
        tmp.replace(path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Write a two-level dict (scalars, lists, and one level of tables) as TOML."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                raise ConfigError("nested tables deeper than one level are not supported")
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
