"""Default locations: the per-user library, caches, and the shared evaluation data root."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "picscope"


def default_library_path() -> Path:
    """`$PICSCOPE_LIBRARY`, else a per-user data directory."""
    env = os.environ.get("PICSCOPE_LIBRARY")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP)) / "library"


def cache_dir() -> Path:
    """`$PICSCOPE_CACHE`, else a per-user cache directory (model caches, assembled GGUF files, ...)."""
    env = os.environ.get("PICSCOPE_CACHE")
    path = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The source checkout root when running from a checkout (src/ layout)."""
    return Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """`$PICSCOPE_DATA`, else `../shared/data` relative to the repository root."""
    env = os.environ.get("PICSCOPE_DATA")
    if env:
        return Path(env).expanduser()
    return (repo_root() / ".." / "shared" / "data").resolve()
