"""Add vectors computed elsewhere (`embed_with_ray`) to a library: catalog rows + store vectors.

The rules are the indexer's: the manifest's encoder must be the library's (vectors of different
encoders never mix); each chunk writes its vectors inside the catalog transaction that records its
files, so a kill loses at most one chunk, and rerunning the ingest is idempotent (rows are keyed by
path). Local files keep their size and mtime, so a later `picscope index` of the same folder finds
them unchanged and encodes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from picscope.distributed.ray_embed import MANIFEST, read_shards
from picscope.errors import EncoderMismatchError, LibraryError, PicscopeError
from picscope.library import Library
from picscope.store.catalog import display_path
from picscope.store.meta import FileMeta


@dataclass
class IngestReport:
    added: int = 0
    failed: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def _raw(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape") if "://" in path else os.fsencode(os.path.abspath(path))


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PicscopeError(f"{folder} has no {MANIFEST}: not the output of `picscope embed-distributed`") from None
    except ValueError as exc:
        raise PicscopeError(f"{folder / MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not {"encoder", "encoder_name", "dim"} <= set(data):
        raise PicscopeError(f"{folder / MANIFEST} lacks encoder/encoder_name/dim")
    return data


def ingest_vectors(lib: Library, folder: str | os.PathLike[str], *, chunk: int = 1024) -> IngestReport:
    """Ingest the Parquet output of `embed_with_ray` in `folder` into `lib`."""
    import pyarrow.dataset  # noqa: F401  (before anything: without pyarrow nothing is read)

    src = Path(folder)
    manifest = read_manifest(src)
    stored_name = _check_encoder(lib, src, manifest)
    table = _read_table(src)
    dim = int(manifest["dim"])
    report = IngestReport()
    with lib.write_lock():
        if stored_name is None:
            lib.catalog.set_meta("encoder_name", str(manifest["encoder_name"]))
            lib.catalog.set_meta("dim", str(dim))
        store = lib.store
        lib.reconcile()
        for s in range(0, table.num_rows, chunk):
            report.added += _ingest_chunk(lib, store, table.slice(s, chunk).to_pydict(), dim, report)
    return report


def _check_encoder(lib: Library, src: Path, manifest: dict[str, Any]) -> str | None:
    """Refuse vectors of another encoder or dimension; the library's stored encoder name (None when new)."""
    if manifest["encoder"] != lib.encoder_spec:
        raise EncoderMismatchError(
            f"{src} was encoded with {manifest['encoder']!r}; library {lib.path} uses {lib.encoder_spec!r}. "
            "Nothing was ingested."
        )
    stored_name = lib.catalog.get_meta("encoder_name")
    if stored_name is not None and stored_name != manifest["encoder_name"]:
        raise EncoderMismatchError(
            f"{src} holds vectors of {manifest['encoder_name']!r}, library {lib.path} of {stored_name!r}. "
            "Nothing was ingested."
        )
    if lib.dim is not None and lib.dim != int(manifest["dim"]):
        raise LibraryError(f"{src} holds {manifest['dim']}-d vectors, library {lib.path} {lib.dim}-d")
    return stored_name


def _read_table(src: Path) -> Any:
    try:
        return read_shards(src)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise PicscopeError(f"cannot read the embedding output in {src}: {exc}. Nothing was ingested.") from exc


def _ingest_chunk(lib: Library, store: Any, part: dict[str, list[Any]], dim: int, report: IngestReport) -> int:
    """One catalog transaction: the chunk's rows, and its vectors written inside it. The vectors added."""
    ids: list[int] = []
    vecs: list[np.ndarray] = []
    metas: list[FileMeta] = []
    with lib.catalog.transaction() as db:
        for i, path in enumerate(part["path"]):
            raw = _raw(path)
            vec = np.asarray(part["vector"][i], np.float32)
            err = _row_error(part["error"][i] or None, vec, dim)
            if err is not None:
                report.failed += 1
                report.problems.append((path, err))
                prev = lib.catalog.by_raw(raw)
                if prev is not None and prev.status == "ok":
                    continue  # keep the vector the library already has
            fid = lib.catalog.upsert_file(
                db,
                raw=raw,
                size=int(part["size"][i]),
                mtime_ns=int(part["mtime_ns"][i]) if err is None else -1,
                hash=part["hash"][i] or None,
                width=int(part["width"][i]) or None,
                height=int(part["height"][i]) or None,
                status="ok" if err is None else "error",
                error=err,
            )
            if err is None:
                ids.append(fid)
                vecs.append(vec)
                metas.append(FileMeta(display_path(raw), int(part["mtime_ns"][i])))
        if ids:
            id_arr, vec_arr = np.array(ids, np.int64), np.stack(vecs)
            store.upsert_with_meta(id_arr, vec_arr, metas)
    return len(ids)


def _row_error(err: str | None, vec: np.ndarray, dim: int) -> str | None:
    """The embedding's own error, or a bad vector (wrong shape, not finite)."""
    if err is None and (vec.shape != (dim,) or not np.isfinite(vec).all()):
        return "bad vector in the embedding output"
    return err
