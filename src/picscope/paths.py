"""Default locations: the per-user library, caches, and the shared evaluation data root.

Caches live in exactly two places: inside each library (`thumbs/`, the web app's thumbnails) and in
one shared folder, `cache_dir()` (`$PICSCOPE_CACHE`, else the per-user cache folder, e.g.
`~/.cache/picscope`), for what does not depend on a library: model-call results, converted model
files, the assembled bundled LLM, training features. `cache_entries()` lists them all (shown by
`picscope status` and `picscope cache list`); `clear_caches()` empties them (`picscope cache clear`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

APP = "picscope"


def user_folder(kind: str) -> Path:
    """picscope's per-user `"cache"` or `"data"` folder. On Linux it follows the XDG Base Directory rule as
    platformdirs does ($XDG_CACHE_HOME / $XDG_DATA_HOME when absolute, else ~/.cache / ~/.local/share), computed
    here: importing platformdirs (and the tempfile and shutil it loads) costs ~10 ms of every search process.
    Elsewhere (macOS, Windows, Android, an unusual $HOME) platformdirs says."""
    home = os.environ.get("HOME", "")
    android = hasattr(sys, "getandroidapilevel") or bool(os.environ.get("ANDROID_DATA"))
    if sys.platform.startswith("linux") and os.path.isabs(home) and not android:
        var, default = ("XDG_CACHE_HOME", ".cache") if kind == "cache" else ("XDG_DATA_HOME", ".local/share")
        base = os.environ.get(var, "")
        return Path(base if os.path.isabs(base) else os.path.join(home, default)) / APP
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP) if kind == "cache" else platformdirs.user_data_dir(APP))


def default_library_path() -> Path:
    """`$PICSCOPE_LIBRARY`, else a per-user data directory."""
    env = os.environ.get("PICSCOPE_LIBRARY")
    if env:
        return Path(env).expanduser()
    return user_folder("data") / "library"


def cache_dir() -> Path:
    """`$PICSCOPE_CACHE`, else a per-user cache directory (model caches, assembled GGUF files, ...)."""
    path = cache_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_path() -> Path:
    """Where `cache_dir()` is, without creating it."""
    env = os.environ.get("PICSCOPE_CACHE")
    return Path(env).expanduser() if env else user_folder("cache")


@dataclass(frozen=True)
class CacheEntry:
    name: str
    path: str
    bytes: int
    scope: str  # "library" (inside the library folder) or "shared" (in cache_dir(), for every library)
    kind: str  # "results" (cheap to recompute; `cache clear`) or "models" (slow to rebuild; `cache clear --all`)
    what: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# name, location below the shared cache folder ("" = the loose files at its top), kind, description
_SHARED: list[tuple[str, str, str, str]] = [
    ("model-calls", "model-calls", "results", "answers of LLM/vision calls (PICSCOPE_MODEL_CACHE=0 turns it off)"),
    ("socratic-evidence", "socratic-evidence", "results", "image evidence of the offline vision model"),
    ("features", "features", "results", "encoder features cached by train-encoder"),
    ("eval-libraries", "eval-libraries", "results", "libraries built by the evaluation commands"),
    ("llm", "llm", "models", "the assembled bundled LLM (GGUF)"),
    ("converted-models", "", "models", "converted encoder files (ONNX, label embeddings)"),
    ("codecs", "codecs", "models", "vector codecs expanded for memory-mapping (store/codeccache.py)"),
]


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def _top_files(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_file()]
    except OSError:
        return []


def cache_entries(library: Path | None = None) -> list[CacheEntry]:
    """Every cache: the library's own (when given) and the shared ones, with their current sizes."""
    out: list[CacheEntry] = []
    if library is not None:
        from picscope.layout import LibraryLayout

        thumbs = LibraryLayout(library).thumbs
        out.append(CacheEntry("thumbnails", str(thumbs), _tree_bytes(thumbs) if thumbs.exists() else 0, "library",
                              "results", "thumbnails made by the web app"))
    root = cache_path()
    for name, sub, kind, what in _SHARED:
        if sub:
            path = root / sub
            size = _tree_bytes(path) if path.exists() else 0
        else:
            path = root
            size = sum(p.stat().st_size for p in _top_files(root))
        out.append(CacheEntry(name, str(path), size, "shared", kind, what))
    return out


def clear_caches(library: Path | None = None, *, everything: bool = False) -> list[tuple[CacheEntry, str | None]]:
    """Empty the "results" caches (and with `everything` the "models" ones too). Returns each entry handled
    with None, or the reason it could not be cleared (e.g. a read-only library)."""
    done: list[tuple[CacheEntry, str | None]] = []
    import shutil  # here: every search process imports this module

    for entry in cache_entries(library):
        if entry.kind == "models" and not everything:
            continue
        path = Path(entry.path)
        try:
            if entry.name == "converted-models":
                for p in _top_files(path):
                    p.unlink()
            elif path.exists():
                shutil.rmtree(path)
            done.append((entry, None))
        except OSError as exc:
            done.append((entry, f"{exc.strerror or exc}: {exc.filename or path}"))
    return done


def repo_root() -> Path:
    """The source checkout root when running from a checkout (src/ layout)."""
    return Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """`$PICSCOPE_DATA`, else `../shared/data` relative to the repository root."""
    env = os.environ.get("PICSCOPE_DATA")
    if env:
        return Path(env).expanduser()
    return (repo_root() / ".." / "shared" / "data").resolve()
