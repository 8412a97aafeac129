"""Typed configuration. One file per library (`config.toml`); every key has a default.

Spec strings select backends (see each factory): encoder
`bundled|labels|hf:<repo or path>|open-clip:<arch>/<pretrained>`, store `exact|ann|milvus:<uri>`;
llm and vision specs are resolved by `picscope.models`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from picscope.errors import ConfigError

DEFAULT_EXCLUDES = [".*", "**/.*", "**/@eaDir/**", "@eaDir/**", "**/__MACOSX/**", "__MACOSX/**"]


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include: list[str] = Field(default_factory=list, description="glob patterns; empty = every image file")
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDES))
    batch_size: int = Field(8, ge=1, le=4096, description="images per encoder call")
    commit_every: int = Field(256, ge=1, description="images per transaction: a kill loses at most this many")
    max_pixels: int = Field(100_000_000, ge=1, description="decompression-bomb guard (width*height)")
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1)
    decode_workers: int = Field(2, ge=1, le=64)
    follow_symlinks: bool = True
    skip_raw_with_sibling: bool = Field(
        True, description="skip a camera RAW file when a same-named JPEG/PNG lies beside it (listed with a reason)"
    )


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)
    min_score: float | None = None
    rerank: bool | None = Field(None, description="re-rank a text search's top candidates with the bundled verifier "
                                "(picscope.rerank): unset = for the encoders it was measured on (bundled), true = "
                                "always, false = never")


class PipelineConfig(BaseModel):
    """The three-stage pipeline (`picscope search --stages`, `Library`-level defaults). Tuned on train/dev only."""

    model_config = ConfigDict(extra="forbid")

    stages: list[int] = Field(default_factory=lambda: [1, 2, 3], description="stages to run (1 is always run)")
    reasoner: str = Field("auto", description="stage-1/2 reasoner: llm (the library's llm), rules (no model), or "
                          "auto (llm unless it is a bundled tiny model: measured to cost recall)")
    granularities: int = Field(3, ge=1, le=3, description="target descriptions per request (core/detailed/full)")
    anchor_weight: float = Field(0.5, ge=0, le=1, description="weight of the request's own words beside the "
                                 "LLM's descriptions in stage 1 (text and dialogue requests)")
    caption_weight: float = Field(0.15, ge=0, le=1, description="weight of description→caption similarity")
    caption_style: str = Field("short", description="caption style asked of the vision model")
    pool: int = Field(100, ge=1, description="stage-1 candidates whose captions are fused")
    lazy_captions: int = Field(0, ge=0, description="captions made on demand per query (0: stored ones only)")
    verify_k: int = Field(20, ge=1, description="K: stage-1 candidates checked by stage 2")
    # Unset (None): the values the vision model declares as measured for it (`VisionModel.fusion`): the offline
    # `socratic` vision answers from the retrieval encoder itself, so its stage-2 weight is 0; the `bundled`
    # verifier's were tuned on held-out dev captions; other backends get 0.3 / 0.5 / 5.
    verify_weight: float | None = Field(None, ge=0, description="weight of mean log-odds of the expected answers "
                                        "(unset: the vision model's measured default)")
    alpha: int | None = Field(None, ge=2, description="candidates judged by stage 3 (unset: the vision model's)")
    judge_weight: float | None = Field(None, ge=0, description="weight of the judge's standardised score (unset: "
                                       "the vision model's)")
    max_propositions: int = Field(6, ge=1, le=12)
    max_model_calls: int | None = Field(None, ge=1, description="per-query budget; later stages are skipped")
    max_seconds: float | None = Field(15.0, gt=0, description="per-query time budget: model calls get at most the "
                                      "time left and none starts once it is spent (later stages are skipped)")


class ModelsConfig(BaseModel):
    """Deadlines and the circuit breaker of HTTP model backends (`openai:` LLM and vision specs)."""

    model_config = ConfigDict(extra="forbid")

    call_deadline_s: float | None = Field(None, gt=0, description="total deadline of one model call, retries "
                                          "included (unset: 5 s for a backend on loopback, 30 s otherwise)")
    breaker_failures: int = Field(3, ge=1, description="consecutive failures or timeouts that open the breaker")
    breaker_cooldown_s: float = Field(30.0, ge=0, description="how long an open breaker skips the backend")


class PicscopeConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    encoder: str = "bundled"
    store: str = "exact"
    vectors: Literal["compact", "full"] = Field(
        "compact", description="compact: store the encoder's compact codes when it ships a codec (bundled: 1,280 "
        "bytes per photo instead of 9,640); full: float32 vectors")
    llm: str = "bundled"
    vision: str = "bundled"
    index: IndexConfig = Field(default_factory=lambda: IndexConfig())
    search: SearchConfig = Field(default_factory=lambda: SearchConfig())
    pipeline: PipelineConfig = Field(default_factory=lambda: PipelineConfig())
    models: ModelsConfig = Field(default_factory=lambda: ModelsConfig())

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
        except ValidationError as exc:
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
