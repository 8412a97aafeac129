"""Per-store settings read from the library's `config.toml` (`[ann]`, `[milvus]` tables).

Store builders get `(arg, folder, dim)` with `folder = <library>/store`; the library's configuration
sits next to it. `PicscopeConfig` keeps unknown tables (`extra="allow"`), so these sections need no
change to the core config model: each store validates its own table with its own pydantic model.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from picscope.errors import ConfigError
from picscope.layout import CONFIG as CONFIG_NAME

M = TypeVar("M", bound=BaseModel)


def load_section(folder: Path, section: str, model: type[M]) -> M:
    """The `[section]` table of the config next to the store `folder`, validated (defaults when absent)."""
    path = Path(folder).parent / CONFIG_NAME
    data: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        data = table
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid [{section}] settings:\n{exc}") from exc
