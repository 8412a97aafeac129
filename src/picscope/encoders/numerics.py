"""Small numpy kernels shared by the torch-free model runtimes (scipy is not imported at query time)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import struct
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

# Numerical Recipes' `erfcc` (a Chebyshev fit of erfc): fractional error < 1.2e-7 everywhere, i.e. exact to float32
# precision (Abramowitz & Stegun 7.1.26 would give only 1.5e-7 absolute). Measured against math.erf in the tests.
_ERFC_COEF = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
              0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, element-wise, in the input's float precision (float32 in, float32 out)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    z = np.abs(x)
    t = 1 / (1 + x.dtype.type(0.5) * z)
    poly = np.full_like(t, _ERFC_COEF[-1])
    for c in _ERFC_COEF[-2::-1]:
        poly *= t
        poly += x.dtype.type(c)
    erfc = t * np.exp(poly - z * z)
    return np.copysign(1 - erfc, x)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as torch.nn.functional.gelu's default: 0.5·x·(1 + erf(x/√2)); float32 out."""
    x = np.asarray(x, dtype=np.float32)
    return (0.5 * x * (1 + erf(x * np.float32(1 / np.sqrt(2.0))))).astype(np.float32, copy=False)


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "F64": np.float64}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file as a read-only numpy view of a memory map (nothing is copied, so
    only the rows a query touches are read from disk)."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (header_len,) = struct.unpack("<Q", mm[:8])
    header: dict[str, Any] = json.loads(mm[8 : 8 + header_len])
    base = 8 + header_len
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        arr = np.frombuffer(mm, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start)
        out[name] = arr.reshape(info["shape"])
    return out


class _Restore:
    def __init__(self, blas: _NumpyOpenBlas, threads: int) -> None:
        self._blas, self._threads = blas, threads

    def restore_original_limits(self) -> None:
        self._blas.set_threads(self._threads)


class _NumpyOpenBlas:
    """numpy's bundled OpenBLAS (numpy ≥ 2 wheels: `numpy.libs/libscipy_openblas64_*.so`), driven through its own
    C API: the same limit threadpoolctl sets, without its import and library scan (~11 ms of every process, about
    a twentieth of a text search's)."""

    def __init__(self, handle: ctypes.CDLL) -> None:
        self._get = handle.scipy_openblas_get_num_threads64_
        self._set = handle.scipy_openblas_set_num_threads64_
        self._get.restype = ctypes.c_int
        self._get.argtypes = []
        self._set.restype = None
        self._set.argtypes = [ctypes.c_int]

    def threads(self) -> int:
        return int(self._get())

    def set_threads(self, n: int) -> None:
        self._set(int(n))

    def limit(self, limits: int, user_api: str = "blas") -> _Restore:
        before = self.threads()
        self.set_threads(limits)
        return _Restore(self, before)


def _numpy_openblas() -> _NumpyOpenBlas | None:
    folder = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    libs = sorted(folder.glob("libscipy_openblas64_*.so")) if folder.is_dir() else []
    if len(libs) != 1:
        return None
    try:  # already loaded by numpy: dlopen hands back the same library
        return _NumpyOpenBlas(ctypes.CDLL(str(libs[0])))
    except (OSError, AttributeError):
        return None


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    fast = _numpy_openblas()
    if fast is not None:
        return fast
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a base dependency
        return None
    return ThreadpoolController()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_restore: Any = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the enclosed numpy matrix products on one BLAS thread. The limit is process-wide, so concurrent users
    (server threads) share it: the first one in sets it, the last one out restores the previous setting."""
    global _blas_users, _blas_restore
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_restore = controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_restore is not None:
                _blas_restore.restore_original_limits()
                _blas_restore = None
