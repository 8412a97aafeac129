"""`milvus:<uri>`: vectors in Milvus through pymilvus' `MilvusClient`.

- `milvus:` or `milvus:<file>.db`: Milvus Lite, an embedded Milvus (milvus-lite 2.5: the native
  Milvus server binary with knowhere, started by pymilvus). A relative file is placed in the
  library's store folder. One process at a time may open a Lite file.
- `milvus:http://host:19530` (or https): a Milvus standalone or distributed server. Token from
  `[milvus] token` or `$PICSCOPE_MILVUS_TOKEN`.

One collection per library (name in `[milvus] collection`, else derived from the library folder and
remembered in `store/milvus.json`): `id` INT64 primary key (the catalog's file id), `vec`
FLOAT_VECTOR (inner product on normalised vectors = cosine), `path` VARCHAR and `mtime` INT64 (Unix
seconds) so that filters run on the server (`search(..., filter=MetaFilter(...) or "expr")`). Index
type and parameters come from `[milvus]` (FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ, HNSW, AUTOINDEX; Lite
accepts FLAT, IVF_FLAT and AUTOINDEX only). Transient failures are retried with backoff and a fresh
connection; an unreachable server is a `StoreError` raised before anything is written.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from picscope.errors import ConfigError, StoreError
from picscope.store import register_store
from picscope.store.base import Hits, as_queries, validate_batch
from picscope.store.meta import FileMeta, MetaFilter
from picscope.store.options import load_section

log = logging.getLogger(__name__)
T = TypeVar("T")

IndexType = Literal["FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "AUTOINDEX"]
LITE_INDEXES = {"FLAT", "IVF_FLAT", "AUTOINDEX"}
MAX_PATH = 65_535
MAX_TOPK = 16_384


class MilvusOptions(BaseModel):
    """`[milvus]` in the library's config.toml."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    index_type: IndexType = "FLAT"
    M: int = Field(16, ge=2, le=2048, description="HNSW degree")
    ef_construction: int = Field(200, ge=1)
    ef: int = Field(128, ge=1, description="HNSW search breadth")
    nlist: int = Field(1024, ge=1, le=65536, description="IVF cells")
    nprobe: int = Field(32, ge=1, description="IVF cells searched")
    pq_m: int = Field(32, ge=1, description="IVF_PQ sub-quantizers (must divide dim)")
    nbits: int = Field(8, ge=1, le=16)
    token: str | None = None
    db_name: str | None = None
    timeout: float = Field(10.0, gt=0, description="seconds per call")
    retries: int = Field(3, ge=0, le=20, description="attempts after a transient failure")
    backoff: float = Field(0.5, ge=0)
    batch_rows: int = Field(4000, ge=1)

    def index_params(self) -> dict[str, Any]:
        return {
            "FLAT": {},
            "AUTOINDEX": {},
            "IVF_FLAT": {"nlist": self.nlist},
            "IVF_SQ8": {"nlist": self.nlist},
            "IVF_PQ": {"nlist": self.nlist, "m": self.pq_m, "nbits": self.nbits},
            "HNSW": {"M": self.M, "efConstruction": self.ef_construction},
        }[self.index_type]

    def search_params(self) -> dict[str, Any]:
        if self.index_type == "HNSW":
            return {"ef": self.ef}
        if self.index_type.startswith("IVF"):
            return {"nprobe": self.nprobe}
        return {}


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://"))


_TRANSIENT = (
    "unavailable",
    "connect",
    "deadline",
    "timeout",
    "timed out",
    "closed",
    "reset",
    "refused",
    "rate limit",
    "too many",
    "not ready",
    "server is busy",
)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    if "open local milvus failed" in text:
        return False  # a Lite file held by another process (or unusable): retrying would not help
    return any(word in text for word in _TRANSIENT)


