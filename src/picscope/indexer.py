"""Incremental indexer: scan → (stat-only skip) → read + sniff + hash → reuse or decode → batched encode → commit.

Whether a file is an image is decided by its first bytes (`imageio.sniff`), and only for new or
changed files: an unchanged file (same size and mtime as recorded, image or not) is never opened.
Files are opened with O_NONBLOCK and checked to be regular after open, so a path that became a FIFO
or a device after the scan cannot block the run. Everything seen and not indexed gets a reason in
the catalog (`files.error` or the `skips` table); the report's problem list is read back from there,
so the index summary and `picscope status` show the same set. Before each batch is written the free
disk space is checked (`diskspace.ensure_free`).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.config import IndexConfig
from picscope.dedupe import perceptual
from picscope.diskspace import ensure_free
from picscope.encoders.base import DualEncoder
from picscope.errors import ImageDecodeError, LibraryError
from picscope.imageio import SNIFF_BYTES, NotRegularFileError, decode_image, is_image_name, open_regular, sniff
from picscope.scan import ScanEntry, ScanResult, scan
from picscope.store.base import VectorStore
from picscope.store.catalog import RETRY_MTIME, Catalog, Known, display_path
from picscope.store.meta import FileMeta

if TYPE_CHECKING:
    from sqlite3 import Connection

    from picscope.photocells import PhotoCells


@dataclass
class IndexReport:
    root: str
    scanned: int = 0
    unchanged: int = 0
    added: int = 0
    updated: int = 0
    reused: int = 0  # renamed or copied files whose vector was reused (no decode)
    removed: int = 0
    failed: int = 0  # files that could not be indexed in this run
    skipped: int = 0  # paths this scan saw and did not index (not images, FIFOs, dangling links, ...)
    seconds: float = 0.0
    encoded: int = 0
    cells: int = 0  # photos whose verifier cells were computed after the scan (older libraries: backfilled)
    # every current problem under the root, as `picscope status` lists them: (path, status, reason), status
    # error (not indexed), stale (previous version kept) or skipped
    problems: list[tuple[str, str]] = field(default_factory=list)
    problem_status: list[str] = field(default_factory=list)

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

    def stage(self, label: str) -> None:
        """The next `start` begins another pass (e.g. the verifier cells of older photos): name it."""


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
    skip: str | None = None  # seen but not an image: the reason (recorded in `skips`, not an error)
    retry: bool = False  # an OS-level failure: retry on every run


@dataclass
class _Written:
    """The vectors of one committed chunk, with their ids and the metadata for stores that filter."""

    ids: list[int] = field(default_factory=list)
    vecs: list[np.ndarray] = field(default_factory=list)
    metas: list[FileMeta] = field(default_factory=list)
    cells: dict[int, np.ndarray] = field(default_factory=dict)  # fid -> verifier cells computed in this run
    copies: dict[int, int] = field(default_factory=dict)  # fid -> the fid whose vector (and cells) it reuses

    def add(self, fid: int, vec: np.ndarray, meta: FileMeta) -> None:
        self.ids.append(fid)
        self.vecs.append(vec)
        self.metas.append(meta)


def _count_indexed(report: IndexReport, w: _Work, prev: Known | None) -> None:
    if w.reuse_id is not None:
        report.reused += 1
    elif prev is None or prev.status == "error":
        report.added += 1
    else:
        report.updated += 1


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
        cells: PhotoCells | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.encoder = encoder
        self.config = config
        self.progress = progress or Progress()
        self.read_hook = read_hook  # test hook: called with (path, data) right after a file is read
        # the verifier's cells, kept beside the vectors when the library re-ranks (written, copied and deleted
        # with them, so the cell store never holds a row the catalog does not)
        self.cells = cells

    # -- per-file work (runs in decode threads) ---------------------------------------------------
    def _read(self, entry: ScanEntry, known: bool) -> tuple[bytes | None, _Work]:
        """Read a file whole, or stop after its first bytes when they are not an image. `known`: the
        catalog holds this path as an image (a file that stopped being one is an error, not a skip)."""
        work = _Work(entry, entry.size, entry.mtime_ns)
        for _attempt in range(2):
            try:
                fd, before = open_regular(entry.raw)  # never blocks: O_NONBLOCK, regular files only
                with os.fdopen(fd, "rb") as fh:
                    head = fh.read(SNIFF_BYTES)
                    kind = sniff(head, entry.raw)
                    if not kind.is_image:
                        reason = kind.reason or "not an image"
                        if known or is_image_name(entry.raw):
                            work.error = reason  # meant as an image: a broken one
                        else:
                            work.skip = reason
                        work.size, work.mtime_ns = before.st_size, before.st_mtime_ns
                        return None, work
                    if before.st_size > self.config.max_file_bytes:
                        limit = self.config.max_file_bytes
                        work.error = f"file too large: {before.st_size} bytes exceeds the {limit} byte limit"
                        return None, work
                    data = head + fh.read(self.config.max_file_bytes + 1 - len(head))
                if self.read_hook is not None:
                    self.read_hook(entry.raw, data)
                after = os.stat(entry.raw)
            except NotRegularFileError as exc:  # it turned into a FIFO or device after the scan
                if known:
                    work.error, work.retry = str(exc), True
                else:
                    work.skip = str(exc)
                return None, work
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

    def _process(self, entry: ScanEntry, hashes: dict[str, int], known: bool) -> _Work:
        data, work = self._read(entry, known)
        if data is None:
            return work
        work.hash = _hash(data)
        if work.hash in hashes:
            work.reuse_id = hashes[work.hash]
            return work
        try:
            image = decode_image(
                data, max_pixels=self.config.max_pixels, target_size=self.encoder.image_size, name=entry.raw
            )
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
        known_skips = self.catalog.skip_index(root_raw)
        skips: dict[bytes, tuple[int, int, str]] = {}  # this run's skips: raw -> (size, mtime_ns, reason)
        result = ScanResult()
        seen: set[bytes] = set()
        todo: list[ScanEntry] = []
        for entry in scan(
            root_raw,
            result,
            include=self.config.include,
            exclude=self.config.exclude,
            follow_symlinks=self.config.follow_symlinks,
            skip_raw_with_sibling=self.config.skip_raw_with_sibling,
        ):
            report.scanned += 1
            prev = known.get(entry.raw)
            if prev is not None and prev.size == entry.size and prev.mtime_ns == entry.mtime_ns:
                seen.add(entry.raw)
                report.unchanged += 1
                continue
            skipped = known_skips.get(entry.raw)
            if prev is None and skipped is not None and skipped[:2] == (entry.size, entry.mtime_ns):
                skips[entry.raw] = skipped  # an unchanged non-image: not opened again
                report.unchanged += 1
                continue
            seen.add(entry.raw)
            todo.append(entry)
        for raw, reason in result.all_problems():
            skips[raw] = (0, RETRY_MTIME, reason)

        hashes = self.catalog.ok_by_hash()
        self.progress.start(len(todo))
        try:
            self._encode_and_commit(todo, hashes, known, skips, report)
        finally:
            self.progress.finish()
        # a file that turned into a non-image is no longer indexed: it leaves `files` as "missing"
        report.removed = self._remove_missing(root_raw, known, seen - set(skips), result)
        with self.catalog.transaction() as db:
            self.catalog.replace_skips(db, root_raw, skips, keep_under=[d for d, _ in result.dir_errors])
        self.catalog.record_root(root_raw)
        report.skipped = len(skips)
        problems = self.catalog.problems(root_raw)
        report.problems = [(p.path, p.reason) for p in problems]
        report.problem_status = [p.status for p in problems]
        report.seconds = time.perf_counter() - started
        return report

    def _iter_work(
        self, todo: list[ScanEntry], hashes: dict[str, int], known: dict[bytes, Known]
    ) -> Iterator[_Work]:
        prefetch = max(2 * self.config.batch_size, 8)
        with ThreadPoolExecutor(max_workers=self.config.decode_workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[_Work]] = deque()
            it = iter(todo)
            for entry in it:
                pending.append(pool.submit(self._process, entry, hashes, entry.raw in known))
                if len(pending) >= prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _encode_and_commit(
        self,
        todo: list[ScanEntry],
        hashes: dict[str, int],
        known: dict[bytes, Known],
        skips: dict[bytes, tuple[int, int, str]],
        report: IndexReport,
    ) -> None:
        chunk: list[_Work] = []
        vectors: dict[int, np.ndarray] = {}  # index in chunk -> vector
        cells: dict[int, np.ndarray] = {}  # index in chunk -> verifier cells (when kept)
        batch: list[int] = []

        def encode_batch() -> None:
            if not batch:
                return
            vecs, grid = self._encode([chunk[i].prepared for i in batch])
            for n, (i, v) in enumerate(zip(batch, vecs, strict=True)):
                vectors[i] = v
                if grid is not None:
                    cells[i] = grid[n]
                chunk[i].prepared = None
            report.encoded += len(batch)
            batch.clear()

        def commit() -> None:
            encode_batch()
            for w in chunk:
                if w.skip is not None:
                    skips[w.entry.raw] = (w.size, w.mtime_ns, w.skip)
            self._commit(chunk, vectors, hashes, known, report, cells)
            self.progress.advance(len(chunk))
            chunk.clear()
            vectors.clear()
            cells.clear()

        for work in self._iter_work(todo, hashes, known):
            chunk.append(work)
            if work.prepared is not None:
                batch.append(len(chunk) - 1)
                if len(batch) >= self.config.batch_size:
                    encode_batch()
            if len(chunk) >= self.config.commit_every:
                commit()
        commit()

    def _encode(self, prepared: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """Vectors, and the verifier's cells from the same network pass when they are kept and the encoder runs it."""
        if self.cells is None:
            return self.encoder.embed_prepared(prepared), None
        vecs, grid = self.encoder.embed_prepared_grid(prepared)
        return vecs, None if grid is None else self.cells.from_grid(grid)

    def _commit(
        self,
        chunk: list[_Work],
        vectors: dict[int, np.ndarray],
        hashes: dict[str, int],
        known: dict[bytes, Known],
        report: IndexReport,
        cells: dict[int, np.ndarray] | None = None,
    ) -> None:
        """One transaction for a chunk: catalog rows for every file, then its vectors (written before the commit)."""
        if not chunk:
            return
        self._ensure_space(chunk)
        reuse_vecs = self._reused_vectors(chunk)
        out = _Written()
        with self.catalog.transaction() as db:
            for i, w in enumerate(chunk):
                if w.skip is not None:
                    continue  # recorded in `skips` at the end of the run
                prev = known.get(w.entry.raw)
                vec = self._vector_for(w, vectors.get(i), reuse_vecs)
                if vec is None or w.error is not None:
                    report.failed += 1
                    self._record_failure(db, w, prev)
                    continue
                fid = self._record_ok(db, w)
                out.add(fid, vec, FileMeta(display_path(w.entry.raw), w.mtime_ns))
                if cells is not None and i in cells:
                    out.cells[fid] = cells[i]
                elif w.reuse_id is not None and i not in vectors:
                    out.copies[fid] = w.reuse_id
                if w.hash:
                    hashes.setdefault(w.hash, fid)
                _count_indexed(report, w, prev)
            if out.ids:
                self._write_vectors(out)

    def _ensure_space(self, chunk: list[_Work]) -> None:
        """Free space for the vectors (rows of dim float32 + an int64 id, in whole pages) and the catalog rows
        with their WAL copy."""
        rows = sum(1 for w in chunk if w.skip is None)
        ensure_free(self.catalog.path.parent, rows * (self.encoder.dim * 4 + 8 + 2048) + 2 * 4096)

    def _reused_vectors(self, chunk: list[_Work]) -> dict[int, np.ndarray]:
        """The stored vectors of the files that renamed or copied files reuse, by source id."""
        unique = sorted({w.reuse_id for w in chunk if w.reuse_id is not None})
        if not unique:
            return {}
        try:
            got = self.store.get(np.array(unique, np.int64))
            return dict(zip(unique, got, strict=True))
        except KeyError:
            out: dict[int, np.ndarray] = {}
            for rid in unique:  # some source vanished from the store: fall back one by one
                with contextlib.suppress(KeyError):
                    out[rid] = self.store.get(np.array([rid], np.int64))[0]
            return out

    @staticmethod
    def _vector_for(w: _Work, encoded: np.ndarray | None, reuse_vecs: dict[int, np.ndarray]) -> np.ndarray | None:
        """The file's new vector, or the one it reuses; a reused vector that is gone becomes a retried error."""
        if encoded is not None or w.reuse_id is None:
            return encoded
        vec = reuse_vecs.get(w.reuse_id)
        if vec is None:
            w.error = "vector to reuse is missing; it will be re-encoded on the next run"
            w.retry = True
        return vec

    def _record_ok(self, db: Connection, w: _Work) -> int:
        fid = self.catalog.upsert_file(
            db, raw=w.entry.raw, size=w.size, mtime_ns=w.mtime_ns, hash=w.hash, width=w.width, height=w.height,
            status="ok", error=None,
        )
        if w.hash and w.phash is not None:
            self.catalog.put_phash(db, w.hash, *w.phash)
        return fid

    def _record_failure(self, db: Connection, w: _Work, prev: Known | None) -> None:
        reason = w.error or "unknown error"
        if prev is not None and prev.status == "ok":
            self.catalog.keep_previous(db, prev.id, reason)  # keep the vector; remember why it was not refreshed
            return
        self.catalog.upsert_file(
            db, raw=w.entry.raw, size=w.size, mtime_ns=RETRY_MTIME if w.retry else w.mtime_ns, hash=w.hash,
            width=None, height=None, status="error", error=reason,
        )

    def _write_vectors(self, out: _Written) -> None:
        id_arr, vec_arr = np.array(out.ids, np.int64), np.stack(out.vecs).astype(np.float32)
        self.store.upsert_with_meta(id_arr, vec_arr, out.metas)  # the path/mtime, for stores that filter on them
        if self.cells is not None:
            self._write_cells(out)

    def _write_cells(self, out: _Written) -> None:
        """Cells for every file whose vector was just written: new ones, a copy's source's, or none (the old row
        is deleted; `PhotoCells.backfill` computes it at the end of the run)."""
        store = self.cells.store if self.cells is not None else None
        if store is None:
            return
        if out.cells:
            store.put(np.array(list(out.cells), np.int64), np.stack(list(out.cells.values())))
        sources = store.get_packed(np.array(sorted(set(out.copies.values())), np.int64)) if out.copies else {}
        copied = {fid: src for fid, src in out.copies.items() if src in sources}
        if copied:
            store.put_packed(np.array(list(copied), np.int64), np.stack([sources[s] for s in copied.values()]))
        stale = [fid for fid in out.ids if fid not in out.cells and fid not in copied]
        if stale:
            store.delete(np.array(stale, np.int64))

    def _remove_missing(
        self,
        root_raw: bytes,
        known: dict[bytes, Known],
        seen: set[bytes],
        result: ScanResult,
    ) -> int:
        protected = [d.rstrip(b"/") + b"/" for d, _ in result.dir_errors]
        protected += [f for f, _ in result.file_errors]
        if any(d == root_raw.rstrip(b"/") + b"/" for d in protected):
            return 0  # the root itself could not be listed: remove nothing
        gone = [
            (raw, info.id)
            for raw, info in known.items()
            if raw not in seen and not any(raw.startswith(p) or raw == p for p in protected)
        ]
        if not gone:
            return 0
        ids = np.array([i for _, i in gone], np.int64)
        with self.catalog.transaction() as db:
            self.catalog.delete_files(db, ids.tolist())
            self.store.delete(ids)
            if self.cells is not None:
                self.cells.store.delete(ids)
        return len(gone)
