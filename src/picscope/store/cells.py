"""`cells/`: the verifier's cell features of each indexed photo, so that re-ranking a search reads them from disk
instead of decoding the photo and running the image network again.

What is kept per photo is what `Verifier.cells` returns: 50 unit vectors of the verifier's width d (the 7×7
EfficientNet-Lite0 head cells projected by the verifier's PCA, and their mean), as int8 codes with one float16
scale per vector: row r is `codes[r] · scale[r] / 127`, within `scale[r] / 254` of the float32 vector in every
element (`quantize`, `dequantize`). With d = 256 that is 12,800 + 100 = 12,900 bytes a photo.

Files: `cells/rows/` is an exact store of int8 rows (`picscope.store.exact.ExactStore`: codes then the scales'
bytes; a row is live once its id is durable, so a kill leaves each row old or new), and `cells/format.json` names
the verifier (its weights' digest) and the layout. Cells made by another verifier are worthless: a writable store
drops them when it is opened, a read-only one reads as empty. Rows are keyed by catalog file id and written by the
indexer next to the file's vector (before the catalog commits); `Library.reconcile` drops rows without a catalog
row, exactly as for vectors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from picscope.store.exact import ExactStore

FORMAT = "cells-int8-rowscale-1"
FORMAT_FILE = "format.json"
ROWS_DIR = "rows"


def row_bytes(rows: int, dim: int) -> int:
    """Bytes a photo takes: int8 codes plus one float16 scale per vector."""
    return rows * dim + 2 * rows


def quantize(cells: np.ndarray) -> np.ndarray:
    """(n, rows, d) float32 -> (n, row_bytes) int8: per-vector symmetric int8 codes, then the float16 scales."""
    c = np.asarray(cells, np.float32)
    n, rows, dim = c.shape
    scale = np.abs(c).max(axis=2).astype(np.float16).astype(np.float32)  # what is stored is what dequantizes
    scale = np.where(scale > 0, scale, np.float32(1.0))
    codes = np.clip(np.rint(c * (127.0 / scale[..., None])), -127, 127).astype(np.int8)
    scales = scale.astype(np.float16).view(np.int8).reshape(n, 2 * rows)
    return np.concatenate([codes.reshape(n, rows * dim), scales], axis=1)


def dequantize(packed: np.ndarray, rows: int, dim: int) -> np.ndarray:
    """(n, row_bytes) int8 -> (n, rows, d) float32."""
    p = np.ascontiguousarray(packed, np.int8)
    n = len(p)
    codes = p[:, : rows * dim].reshape(n, rows, dim).astype(np.float32)
    scale = p[:, rows * dim :].copy().view(np.float16).astype(np.float32).reshape(n, rows)
    return codes * (scale[..., None] / np.float32(127.0))


class _Rows(ExactStore):
    grow_rows = 256  # ~3.3 MB a growth at 12,900 bytes a row (the vector store's 4,096 would be 53 MB)


def summary(folder: Path) -> tuple[str, int, int] | None:
    """(verifier name, photos with cells, bytes a photo) of a cell folder, read without loading the verifier (for
    `picscope status`); None when the library keeps no cells."""
    folder = Path(folder)
    try:
        fmt = json.loads((folder / FORMAT_FILE).read_text(encoding="utf-8"))
        model, rows, dim = str(fmt["model"]), int(fmt["rows"]), int(fmt["dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (folder / ROWS_DIR).exists():
        return model, 0, row_bytes(rows, dim)
    store = _Rows(folder / ROWS_DIR, row_bytes(rows, dim), np.int8, readonly=True)
    try:
        return model, len(store), row_bytes(rows, dim)
    finally:
        store.close()


class CellStore:
    """Per-photo cell features, keyed by catalog file id. Thread-safe (the exact store's lock)."""

    def __init__(self, folder: Path, model: str, rows: int, dim: int, *, readonly: bool = False) -> None:
        self.folder = Path(folder)
        self.model, self.rows, self.dim = model, int(rows), int(dim)
        self.readonly = readonly
        self.stale = False  # made by another verifier and read-only: nothing here is usable
        expected = self._format()
        found = self._read_format()
        if found != expected and found is not None:
            if readonly:
                self.stale = True
            else:
                shutil.rmtree(self.folder / ROWS_DIR, ignore_errors=True)
        if not readonly and found != expected:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f"{FORMAT_FILE}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
            tmp.replace(self.folder / FORMAT_FILE)
        self._store = _Rows(self.folder / ROWS_DIR, row_bytes(self.rows, self.dim), np.int8, readonly=readonly)

    def _format(self) -> dict[str, object]:
        return {"format": FORMAT, "model": self.model, "rows": self.rows, "dim": self.dim}

    def _read_format(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.folder / FORMAT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: treated as another format
        return data if isinstance(data, dict) else {}

    @property
    def bytes_per_photo(self) -> int:
        return row_bytes(self.rows, self.dim)

    def put(self, ids: np.ndarray, cells: np.ndarray) -> None:
        """Store (n, rows, d) float32 cells for file ids (replacing what was there)."""
        ids = np.asarray(ids, np.int64).ravel()
        if len(ids):
            self._store.upsert(ids, quantize(cells))

    def put_packed(self, ids: np.ndarray, packed: np.ndarray) -> None:
        """Store rows as `get_packed` returned them (a copied file reuses its source's cells as they are)."""
        ids = np.asarray(ids, np.int64).ravel()
        if len(ids):
            self._store.upsert(ids, packed)

    def get_packed(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """The stored rows of those ids that have cells (missing ids are left out)."""
        ids = np.asarray(ids, np.int64).ravel()
        if self.stale or not len(ids):
            return {}
        try:
            return dict(zip(ids.tolist(), self._store.get(ids), strict=True))
        except KeyError:
            out: dict[int, np.ndarray] = {}
            for i in ids.tolist():
                with contextlib.suppress(KeyError):
                    out[i] = self._store.get(np.array([i], np.int64))[0]
            return out

    def get(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """{file id: (rows, d) float32 cells} for those ids that have cells."""
        packed = self.get_packed(ids)
        if not packed:
            return {}
        cells = dequantize(np.stack(list(packed.values())), self.rows, self.dim)
        return dict(zip(packed, cells, strict=True))

    def delete(self, ids: np.ndarray) -> None:
        self._store.delete(np.asarray(ids, np.int64))

    def ids(self) -> np.ndarray:
        return np.zeros(0, np.int64) if self.stale else self._store.ids()

    def __len__(self) -> int:
        return 0 if self.stale else len(self._store)

    def refresh(self) -> None:
        """Follow rows another process wrote (readers such as the server)."""
        self._store.refresh()

    def drop(self) -> None:
        self._store.drop()

    def close(self) -> None:
        self._store.close()
