"""Typed configuration. One file per library (`config.toml`); every key has a default.

Spec strings select backends (see each factory): encoder
`bundled|labels|hf:<repo or path>|open-clip:<arch>/<pretrained>`, store `exact|ann|milvus:<uri>`;
llm and vision specs are resolved by `picscope.models`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

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


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)
    min_score: float | None = None


class PicscopeConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    encoder: str = "bundled"
    store: str = "exact"
    llm: str = "bundled"
    vision: str = "socratic"
    index: IndexConfig = Field(default_factory=lambda: IndexConfig())
    search: SearchConfig = Field(default_factory=lambda: SearchConfig())

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