def _quiet_pymilvus() -> None:
    # milvus-lite 2.5 imports pkg_resources (deprecated) and pymilvus logs every failed connect at ERROR.
    # picscope reports failures itself (StoreError). pymilvus configures its loggers when imported, so
    # import it first, then quieten them.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import pymilvus  # noqa: F401

    for name in ("pymilvus", "pymilvus.orm.iterator", "pymilvus.milvus_client.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class MilvusStore:
    supports_filter = True

    def __init__(self, uri: str, folder: Path, dim: int, options: MilvusOptions | None = None) -> None:
        self.folder = Path(folder)
        self.dim = int(dim)
        self.options = options or MilvusOptions()
        self.lite = not is_server_uri(uri)
        if self.lite:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = Path(uri or "milvus.db").expanduser()
            if not path.is_absolute():
                path = self.folder / path
            if path.suffix != ".db":
                raise ConfigError(f"a Milvus Lite file must end in .db (got {path}); a server URI starts with http://")
            self.uri = str(path)
            if self.options.index_type not in LITE_INDEXES:
                raise ConfigError(
                    f"Milvus Lite supports index types {', '.join(sorted(LITE_INDEXES))}, not "
                    f"{self.options.index_type}; use a Milvus server or set [milvus] index_type"
                )
        else:
            self.uri = uri
        self.spec = f"milvus:{uri}"
        self.collection = self._collection_name()
        self._lock = threading.RLock()
        self._client: Any = None
        if importlib.util.find_spec("pymilvus") is None:
            raise ConfigError("the milvus store needs pymilvus and milvus-lite: pip install 'picscope[milvus]'")
        _quiet_pymilvus()
        self._lite_held = False
        self._call("connect", lambda c: None)
        if self.lite:
            _hold_lite(self.uri)
            self._lite_held = True
        self._ensure_collection()

    # -- connection & retries ------------------------------------------------------------------------
    def _collection_name(self) -> str:
        if self.options.collection:
            return self.options.collection
        marker = self.folder / "milvus.json"
        if marker.exists():
            try:
                name = json.loads(marker.read_text())["collection"]
                if isinstance(name, str) and name:
                    return name
            except (OSError, ValueError, KeyError):
                pass
        if self.lite:
            return "picscope"
        digest = hashlib.sha1(str(self.folder.resolve()).encode()).hexdigest()[:12]
        return f"picscope_{digest}"

    def _remember_collection(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "milvus.json"
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"uri": self.uri, "collection": self.collection, "dim": self.dim}))
        tmp.replace(marker)

    def _connect(self) -> Any:
        from pymilvus import MilvusClient

        kwargs: dict[str, Any] = {"uri": self.uri, "timeout": self.options.timeout}
        token = self.options.token or os.environ.get("PICSCOPE_MILVUS_TOKEN")
        if token and not self.lite:
            kwargs["token"] = token
        if self.options.db_name and not self.lite:
            kwargs["db_name"] = self.options.db_name
        return MilvusClient(**kwargs)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # a broken connection may fail to close; it is being replaced anyway
                log.debug("closing a broken Milvus connection failed", exc_info=True)

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run `fn(client)`, reconnecting and retrying transient failures with exponential backoff."""
        attempts = self.options.retries + 1
        last: BaseException | None = None
        for attempt in range(attempts):
            with self._lock:
                try:
                    if self._client is None:
                        self._client = self._connect()
                    return fn(self._client)
                except (StoreError, KeyError):
                    raise
                except Exception as exc:
                    last = exc
                    if not _is_transient(exc):
                        if self.lite and "open local milvus failed" in str(exc).lower():
                            raise StoreError(
                                f"cannot open Milvus Lite file {self.uri}: it is in use by another process (a Lite "
                                "file serves one process at a time; use a Milvus server for several) or unusable. "
                                "Nothing was changed."
                            ) from exc
                        raise StoreError(f"Milvus {what} failed on {self.uri}: {exc}") from exc
                    self._drop_client()
            if attempt + 1 < attempts:
                time.sleep(self.options.backoff * 2**attempt)
        where = f"Milvus Lite file {self.uri}" if self.lite else f"Milvus server {self.uri}"
        raise StoreError(
            f"cannot reach {where} ({what}, {attempts} attempt(s)): {last}. Nothing was changed; check that the "
            "server is running (or move the library with `picscope sync-index --store exact`)."
        ) from last

    def _ensure_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        def ensure(c: Any) -> None:
            if c.has_collection(self.collection):
                desc = c.describe_collection(self.collection)
                fields = {f["name"]: f for f in desc.get("fields", [])}
                vec = fields.get("vec")
                have = int((vec or {}).get("params", {}).get("dim", -1))
                if vec is None or "path" not in fields or "mtime" not in fields:
                    raise StoreError(f"Milvus collection {self.collection!r} on {self.uri} was not made by picscope")
                if have != self.dim:
                    raise StoreError(
                        f"Milvus collection {self.collection!r} holds {have}-d vectors; this library needs "
                        f"{self.dim}-d. Drop it or set another [milvus] collection."
                    )
                c.load_collection(self.collection)
                return
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
            schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
            schema.add_field("mtime", DataType.INT64)
            index = c.prepare_index_params()
            index.add_index(
                field_name="vec",
                index_type=self.options.index_type,
                metric_type="IP",
                params=self.options.index_params(),
            )
            c.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")

        self._call("open collection", ensure)
        self._remember_collection()

    # -- writing ----------------------------------------------------------------------------------------
    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace vectors, keeping the stored path/mtime of ids that already exist."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if not len(ids):
            return
        known = self.get_meta(ids)
        meta = [known.get(int(i), FileMeta("", 0)) for i in ids.tolist()]
        self.upsert_with_meta(ids, vectors, meta)

    def upsert_with_meta(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[FileMeta]) -> None:
        ids, vecs = validate_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        if len(meta) != len(ids):
            raise StoreError("one metadata record per id is needed")
        for m in meta:
            if len(m.path.encode("utf-8", "surrogateescape")) > MAX_PATH:
                raise StoreError(f"path longer than {MAX_PATH} bytes: {m.path[:80]}…")
        step = self.options.batch_rows
        for s in range(0, len(ids), step):
            rows = [
                {"id": int(i), "vec": v, "path": m.path, "mtime": int(m.mtime_ns // 1_000_000_000)}
                for i, v, m in zip(ids[s : s + step].tolist(), vecs[s : s + step], meta[s : s + step], strict=True)
            ]
            self._call("upsert", partial(_upsert, collection=self.collection, rows=rows))

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        step = 16_384
        for s in range(0, len(ids), step):
            chunk = ids[s : s + step].tolist()
            self._call("delete", partial(_delete, collection=self.collection, ids=chunk))

    def flush(self) -> None:
        """Seal growing segments (faster search, data in segment files); not needed for durability."""
        self._call("flush", lambda c: c.flush(self.collection))

    def drop(self) -> None:
        """Delete the library's collection (used before a rebuild or after moving to another store)."""
        self._call("drop", lambda c: c.drop_collection(self.collection))
        (self.folder / "milvus.json").unlink(missing_ok=True)
        if self.lite and not self._call("list", lambda c: c.list_collections()):
            self.close()  # stops the Lite server of this file, then the empty file goes
            path = Path(self.uri)
            for leftover in (path, path.with_name(f".{path.name}.lock")):
                leftover.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------------------
    def _query_ids(self, ids: np.ndarray, fields: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        step = 4096
        for s in range(0, len(ids), step):
            chunk = ids[s : s + step].tolist()
            expr = f"id in [{','.join(str(int(i)) for i in chunk)}]"
            out.extend(self._call("query", partial(_query, collection=self.collection, expr=expr, fields=fields)))
        return out

    def scored_rows(self, ids: np.ndarray) -> tuple[np.ndarray, None]:
        return self.get(ids), None  # full vectors: scored by a plain inner product

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        found = {int(r["id"]): r["vec"] for r in self._query_ids(np.unique(ids), ["id", "vec"])}
        missing = [int(i) for i in ids.tolist() if int(i) not in found]
        if missing:
            raise KeyError(f"id {missing[0]} is not in the store")
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return np.asarray([found[int(i)] for i in ids.tolist()], dtype=np.float32)

    def get_meta(self, ids: np.ndarray) -> dict[int, FileMeta]:
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        rows = self._query_ids(ids, ["id", "path", "mtime"])
        return {int(r["id"]): FileMeta(str(r["path"]), int(r["mtime"]) * 1_000_000_000) for r in rows}

    def iter_meta(self, batch: int = 16_384) -> list[tuple[int, str, int]]:
        """(id, path, mtime seconds) of every row."""
        return [(int(r["id"]), str(r["path"]), int(r["mtime"])) for r in self._iterate(["id", "path", "mtime"], batch)]

    def _iterate(self, fields: list[str], batch: int) -> list[dict[str, Any]]:
        def run(c: Any) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            it = c.query_iterator(self.collection, batch_size=batch, filter="", output_fields=fields)
            try:
                while True:
                    page = it.next()
                    if not page:
                        break
                    rows.extend(page)
            finally:
                it.close()
            return rows

        return self._call("scan", run)

    def ids(self) -> np.ndarray:
        return np.array([int(r["id"]) for r in self._iterate(["id"], 16_384)], dtype=np.int64)

    def __len__(self) -> int:
        res = self._call("count", lambda c: c.query(self.collection, filter="", output_fields=["count(*)"]))
        return int(res[0]["count(*)"])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: np.ndarray | None = None,
        *,
        filter: MetaFilter | str | None = None,
    ) -> Hits:
        """Top-k by inner product; `allowed_ids` and/or a server-side `filter` restrict the candidates."""
        q = as_queries(queries, self.dim)
        expr = filter.to_milvus() if isinstance(filter, MetaFilter) else (filter or "")
        kk = min(int(k), MAX_TOPK)
        if allowed_ids is None:
            return self._search(q, k, kk, expr)
        allowed = np.unique(np.asarray(allowed_ids, dtype=np.int64))
        best = Hits(np.zeros((len(q), k), np.int64), np.full((len(q), k), -np.inf, np.float32))
        step = 8192  # keep each expression small; merge the per-chunk top-k
        for s in range(0, len(allowed), step):
            idexpr = f"id in [{','.join(str(int(i)) for i in allowed[s : s + step].tolist())}]"
            part = self._search(q, k, kk, f"({expr}) and {idexpr}" if expr else idexpr)
            best = _merge(best, part, k)
        return best

    def _search(self, q: np.ndarray, k: int, kk: int, expr: str) -> Hits:
        params = {"metric_type": "IP", "params": self.options.search_params()}
        res = self._call(
            "search",
            lambda c: c.search(
                self.collection,
                data=[row.tolist() for row in q],
                limit=kk,
                anns_field="vec",
                search_params=params,
                filter=expr,
                output_fields=["id"],
            ),
        )
        ids = np.zeros((len(q), k), np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        for i, hits in enumerate(res):
            for j, h in enumerate(list(hits)[:k]):
                ids[i, j] = int(h["id"])
                scores[i, j] = float(h["distance"])
        return Hits(ids, scores)

    def close(self) -> None:
        with self._lock:
            self._drop_client()
            if self._lite_held:
                self._lite_held = False
                _release_lite(self.uri)


# Milvus Lite runs one server process per .db file for the whole Python process (pymilvus keeps it
# after a client closes). Stop it when the last store using the file closes, so the file can be
# deleted or reopened cleanly (e.g. `index --rebuild`).
_LITE_REFS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def _hold_lite(path: str) -> None:
    with _LITE_LOCK:
        _LITE_REFS[path] = _LITE_REFS.get(path, 0) + 1


def _release_lite(path: str) -> None:
    with _LITE_LOCK:
        left = _LITE_REFS.get(path, 0) - 1
        if left > 0:
            _LITE_REFS[path] = left
            return
        _LITE_REFS.pop(path, None)
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(path)
        except Exception:  # best effort: the server also stops when the process exits
            log.debug("stopping the Milvus Lite server for %s failed", path, exc_info=True)


def _upsert(c: Any, *, collection: str, rows: list[dict[str, Any]]) -> None:
    c.upsert(collection, rows)


def _delete(c: Any, *, collection: str, ids: list[int]) -> None:
    c.delete(collection, ids=ids)


def _query(c: Any, *, collection: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
    return list(c.query(collection, filter=expr, output_fields=fields))


def _merge(a: Hits, b: Hits, k: int) -> Hits:
    ids = np.concatenate([a.ids, b.ids], axis=1)
    scores = np.concatenate([a.scores, b.scores], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return Hits(np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1))


@register_store("milvus", usage="milvus:<uri>", summary="Milvus Lite (a .db file) or a Milvus server",
                needs=("pymilvus",))
def _build(arg: str, folder: Path, dim: int) -> MilvusStore:
    return MilvusStore(arg, folder, dim, load_section(folder, "milvus", MilvusOptions))
