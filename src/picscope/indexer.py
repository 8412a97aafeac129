"""Incremental indexer: scan → (stat-only skip) → read + hash → reuse or decode → batched encode → commit.

Crash safety: work is committed in transactions of `commit_every` files; inside each transaction the
vectors are written (and flushed) before the catalog commit, so a kill loses at most the open batch
and the next run redoes exactly that. Vectors whose catalog rows never committed are removed by
`Library.reconcile()` before the next run writes anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from picscope.config import IndexConfig
from picscope.dedupe import perceptual
from picscope.encoders.base import DualEncoder
from picscope.errors import ImageDecodeError, LibraryError
from picscope.imageio import decode_image
from picscope.scan import ScanEntry, ScanResult, scan
from picscope.store.base import VectorStore
from picscope.store.catalog import Catalog, display_path
from picscope.store.meta import FileMeta, SupportsMeta

RETRY_MTIME = -1  # recorded for read errors so the next run retries them whatever the stat says


@dataclass
class IndexReport:
    root: str
    scanned: int = 0
    unchanged: int = 0
    added: int = 0
    updated: int = 0
    reused: int = 0  # renamed or copied files whose vector was reused (no decode)
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0
    encoded: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """Progress sink: the CLI passes a rich progress bar; the default does nothing."""

    def start(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class _Work:
    entry: ScanEntry
    size: int
    mtime_ns: int
    hash: str | None = None
    width: int | None = None
    height: int | None = None
    prepared: Any = None
    reuse_id: int | None = None
    phash: tuple[int, int] | None = None  # (dHash, mean colour) for near-duplicates, from the decoded image
    error: str | None = None
    retry: bool = False  # an OS-level failure: retry on every run


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Indexer:
    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        encoder: DualEncoder,
        config: IndexConfig,
        progress: Progress | None = None,
        *,
        read_hook: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.encoder = encoder
        self.config = config
        self.progress = progress or Progress()
        self.read_hook = read_hook  # test hook: called with (path, data) right after a file is read

    # -- per-file work (runs in decode threads) ---------------------------------------------------
    def _read(self, entry: ScanEntry) -> tuple[bytes | None, _Work]:
        work = _Work(entry, entry.size, entry.mtime_ns)
        if entry.size > self.config.max_file_bytes:
            work.error = f"file too large: {entry.size} bytes exceeds the {self.config.max_file_bytes} byte limit"
            return None, work
        for _attempt in range(2):
            try:
                with open(entry.raw, "rb") as fh:
                    before = os.fstat(fh.fileno())
                    data = fh.read(self.config.max_file_bytes + 1)
                if self.read_hook is not None:
                    self.read_hook(entry.raw, data)
                after = os.stat(entry.raw)
            except FileNotFoundError:
                work.error = "file disappeared before it could be read"
                work.retry = True
                return None, work
            except OSError as exc:
                work.error = f"cannot read file: {exc.strerror or exc}"
                work.retry = True
                return None, work
            if (
                (after.st_size, after.st_mtime_ns)
                == (before.st_size, before.st_mtime_ns)
                == (
                    len(data),
                    before.st_mtime_ns,
                )
            ):
                work.size, work.mtime_ns = before.st_size, before.st_mtime_ns
                return data, work
        work.error = "file kept changing while it was being read; it will be retried on the next run"
        work.retry = True
        return None, work

    def _process(self, entry: ScanEntry, hashes: dict[str, int]) -> _Work:
        data, work = self._read(entry)
        if data is None:
            return work
        work.hash = _hash(data)
        if work.hash in hashes:
            work.reuse_id = hashes[work.hash]
            return work
        try:
            image = decode_image(data, max_pixels=self.config.max_pixels, target_size=self.encoder.image_size)
            work.width, work.height = image.info.get("original_size", image.size)
            work.phash = perceptual(image)
            work.prepared = self.encoder.prepare_image(image)
        except ImageDecodeError as exc:
            work.error = str(exc)
        except Exception as exc:  # a bug or an exotic file must not stop the run
            work.error = f"cannot prepare image: {type(exc).__name__}: {exc}"
        return work

    # -- the run ----------------------------------------------------------------------------------
    def run(self, root: str | os.PathLike[str]) -> IndexReport:
        started = time.perf_counter()
        root_raw = os.fsencode(os.path.abspath(os.fspath(root)))
        if not os.path.isdir(root_raw):
            raise LibraryError(f"not a folder: {display_path(root_raw)} (nothing was changed)")
        report = IndexReport(root=display_path(root_raw))
        known = self.catalog.stat_index(root_raw)
        result = ScanResult()
        seen: set[bytes] = set()
        todo: list[ScanEntry] = []
        for entry in scan(
            root_raw,
            result,
            include=self.config.include,
            exclude=self.config.exclude,
            follow_symlinks=self.config.follow_symlinks,
        ):
            report.scanned += 1
            seen.add(entry.raw)
            prev = known.get(entry.raw)
            if prev is not None and prev[1] == entry.size and prev[2] == entry.mtime_ns:
                report.unchanged += 1
                continue
            todo.append(entry)
        for raw, reason in result.file_errors:
            report.problems.append((display_path(raw), reason))
        for raw, reason in result.dir_errors:
            report.problems.append((display_path(raw), reason))

        hashes = self.catalog.ok_by_hash()
        self.progress.start(len(todo))
        try:
            self._encode_and_commit(todo, hashes, known, report)
        finally:
            self.progress.finish()
        report.removed = self._remove_missing(root_raw, known, seen, result)
        self.catalog.record_root(root_raw)
        report.seconds = time.perf_counter() - started
        return report

    def _iter_work(self, todo: list[ScanEntry], hashes: dict[str, int]) -> Iterator[_Work]:
        prefetch = max(2 * self.config.batch_size, 8)
        with ThreadPoolExecutor(max_workers=self.config.decode_workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[_Work]] = deque()
            it = iter(todo)
            for entry in it:
                pending.append(pool.submit(self._process, entry, hashes))
                if len(pending) >= prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _encode_and_commit(
        self,
        todo: list[ScanEntry],
        hashes: dict[str, int],
        known: dict[bytes, tuple[int, int, int, str, str | None]],
        report: IndexReport,
    ) -> None:
        chunk: list[_Work] = []
        vectors: dict[int, np.ndarray] = {}  # index in chunk -> vector
        batch: list[int] = []

        def encode_batch() -> None:
            if not batch:
                return
            vecs = self.encoder.embed_prepared([chunk[i].prepared for i in batch])
            for i, v in zip(batch, vecs, strict=True):
                vectors[i] = v
                chunk[i].prepared = None
            report.encoded += len(batch)
            batch.clear()

        def commit() -> None:
            encode_batch()
            self._commit(chunk, vectors, hashes, known, report)
            self.progress.advance(len(chunk))
            chunk.clear()
            vectors.clear()

        for work in self._iter_work(todo, hashes):
            chunk.append(work)
            if work.prepared is not None:
                batch.append(len(chunk) - 1)
                if len(batch) >= self.config.batch_size:
                    encode_batch()
            if len(chunk) >= self.config.commit_every:
                commit()
        commit()

    def _commit(
        self,
        chunk: list[_Work],
        vectors: dict[int, np.ndarray],
        hashes: dict[str, int],
        known: dict[bytes, tuple[int, int, int, str, str | None]],
        report: IndexReport,
    ) -> None:
        if not chunk:
            return
        ids: list[int] = []
        vecs: list[np.ndarray] = []
        metas: list[FileMeta] = []
        reuse = [w.reuse_id for w in chunk if w.reuse_id is not None]
        reuse_vecs: dict[int, np.ndarray] = {}
        if reuse:
            unique = sorted(set(reuse))
            try:
                got = self.store.get(np.array(unique, np.int64))
                reuse_vecs = dict(zip(unique, got, strict=True))
            except KeyError:
                for rid in unique:  # some source vanished from the store: fall back one by one
                    with contextlib.suppress(KeyError):
                        reuse_vecs[rid] = self.store.get(np.array([rid], np.int64))[0]
        with self.catalog.transaction() as db:
            for i, w in enumerate(chunk):
                raw = w.entry.raw
                prev = known.get(raw)
                vec = vectors.get(i)
                if vec is None and w.reuse_id is not None:
                    vec = reuse_vecs.get(w.reuse_id)
                    if vec is None:
                        w.error = "vector to reuse is missing; it will be re-encoded on the next run"
                        w.retry = True
                if vec is not None and w.error is None:
                    fid = self.catalog.upsert_file(
                        db,
                        raw=raw,
                        size=w.size,
                        mtime_ns=w.mtime_ns,
                        hash=w.hash,
                        width=w.width,
                        height=w.height,
                        status="ok",
                        error=None,
                    )
                    if w.hash and w.phash is not None:
                        self.catalog.put_phash(db, w.hash, *w.phash)
                    ids.append(fid)
                    vecs.append(vec)
                    metas.append(FileMeta(display_path(raw), w.mtime_ns))
                    if w.hash:
                        hashes.setdefault(w.hash, fid)
                    if w.reuse_id is not None:
                        report.reused += 1
                    elif prev is None or prev[3] == "error":
                        report.added += 1
                    else:
                        report.updated += 1
                    continue
                report.failed += 1
                reason = w.error or "unknown error"
                report.problems.append((display_path(raw), reason))
                mtime = RETRY_MTIME if w.retry else w.mtime_ns
                if prev is not None and prev[3] == "ok":
                    # keep the previous vector; remember why it could not be refreshed
                    db.execute(
                        "UPDATE files SET error=?, mtime_ns=? WHERE id=?",
                        (f"kept previous version: {reason}", RETRY_MTIME, prev[0]),
                    )
                else:
                    self.catalog.upsert_file(
                        db,
                        raw=raw,
                        size=w.size,
                        mtime_ns=mtime,
                        hash=w.hash,
                        width=None,
                        height=None,
                        status="error",
                        error=reason,
                    )
            if ids:
                id_arr, vec_arr = np.array(ids, np.int64), np.stack(vecs).astype(np.float32)
                if isinstance(self.store, SupportsMeta):  # stores that filter by path/date on their side
                    self.store.upsert_with_meta(id_arr, vec_arr, metas)
                else:
                    self.store.upsert(id_arr, vec_arr)

    def _remove_missing(
        self,
        root_raw: bytes,
        known: dict[bytes, tuple[int, int, int, str, str | None]],
        seen: set[bytes],
        result: ScanResult,
    ) -> int:
        protected = [d.rstrip(b"/") + b"/" for d, _ in result.dir_errors]
        protected += [f for f, _ in result.file_errors]
        if any(d == root_raw.rstrip(b"/") + b"/" for d in protected):
            return 0  # the root itself could not be listed: remove nothing
        gone = [
            (raw, info[0])
            for raw, info in known.items()
            if raw not in seen and not any(raw.startswith(p) or raw == p for p in protected)
        ]
        if not gone:
            return 0
        ids = np.array([i for _, i in gone], np.int64)
        with self.catalog.transaction() as db:
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900].tolist()
                db.execute(f"DELETE FROM files WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            self.store.delete(ids)
        return len(gone)
