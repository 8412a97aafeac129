"""Compact stored vectors: a two-tier linear codec and a store wrapper that keeps codes, not full vectors.

An encoder may ship a `VectorCodec` (the `bundled` encoder does: 9,640 bytes per photo become 1,280). A library
records the codec's name as its vector format and keeps a copy of the codec file, and every store backend
(`exact`, `ann`, `milvus:`) then holds codes instead of vectors:

    code          z = A (v − μ)        the first `scan_dim` numbers float32 ("coarse", what a search scans),
                                       the rest quantized with fixed per-dimension steps ("fine", read for re-scoring)
    search        coarse score (B q)[:scan_dim] · z_coarse over every photo in the backend, then the best
                  `rescore` candidates get the fine part added: (B q) · z + q · μ
    read back     v̂ = D z + μ          (feedback, "more like this" and stage 2 read full-size vectors)

Two fine layouts (the codec's `format`):
    1   every fine number one int8, z ≈ step · round(z / step) (libraries written with codec format 1 keep it)
    2   segments of fine numbers at 8, 4, 2 or 1 bits each, packed into bytes: z ≈ step · (c − L/2 + ½) for the
        unsigned code c = clip(⌊z / step⌋ + L/2, 0, L − 1), L = 2^bits (a mid-rise quantizer: no level is wasted
        on exactly 0, which matters at 2 bits). Numbers are ordered by importance, so the bits go where queries
        look: the shipped codec keeps 64 float32 + 384 × 8 + 896 × 4 + 768 × 2 bits (2,112 numbers, 1,280 bytes)
        instead of format 1's 64 float32 + 1,024 × 8 bits (1,088 numbers, also 1,280 bytes).

A and B come from `picscope.training.codec`: a query-aware reduction (B ≠ A) that keeps what queries can tell
apart (inner products with the query distribution) rather than the images' own variance. The `+ q · μ` term is
the same for every photo, so it never changes a ranking; it keeps scores on the encoder's cosine scale, so
`--min-score` means what it meant with full vectors.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from picscope.encoders.numerics import single_threaded_blas
from picscope.errors import StoreError
from picscope.store.base import Hits, VectorStore, as_queries, topk_from_scores, validate_batch
from picscope.store.meta import FileMeta, MetaFilter

# side files of a split codec, by array: NAME.query.npz (the query matrix's float rows), NAME.query_q.npz and
# NAME.encode_q.npz (int8 rows and their scales). Libraries written before the int8 rows moved out keep them in
# NAME.query.npz / NAME.npz, which `load` reads the same way (it merges every file's arrays).
_SIDE_OF = {"query": "query", "query_q": "query_q", "query_scale": "query_q", "encode_q": "encode_q",
            "encode_scale": "encode_q"}
_SIDE_FILES = ("query", "query_q", "encode_q")
FULL = "f32"  # the format of libraries that keep full vectors (every library written before codecs existed)
CODEC_FILE = "codec.npz"


@dataclass(frozen=True)
class VectorCodec:
    name: str
    mean: np.ndarray  # μ: (dim,)
    encode_stored: np.ndarray  # A: (code_dim, dim) as stored (float16 or float32; see `encode_matrix`)
    query_matrix: np.ndarray  # B: (code_dim, dim)
    scan_dim: int  # coarse (float32) part of a code; the rest is the fine (quantized) part
    fine_scale: np.ndarray  # (fine_count,) value of one quantizer step per fine number
    rescore: int = 256  # candidates whose fine part is read per query
    coarse_norm: float = 0.0  # > 0: graph stores get coarse codes lifted to this norm (see `CompactStore`)
    fine_segments: tuple[tuple[int, int], ...] = ()  # format 2: (numbers, bits) per segment; () = format 1 (int8)
    stored: Mapping[str, np.ndarray] | None = field(default=None, compare=False, repr=False)  # as read by `load`

    @property
    def format(self) -> int:
        return 2 if self.fine_segments else 1

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @cached_property
    def encode_matrix(self) -> np.ndarray:
        """A as float32, converted on first use: a search never needs it (only writes and reads do)."""
        return np.asarray(self.encode_stored, np.float32)

    @cached_property
    def decode_matrix(self) -> np.ndarray:
        """D: (dim, code_dim), the least-norm read-back (A D = I); computed on first use (only reads need it:
        `get`, "more like this", an image query by library id) and kept in the cache folder, keyed by the codec's
        pinned name. A has full row rank, so D = Aᵀ(AAᵀ)⁻¹: one solve (0.3-1.4 s on 2 cores, equal to the
        pseudo-inverse within 1e-7) instead of `pinv`'s SVD (5-30 s, once per process before)."""
        return _cached_decode_matrix(self)

    @property
    def code_dim(self) -> int:
        return int(self.encode_stored.shape[0])

    @property
    def fine_count(self) -> int:
        """Numbers in the fine part."""
        return self.code_dim - self.scan_dim

    @property
    def fine_dim(self) -> int:
        """Bytes of a stored fine row (the width of the int8 store that keeps them)."""
        if not self.fine_segments:
            return self.fine_count
        return sum(n * bits // 8 for n, bits in self.fine_segments)

    @property
    def bytes_per_vector(self) -> int:
        return self.scan_dim * 4 + self.fine_dim

    def encode(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full vectors (n, dim) → (coarse float32 (n, scan_dim), fine bytes as int8 (n, fine_dim))."""
        z = (np.asarray(vectors, np.float32) - self.mean) @ self.encode_matrix.T
        coarse = np.ascontiguousarray(z[:, : self.scan_dim], dtype=np.float32)
        return coarse, self.quantize(z[:, self.scan_dim :])

    def quantize(self, z: np.ndarray) -> np.ndarray:
        """Fine numbers (n, fine_count) → stored fine rows (n, fine_dim) int8."""
        if not self.fine_segments:
            return np.clip(np.rint(z / self.fine_scale), -127, 127).astype(np.int8)
        parts = []
        start = 0
        for n, bits in self.fine_segments:
            half = 1 << (bits - 1)
            step = self.fine_scale[start : start + n]
            code = np.clip(np.floor(z[:, start : start + n] / step) + half, 0, 2 * half - 1).astype(np.uint8)
            parts.append(pack_bits(code, bits))
            start += n
        return np.ascontiguousarray(np.concatenate(parts, axis=1).view(np.int8))

    def decode(self, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
        z = np.concatenate([np.asarray(coarse, np.float32), self.dequantize(fine)], axis=1)
        return np.ascontiguousarray(z @ self.decode_matrix.T + self.mean, dtype=np.float32)

    def dequantize(self, fine: np.ndarray) -> np.ndarray:
        """Stored fine rows (n, fine_dim) → fine numbers (n, fine_count) float32."""
        if not self.fine_segments:
            return np.asarray(fine, np.float32) * self.fine_scale
        raw = np.asarray(fine).view(np.uint8)
        out = np.empty((len(raw), self.fine_count), np.float32)
        start = byte = 0
        for n, bits in self.fine_segments:
            width = n * bits // 8
            code = unpack_bits(raw[:, byte : byte + width], bits, n)
            out[:, start : start + n] = (code.astype(np.float32) - ((1 << (bits - 1)) - 0.5)) \
                * self.fine_scale[start : start + n]
            start += n
            byte += width
        return out

    def fine_scores(self, fine: np.ndarray, q_fine: np.ndarray) -> np.ndarray:
        """dequantize(fine) @ q_fine for stored fine rows (n, fine_dim) and one query's fine part (fine_count,), without
        materialising the numbers: per segment, codes @ (q · step) minus the constant offset (a search's re-score)."""
        weights = np.asarray(q_fine, np.float32) * self.fine_scale
        if not self.fine_segments:
            return np.asarray(fine).astype(np.float32) @ weights
        raw = np.asarray(fine).view(np.uint8)
        out = np.zeros(len(raw), np.float32)
        start = byte = 0
        for n, bits in self.fine_segments:
            width = n * bits // 8
            w = weights[start : start + n]
            code = unpack_bits(raw[:, byte : byte + width], bits, n).astype(np.float32)  # (a table lookup: 10× slower)
            out += code @ w - np.float32(((1 << (bits - 1)) - 0.5) * w.sum())
            start += n
            byte += width
        return out

    @cached_property
    def neutral_fine(self) -> np.ndarray:
        """The stored fine row of z = 0 (scores a photo whose fine row is missing by its coarse part)."""
        return self.quantize(np.zeros((1, self.fine_count), np.float32))[0]

    def queries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coarse query parts (n, scan_dim), fine query parts (n, fine_count), per-query score offsets (n,))."""
        bq = np.asarray(queries, np.float32) @ self.query_matrix.T
        offset = (np.asarray(queries, np.float32) @ self.mean).astype(np.float32)
        return (np.ascontiguousarray(bq[:, : self.scan_dim], dtype=np.float32),
                np.ascontiguousarray(bq[:, self.scan_dim :], dtype=np.float32), offset)

    # -- files -----------------------------------------------------------------------------------------------
    def arrays(self, matrix_bits: int = 32, int8_from: int | None = None) -> dict[str, np.ndarray]:
        """The codec as named arrays; A and B as float32, float16 (`matrix_bits=16`) or int8 rows with float32 row
        scales (`matrix_bits=8`); `int8_from=r` keeps rows from r on as int8 rows whatever `matrix_bits` says (rows
        of numbers stored at 4 bits or fewer: their own quantization is far coarser than the matrix's)."""
        out = {"mean": self.mean, "scan_dim": np.array([self.scan_dim], np.int32), "fine_scale": self.fine_scale,
               "rescore": np.array([self.rescore], np.int32), "coarse_norm": np.array([self.coarse_norm], np.float32),
               "name": np.frombuffer(self.name.split("@")[0].encode(), np.uint8)}
        if self.fine_segments:  # format 1 files have no such key (and keep their names: the digest covers keys)
            out["fine_segments"] = np.array(self.fine_segments, np.int32).reshape(-1, 2)
        st = self.stored
        if st is not None and matrix_bits == 16 and int8_from is None and all(
                v.dtype != np.float32 for k, v in st.items() if k in ("encode", "query")) and \
                int(st.get("rescore", [256])[0]) == self.rescore and \
                float(st.get("coarse_norm", [0.0])[0]) == np.float32(self.coarse_norm):
            return dict(st)  # already at most 16 bits: the same numbers (a library's copy keeps the name)
        split = 0 if matrix_bits == 8 else self.code_dim if int8_from is None else min(int8_from, self.code_dim)
        for key, m in (("encode", self.encode_matrix), ("query", self.query_matrix)):
            if split:
                out[key] = m[:split].astype(np.float16 if matrix_bits == 16 else np.float32)
            if split < len(m):
                scale = np.maximum(np.abs(m[split:]).max(axis=1, keepdims=True), 1e-30) / 127.0
                out[f"{key}_q"] = np.rint(m[split:] / scale).astype(np.int8)
                out[f"{key}_scale"] = scale.astype(np.float32)
        return out

    @staticmethod
    def _matrix(arrays: dict[str, np.ndarray], key: str, dtype: type[np.floating] | None = np.float32
                ) -> np.ndarray | None:
        parts = []
        if key in arrays:  # float rows first, then int8 rows (either may be absent)
            parts.append(np.asarray(arrays[key], dtype) if dtype is not None else arrays[key])
        if f"{key}_q" in arrays:
            parts.append((arrays[f"{key}_q"].astype(np.float32) * arrays[f"{key}_scale"]).astype(np.float32))
        if len(parts) == 2:
            return np.concatenate([np.asarray(parts[0], np.float32), parts[1]])
        return parts[0] if parts else None

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], name: str | None = None) -> VectorCodec:
        a = cls._matrix(arrays, "encode", dtype=None)  # kept as stored until a write needs it
        if a is None:
            raise StoreError("codec arrays hold no encode matrix")
        b = cls._matrix(arrays, "query")
        b = np.asarray(a, np.float32) if b is None else b
        mean = np.asarray(arrays["mean"], np.float32)
        scan = int(arrays["scan_dim"][0]) if "scan_dim" in arrays else a.shape[0]
        scale = np.asarray(arrays.get("fine_scale", np.zeros(0)), np.float32)
        if a.ndim != 2 or b.shape != a.shape or mean.shape != (a.shape[1],) or scale.shape != (a.shape[0] - scan,):
            raise StoreError(f"codec arrays do not fit: encode {a.shape}, query {b.shape}, mean {mean.shape}, "
                             f"scan_dim {scan}, fine_scale {scale.shape}")
        label = name or (bytes(arrays["name"]).decode() if "name" in arrays else "linear")
        rescore = int(arrays["rescore"][0]) if "rescore" in arrays else 256
        norm = float(arrays["coarse_norm"][0]) if "coarse_norm" in arrays else 0.0
        segments = tuple((int(n), int(bits)) for n, bits in np.asarray(arrays.get("fine_segments", np.zeros((0, 2))))
                         .reshape(-1, 2))
        if segments and (sum(n for n, _ in segments) != a.shape[0] - scan
                         or any(bits not in (1, 2, 4, 8) or n % (8 // bits) for n, bits in segments)):
            raise StoreError(f"codec fine segments {segments} do not fit {a.shape[0] - scan} fine numbers "
                             "(bits 1, 2, 4 or 8; whole bytes per segment)")
        return cls(label, mean, a, b, scan, scale, rescore, norm, segments)

    @staticmethod
    def files(path: Path) -> list[Path]:
        """The codec's files: `NAME.npz`, and the side files `save(split=True)` writes (`NAME.query.npz`, ...)."""
        path = Path(path)
        sides = [path.with_name(f"{path.stem}.{suffix}.npz") for suffix in _SIDE_FILES]
        return [path, *(side for side in sides if side.exists())]

    @classmethod
    def load(cls, path: Path) -> VectorCodec:
        """Read a codec; its name is the stored name plus a SHA-256 prefix of its arrays (pins the exact numbers,
        whether the files are compressed or not)."""
        from picscope.store import codeccache

        files = cls.files(path)
        ready = codeccache.lookup(files)
        if ready is not None:  # unchanged since a process kept it: memory-mapped, nothing expanded or hashed
            try:
                return replace(cls.from_arrays(ready[1], ready[0]), stored=codeccache.StoredArrays(files))
            except (StoreError, KeyError, IndexError, ValueError):
                pass  # a damaged entry: read the codec file itself (and keep it again) below
        arrays: dict[str, np.ndarray] = {}
        try:
            for part in files:
                with np.load(part) as f:
                    arrays.update({k: f[k] for k in f.files})
        except (OSError, ValueError, EOFError, zlib.error) as exc:
            raise StoreError(f"cannot read the vector codec {path}: {exc}") from exc
        if "mean" not in arrays:
            raise StoreError(f"{path} is not a vector codec")
        base = bytes(arrays["name"]).decode() if "name" in arrays else Path(path).stem
        codec = replace(cls.from_arrays(arrays, f"{base}@{_digest(arrays)[:12]}"), stored=arrays)
        codeccache.keep(files, codec.name, codec.ready_arrays())
        return codec

    def ready_arrays(self) -> dict[str, np.ndarray]:
        """The codec as `from_arrays` reads it back with nothing to expand: both matrices as used (the form
        `codeccache` keeps)."""
        out = {"encode": self.encode_stored, "query": self.query_matrix, "mean": self.mean,
               "scan_dim": np.array([self.scan_dim], np.int32), "fine_scale": self.fine_scale,
               "rescore": np.array([self.rescore], np.int32),
               "coarse_norm": np.array([self.coarse_norm], np.float32)}
        if self.fine_segments:
            out["fine_segments"] = np.array(self.fine_segments, np.int32).reshape(-1, 2)
        return out

    def save(self, path: Path, matrix_bits: int = 32, split: bool = False, compress: bool = True,
             int8_from: int | None = None) -> list[Path]:
        """Write the codec; `split` keeps each matrix's float and int8 rows in files of their own (each shipped file
        under 5 MB; `files` lists them), `compress=False` writes it for fast loading (a library's copy); `int8_from`:
        see `arrays`. Returns the files."""
        arrays = self.arrays(matrix_bits, int8_from)
        path = Path(path)
        parts: dict[Path, dict[str, np.ndarray]] = {path: {}}
        for key, value in arrays.items():
            side = _SIDE_OF.get(key) if split else None
            file = path if side is None else path.with_name(f"{path.stem}.{side}.npz")
            parts.setdefault(file, {})[key] = value
        stale = set(self.files(path)) - set(parts)  # side files of an earlier layout: removed once all are written
        for file, data in parts.items():
            tmp = file.with_name(file.name + ".tmp")
            with open(tmp, "wb") as fh:
                if compress:
                    np.savez_compressed(fh, **data)  # type: ignore[arg-type]
                else:
                    np.savez(fh, **data)  # type: ignore[arg-type]
            os.replace(tmp, file)
        for file in stale:
            file.unlink(missing_ok=True)
        return list(parts)


def pack_bits(code: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes (n, m) below 2^bits → bytes (n, m · bits / 8); number j sits in byte j // (8 / bits) at bit
    (j mod (8 / bits)) · bits."""
    if bits == 8:
        return code
    per = 8 // bits
    grouped = code.reshape(len(code), -1, per)
    out = np.zeros(grouped.shape[:2], np.uint8)
    for j in range(per):
        out |= grouped[:, :, j] << np.uint8(j * bits)
    return out


def unpack_bits(raw: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The inverse of `pack_bits`: bytes (n, count · bits / 8) → codes (n, count) uint8."""
    if bits == 8:
        return raw
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    out = np.empty((len(raw), raw.shape[1], per), np.uint8)
    for j in range(per):
        out[:, :, j] = (raw >> np.uint8(j * bits)) & mask
    return out.reshape(len(raw), count)


def _cached_decode_matrix(codec: VectorCodec) -> np.ndarray:
    import hashlib  # here and in `_digest`: a search does not hash, and OpenSSL's loading costs ~3 ms

    from picscope.paths import cache_dir

    path = cache_dir() / f"decode-{hashlib.sha256(codec.name.encode()).hexdigest()[:16]}.npy"
    shape = (codec.dim, codec.code_dim)
    try:
        stored = np.load(path, mmap_mode="r")
        if stored.shape == shape and stored.dtype == np.float32:
            return np.asarray(stored)
    except (OSError, ValueError):
        pass  # not computed yet on this machine (or unreadable): computed below
    a = codec.encode_matrix.astype(np.float64)
    try:
        d = np.linalg.solve(a @ a.T, a).T.astype(np.float32)
    except np.linalg.LinAlgError:  # rank-deficient (never for a fitted codec): the pseudo-inverse
        d = np.linalg.pinv(a).astype(np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, d)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder: computed again by the next process
    return d


def _digest(arrays: dict[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for key in sorted(set(arrays) - {"name"}):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class CompactStore:
    """A `VectorStore` of full-size vectors that keeps coarse codes in `inner` (any backend, built with
    `coarse_dim(codec, lift)`) and fine codes in `fine` (an int8 exact store). Ids, deletes, filters and metadata
    are the inner store's; a fine row is written before and deleted after its coarse row, so every id a search can
    return has one.

    `lift` (for graph indexes such as HNSW): coarse codes are not unit vectors, and a graph built on their inner
    products misses neighbours (measured: 0.79 of the true candidates at ef 256 on 200k photos). Each code gets one
    more number, √(M² − ‖z‖²) with M = `codec.coarse_norm`, so that all have the same norm, and queries get 0
    there: inner products are unchanged, and the graph is built on what is now a sphere (0.98 at ef 256)."""

    def __init__(self, inner: VectorStore, fine: VectorStore | None, codec: VectorCodec, lift: bool = False,
                 rescore: int | None = None) -> None:
        self.lift = lift and codec.coarse_norm > 0
        self.rescore = int(rescore or codec.rescore)  # candidates re-scored by their fine part per query
        if inner.dim != coarse_dim(codec, self.lift) or (fine is not None and fine.dim != codec.fine_dim):
            raise StoreError(f"store dims {inner.dim}/{fine.dim if fine else 0} do not match the codec's "
                             f"{coarse_dim(codec, self.lift)}/{codec.fine_dim}")
        if fine is None and codec.fine_dim:
            raise StoreError("this codec needs a store for its fine codes")
        self.inner = inner
        self.fine = fine
        self.codec = codec
        self.dim = codec.dim
        self.spec = inner.spec

    @property
    def supports_filter(self) -> bool:
        return self.inner.supports_filter

    def _codes(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.codec.encode(validate_batch(ids, vectors, self.dim)[1])

    def _lifted(self, coarse: np.ndarray, data: bool) -> np.ndarray:
        return lifted(coarse, self.codec.coarse_norm, data) if self.lift else coarse

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        coarse, fine = self._codes(ids, vectors)
        if self.fine is not None:
            self.fine.upsert(ids, fine)
        self.inner.upsert(ids, self._lifted(coarse, data=True))

    def upsert_with_meta(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[FileMeta]) -> None:
        coarse, fine = self._codes(ids, vectors)
        if self.fine is not None:
            self.fine.upsert(ids, fine)
        self.inner.upsert_with_meta(ids, self._lifted(coarse, data=True), meta)

    def delete(self, ids: np.ndarray) -> None:
        self.inner.delete(ids)
        if self.fine is not None:
            self.fine.delete(ids)

    def _fine_rows(self, ids: np.ndarray) -> np.ndarray:
        if self.fine is None:
            return np.zeros((len(ids), 0), np.int8)
        try:
            return self.fine.get(ids)
        except KeyError:  # only after a crash between the two writes: such rows are scored coarsely
            out = np.tile(self.codec.neutral_fine, (len(ids), 1))
            for i, id_ in enumerate(ids.tolist()):
                try:
                    out[i] = self.fine.get(np.array([id_], np.int64))[0]
                except KeyError:
                    continue
            return out

    def scored_rows(self, ids: np.ndarray) -> tuple[np.ndarray, VectorCodec]:
        """(coarse ‖ dequantised fine codes, the codec): what `search` scores, without decoding."""
        ids = np.asarray(ids, np.int64).ravel()
        coarse = self.inner.get(ids)[:, : self.codec.scan_dim]
        return np.concatenate([coarse, self.codec.dequantize(self._fine_rows(ids))], axis=1), self.codec

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64).ravel()
        return self.codec.decode(self.inner.get(ids)[:, : self.codec.scan_dim], self._fine_rows(ids))

    def ids(self) -> np.ndarray:
        return self.inner.ids()

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, *,
               filter: MetaFilter | None = None) -> Hits:
        q = as_queries(queries, self.dim)
        with single_threaded_blas():  # a few small products: threads only add waiting (8 ms → 0.5 ms, measured)
            q_coarse, q_fine, offset = self.codec.queries(q)
        fetch = max(k, self.rescore) if self.codec.fine_dim else k
        hits = self.inner.search(self._lifted(q_coarse, data=False), fetch, allowed_ids, filter=filter)
        if not self.codec.fine_dim:
            scores = np.where(np.isfinite(hits.scores), hits.scores + offset[:, None], hits.scores)
            return Hits(hits.ids[:, :k], scores[:, :k].astype(np.float32))
        out_ids = np.zeros((len(q), k), np.int64)
        out_scores = np.full((len(q), k), -np.inf, np.float32)
        for i in range(len(q)):
            valid = hits.ids[i] > 0
            ids = hits.ids[i][valid]
            if not len(ids):
                continue
            with single_threaded_blas():  # small products: on a busy machine threads cost 10× (16 ms vs 1.3 ms)
                fine = self.codec.fine_scores(self._fine_rows(ids), q_fine[i])
            scores = hits.scores[i][valid] + fine + offset[i]
            top = topk_from_scores(scores[None, :].astype(np.float32), ids, k)
            out_ids[i], out_scores[i] = top.ids[0], top.scores[0]
        return Hits(out_ids, out_scores)

    @property
    def refresh(self) -> Callable[[], bool] | None:
        """Follow another process's writes (see `ExactStore.refresh`) when the inner store can (None otherwise, so a
        reader reopens the store instead): the fine codes first, then the coarse ones."""
        inner = getattr(self.inner, "refresh", None)
        if not callable(inner):
            return None
        fine = getattr(self.fine, "refresh", None)

        def both() -> bool:
            grew = bool(fine()) if callable(fine) else False
            return bool(inner()) or grew

        return both

    def drop(self) -> None:
        self.inner.drop()
        if self.fine is not None:
            self.fine.drop()

    def close(self) -> None:
        self.inner.close()
        if self.fine is not None:
            self.fine.close()

    def __getattr__(self, name: str) -> Any:
        # optional extras of the inner store (checkpoint, iter_meta, flush, ...)
        if name in {"inner", "fine", "codec"}:
            raise AttributeError(name)
        return getattr(self.inner, name)


class CompactMetaStore(CompactStore):
    """`CompactStore` over a store that keeps file metadata with each vector (`supports_filter`)."""

    def get_meta(self, ids: np.ndarray) -> Any:
        return self.inner.get_meta(ids)  # type: ignore[attr-defined]


def lifted(coarse: np.ndarray, norm: float, data: bool) -> np.ndarray:
    """Coarse codes with one more number: √(norm² − ‖z‖²) for stored codes (all then have `norm`), 0 for queries."""
    if data:
        extra = np.sqrt(np.maximum(norm**2 - np.einsum("ij,ij->i", coarse, coarse), 0.0))
    else:
        extra = np.zeros(len(coarse), np.float32)
    return np.ascontiguousarray(np.column_stack([coarse, extra]), dtype=np.float32)


def coarse_dim(codec: VectorCodec, lift: bool) -> int:
    """The inner store's dimension: the coarse codes, plus the lifting number for graph stores."""
    return codec.scan_dim + (1 if lift and codec.coarse_norm > 0 else 0)


def compact(inner: VectorStore, fine: VectorStore | None, codec: VectorCodec, lift: bool = False,
            rescore: int | None = None) -> CompactStore:
    """`inner` (coarse codes) + `fine` as one store of full-size vectors; `rescore` overrides the codec's pool (a
    graph store's own option: its candidates come ordered by coarse score already, see `AnnOptions.rescore`)."""
    cls = CompactMetaStore if inner.supports_filter else CompactStore
    return cls(inner, fine, codec, lift, rescore)
