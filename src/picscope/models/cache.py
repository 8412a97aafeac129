"""Disk cache for model calls keyed by (backend, model, prompt, image hashes, parameters).

Disable with `PICSCOPE_MODEL_CACHE=0` (or `ResponseCache(enabled=False)`); clear with `.clear()`.
Entries are one JSON file each under `<cache_dir>/model-calls/`, written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from picscope.paths import cache_dir


def image_hash(image: Image.Image) -> str:
    """Content hash of the decoded pixels (mode + size + bytes), stable across file formats."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:32]


def image_png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def make_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    def __init__(self, root: Path | None = None, enabled: bool | None = None, namespace: str = "model-calls") -> None:
        if enabled is None:
            enabled = os.environ.get("PICSCOPE_MODEL_CACHE", "1").lower() not in ("0", "false", "no", "off")
        self.enabled = enabled
        self.root = (root or cache_dir()) / namespace

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or corrupt entry: a miss

    def put(self, key: str, value: Any) -> None:
        if not self.enabled:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(value), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # a cache that cannot write is just a slower cache

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        if not self.root.exists():
            return 0
        n = sum(1 for _ in self.root.rglob("*.json"))
        shutil.rmtree(self.root, ignore_errors=True)
        return n
