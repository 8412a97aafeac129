"""`Library`: the public entry point. A folder holding a catalog, a vector store and a config.

lib = Library.open("~/.local/share/picscope/library")
lib.index("~/Photos")
for hit in lib.search("a dog running on the beach", k=5):
    print(hit.score, hit.path)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope import __version__
from picscope.calibration import Calibration, calibration_for
from picscope.config import PicscopeConfig
from picscope.diskspace import DiskFullError, ensure_mappable, free_bytes, is_enospc
from picscope.encoders import DualEncoder, default_encoder_spec, make_encoder
from picscope.errors import (
    ConfigError,
    EncoderMismatchError,
    ImageDecodeError,
    ImageNotFoundError,
    LibraryError,
    LibraryLockedError,
    LibraryReadOnlyError,
)
from picscope.layout import CATALOG as CATALOG  # re-exported: older callers import the names from here
from picscope.layout import CONFIG as CONFIG
from picscope.layout import LOCK as LOCK
from picscope.layout import STORE_DIR as STORE_DIR
from picscope.layout import LibraryLayout
from picscope.store import VectorStore, make_store
from picscope.store.catalog import SCHEMA_VERSION, Catalog, FileRecord, Problem, is_disk_full
from picscope.store.compact import CODEC_FILE, FULL, VectorCodec, coarse_dim, compact
from picscope.store.meta import MetaFilter

# Imported where used, so that a text search (a new process per query) loads none of them: PIL and the image
# decoders (imageio), the indexer, query arithmetic, near-duplicate fingerprints.
if TYPE_CHECKING:
    from PIL import Image

    from picscope.arithmetic import QueryTerm, TermValue
    from picscope.dedupe import Fingerprint
    from picscope.encoders.querybank import QueryBank
    from picscope.indexer import IndexReport, Progress
    from picscope.photocells import PhotoCells
    from picscope.rerank import RerankInfo, RerankSettings


@dataclass(frozen=True)
class SearchResult:
    id: int
    path: str
    score: float  # raw cosine similarity (its scale depends on the encoder; see README "Scores")
    rank: int
    relevance: float | None = None  # calibrated P(relevant), when the encoder has a calibration
    similar_ids: tuple[int, ...] = ()  # near-duplicates collapsed into this result (search with dedupe)
    match: float | None = None  # the verifier's P(match) when the re-rank scored this result (`picscope.rerank`)
    # score minus the photo's query-bank normaliser, when the query bank ordered this result (`QUERYBANK_POOL`)
    bank_score: float | None = None

    @property
    def similar_count(self) -> int:
        return len(self.similar_ids)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["relevance"] = None if self.relevance is None else round(self.relevance, 4)
        data["similar_ids"] = list(self.similar_ids)
        data["similar_count"] = self.similar_count
        data["match"] = None if self.match is None else round(self.match, 4)
        data["bank_score"] = None if self.bank_score is None else round(self.bank_score, 4)
        return data


Terms = Sequence["str | QueryTerm | TermValue"]


@dataclass
class LibraryStatus:
    path: str
    encoder: str | None
    encoder_name: str | None
    store: str
    dim: int | None
    schema_version: int
    files: int
    errors: int
    stale: int
    skipped: int
    vectors: int
    readonly: bool = False
    roots: list[str] = field(default_factory=list)
    caches: list[dict[str, Any]] = field(default_factory=list)  # {name, path, bytes}: see `picscope cache`
    vector_format: str = FULL
    bytes_per_photo: int | None = None
    cells: int | None = None  # photos with the verifier's cells stored (None: the library keeps none)
    cells_model: str | None = None  # the verifier that made them
    cell_bytes_per_photo: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _disk_full(exc: OSError, where: Path) -> DiskFullError:
    return DiskFullError(
        f"disk full: {exc.strerror} writing {exc.filename or where} ({free_bytes(where) / 1e6:.1f} MB free at "
        f"{where}); free some space and run the command again (what was written so far is kept)"
    )


def folder_is_writable(path: Path) -> bool:
    """False on a read-only mount (access() reports EROFS even for root) or a folder we may not write."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        pass
    if not os.access(path, os.W_OK):
        return False
    catalog = LibraryLayout(path).catalog
    return not catalog.exists() or os.access(catalog, os.W_OK)


QUERYBANK_POOL = 50  # text-search candidates re-ordered by the query bank (R@1 the same as the whole gallery's)
QUERYBANK_MAX = 2000  # more asked for (stage 1's pool, an evaluation's whole gallery): normalised up to this many


class Library:
    def __init__(self, path: Path, catalog: Catalog, config: PicscopeConfig, *, readonly: bool = False) -> None:
        self.path = path
        self.layout = LibraryLayout(path)
        self.catalog = catalog
        self.config = config
        self.readonly = readonly
        self._encoder: DualEncoder | None = None
        self._store: VectorStore | None = None
        self._encoder_override: str | None = None
        self._cells: PhotoCells | None = None

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        encoder: str | None = None,
        store: str | None = None,
        create: bool = True,
        readonly: bool | None = None,
    ) -> Library:
        """Open (or create) the library at `path` (default: `$PICSCOPE_LIBRARY` or the per-user folder).

        `encoder`/`store` apply to a new library; for an existing one they must match what built it.
        `readonly`: open without writing anything (search, status, serve work; index refuses). The default
        (None) opens read-only exactly when the library folder is not writable (a read-only mount, say).
        """
        from picscope.paths import default_library_path

        lib_path = Path(path).expanduser() if path is not None else default_library_path()
        layout = LibraryLayout(lib_path)
        exists = layout.is_library()
        if not exists and not create:
            raise LibraryError(
                f"no library at {lib_path}; create one with `picscope index FOLDER --library {lib_path}`"
            )
        if readonly is None:
            readonly = exists and not folder_is_writable(lib_path)
        if readonly:
            return cls._open_readonly(lib_path, encoder=encoder, store=store)
        try:
            lib_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if is_enospc(exc):
                raise DiskFullError(f"disk full: cannot create library folder {lib_path}") from exc
            raise LibraryError(f"cannot create library folder {lib_path}: {exc.strerror or exc}") from exc
        config = PicscopeConfig.load(layout.config)
        catalog = Catalog(layout.catalog)
        lib = cls(lib_path, catalog, config)
        try:
            lib._init_meta(encoder, store)
        except OSError as exc:
            catalog.close()
            if is_enospc(exc):
                raise _disk_full(exc, lib_path) from exc
            raise
        except BaseException:
            catalog.close()
            raise
        return lib

    @classmethod
    def _open_readonly(cls, lib_path: Path, *, encoder: str | None, store: str | None) -> Library:
        layout = LibraryLayout(lib_path)
        if not layout.is_library():
            raise LibraryReadOnlyError(f"no library at {lib_path}, and the folder is read-only: nothing to open")
        config = PicscopeConfig.load(layout.config)
        catalog = Catalog.open_readonly(layout.catalog)
        lib = cls(lib_path, catalog, config, readonly=True)
        try:
            if catalog.get_meta("encoder") is None:
                raise LibraryReadOnlyError(f"the library at {lib_path} is empty and read-only: nothing to search")
            lib._init_meta(encoder, store)
        except BaseException:
            catalog.close()
            raise
        return lib

    def _init_meta(self, encoder: str | None, store: str | None) -> None:
        lib_path, catalog, config = self.path, self.catalog, self.config
        stored_encoder = catalog.get_meta("encoder")
        if stored_encoder is None:
            spec = encoder or (config.encoder if self.layout.config.exists() else default_encoder_spec())
            if spec == "bundled" and default_encoder_spec() != "bundled":
                spec = "labels"
            config.encoder = spec
            if store:
                config.store = store
            catalog.set_meta("encoder", spec)
            catalog.set_meta("store", config.store)
            catalog.set_meta("created_with", __version__)
            config.save(self.layout.config)
        else:
            if encoder and encoder != stored_encoder:
                raise EncoderMismatchError(
                    f"library {lib_path} was built with encoder {stored_encoder!r}; you asked for {encoder!r}. "
                    "Vectors of different encoders cannot be mixed. To rebuild it with the new encoder run:\n"
                    f"  picscope index FOLDER --library {lib_path} --encoder {encoder} --rebuild"
                )
            stored_store = catalog.get_meta("store") or "exact"
            if store and store != stored_store:
                raise LibraryError(
                    f"library {lib_path} uses store {stored_store!r}; you asked for {store!r}. "
                    f"Move it with `picscope sync-index --library {lib_path} --store {store}`."
                )
            config.encoder = stored_encoder
            config.store = stored_store

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._close_cells()
        self.catalog.close()

    def _close_cells(self) -> None:
        if self._cells is not None:
            self._cells.close()
            self._cells = None

    def save_config(self) -> None:
        """Persist `self.config` (e.g. after changing index globs) to the library's config.toml."""
        self._refuse_readonly("change its configuration")
        try:
            self.config.save(self.layout.config)
        except OSError as exc:
            if is_enospc(exc):
                raise _disk_full(exc, self.path) from exc
            raise

    def _refuse_readonly(self, what: str) -> None:
        if self.readonly:
            raise LibraryReadOnlyError(
                f"library {self.path} is read-only (a read-only folder or mount), so picscope cannot {what}; "
                "searching it works. Make it writable, or copy it somewhere writable and use --library"
            )

    # -- components ----------------------------------------------------------------------------
    @property
    def encoder_spec(self) -> str:
        return self.config.encoder

    @property
    def encoder(self) -> DualEncoder:
        if self._encoder is None:
            enc = make_encoder(self.encoder_spec)
            stored_name = self.catalog.get_meta("encoder_name")
            if stored_name is not None and stored_name != enc.name and self.catalog.counts()["ok"] > 0:
                raise EncoderMismatchError(
                    f"library {self.path} holds vectors from {stored_name!r}, but {self.encoder_spec!r} now "
                    f"loads {enc.name!r} (different weights). Rebuild:\n"
                    f"  picscope index FOLDER --library {self.path} --rebuild"
                )
            self._encoder = enc
        return self._encoder

    @property
    def dim(self) -> int | None:
        dim = self.catalog.get_meta("dim")
        return int(dim) if dim else None

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            if self.dim is None:
                enc = self.encoder
                codec = self._new_codec()
                if codec is not None:
                    self.catalog.set_meta("vector_format", codec.name)
                self.catalog.set_meta("dim", str(enc.dim))
                self.catalog.set_meta("encoder_name", enc.name)
            self._store = self.build_store(self.config.store)
        return self._store

    # -- vector formats ------------------------------------------------------------------------
    @property
    def vector_format(self) -> str:
        """`f32` (full vectors, every library written before compact formats) or the name of a codec."""
        return self.catalog.get_meta("vector_format") or FULL

    def _store_folder(self, fmt: str) -> Path:
        store = self.layout.store
        return store if fmt == FULL else store / f"c-{fmt.rsplit('@', 1)[-1]}"

    def _new_codec(self) -> VectorCodec | None:
        """The encoder's codec, copied into the library (which stays readable whatever is installed later)."""
        path = self.encoder.codec_path if self.config.vectors == "compact" else None
        if path is None:
            return None
        codec = VectorCodec.load(path)
        folder = self._store_folder(codec.name)
        folder.mkdir(parents=True, exist_ok=True)
        # the same numbers, uncompressed (every search process loads them: 0.18 s compressed); the name pins them
        codec.save(folder / CODEC_FILE, matrix_bits=16, split=True, compress=False)
        return codec

    def codec(self, fmt: str | None = None) -> VectorCodec | None:
        fmt = fmt or self.vector_format
        if fmt == FULL:
            return None
        path = self._store_folder(fmt) / CODEC_FILE
        if not path.exists():
            raise LibraryError(f"library {self.path} stores vectors as {fmt!r} but its codec {path} is missing; "
                               f"rebuild it: picscope index FOLDER --library {self.path} --rebuild")
        codec = VectorCodec.load(path)
        if codec.name != fmt:
            raise LibraryError(f"the codec {path} is {codec.name!r}, not the library's {fmt!r} (corrupt); rebuild it:"
                               f" picscope index FOLDER --library {self.path} --rebuild")
        return codec

    def build_store(self, spec: str, fmt: str | None = None) -> VectorStore:
        """The store `spec` over this library's vectors, in format `fmt` (default: the library's)."""
        dim = self.dim
        if dim is None:
            raise LibraryError(f"library {self.path} has no vectors yet")
        fmt = fmt or self.vector_format
        codec = self.codec(fmt)
        folder = self._store_folder(fmt)
        fine_folder = folder / f"fine-{spec.partition(':')[0]}"
        if spec == "exact":  # memory maps: on a full tmpfs, reading one could end in SIGBUS
            ensure_mappable([folder / "vectors.f32", folder / "vectors.ids", fine_folder / "vectors.i8",
                             fine_folder / "vectors.ids"])
        if codec is None:
            return make_store(spec, folder, dim, readonly=self.readonly)
        from picscope.store.exact import ExactStore

        lift = spec != "exact"  # graph indexes (ann, Milvus HNSW) want codes of one norm: see CompactStore
        inner = make_store(spec, folder, coarse_dim(codec, lift), readonly=self.readonly)
        fine = ExactStore(fine_folder, codec.fine_dim, np.int8, readonly=self.readonly) if codec.fine_dim else None
        rescore = getattr(getattr(inner, "options", None), "rescore", None)  # a graph store's own pool (`[ann]`)
        return compact(inner, fine, codec, lift, rescore if isinstance(rescore, int) else None)

    def migrate_vectors(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rewrite a full-vector library in its encoder's compact format (write lock held). Returns the number of
        vectors converted (0 when there is nothing to do). An interruption leaves the library on its old format."""
        if self.readonly or self.vector_format != FULL or self.config.vectors != "compact" or self.dim is None:
            return 0
        if self.config.store.partition(":")[0] not in ("exact", "ann") or self.encoder.codec_path is None:
            return 0
        old = self.store
        ids = np.sort(old.ids())
        codec = VectorCodec.load(self.encoder.codec_path)
        import shutil  # here: a search process has no use for it (~3 ms with its compression modules)

        shutil.rmtree(self._store_folder(codec.name), ignore_errors=True)  # a leftover of an interrupted run
        self._new_codec()
        new = self.build_store(self.config.store, codec.name)
        try:
            for start in range(0, len(ids), 8192):
                chunk = ids[start : start + 8192]
                new.upsert(chunk, old.get(chunk))
                if progress is not None:
                    progress(min(start + 8192, len(ids)), len(ids))
            if len(new) != len(ids):
                raise LibraryError(f"the compact store holds {len(new)} vectors after copying {len(ids)}")
        except BaseException:
            new.close()
            raise
        self.catalog.set_meta("vector_format", codec.name)  # the switch
        self._store = new
        old.drop()
        old.close()
        return len(ids)

    def reopen_store(self) -> None:
        """Another process changed the store: the next use reopens it (readers such as the server call this)."""
        self._store = None
        self._close_cells()

    # -- the verifier re-rank ------------------------------------------------------------------
    @property
    def photo_cells(self) -> PhotoCells:
        """The verifier's cells of this library's photos (`picscope.photocells`)."""
        if self._cells is None:
            from picscope.photocells import PhotoCells

            self._cells = PhotoCells(self)
        return self._cells

    def rerank_for(self, enabled: bool | None = None) -> RerankSettings | None:
        """The re-rank a text search gets (None: none); `enabled` overrides `[search] rerank` (None: the config's)."""
        from picscope.rerank import settings_for

        chosen = self.config.search.rerank if enabled is None else enabled
        return settings_for(self.catalog.get_meta("encoder_name"), chosen)

    def rerank_results(self, text: str, results: list[SearchResult], k: int, settings: RerankSettings,
                       dedupe: bool = False) -> tuple[list[SearchResult], RerankInfo]:
        """Re-order the encoder's results for `text` (`picscope.rerank`), then fold copies, then keep `k`."""
        from picscope.rerank import rerank

        cells = self.photo_cells
        out, info = rerank(text, results, settings, cells, cells.verifier)
        if dedupe:
            out = self.collapse_duplicates(out)
        return out[:k], info

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise LibraryLockedError(
                    f"library {self.path} is being written by another picscope process (pid {holder}); "
                    "wait for it to finish and try again"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def index(
        self,
        folder: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        rebuild: bool = False,
        encoder: str | None = None,
    ) -> IndexReport:
        """Index `folder` recursively (incremental). `rebuild` re-encodes everything (optionally with a new encoder).

        A full disk raises `DiskFullError` (checked before each batch, and SQLITE_FULL/ENOSPC on the way);
        what was committed before stays consistent, and the next run continues from there.
        """
        self._refuse_readonly("index into it")
        try:
            return self._index(folder, progress=progress, rebuild=rebuild, encoder=encoder)
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc):
                raise self.catalog.disk_full_error() from exc
            raise
        except OSError as exc:
            if is_enospc(exc):
                raise _disk_full(exc, self.path) from exc
            if exc.errno == errno.EROFS:
                self.readonly = True
                self._refuse_readonly("index into it")
            raise

    def _index(
        self,
        folder: str | os.PathLike[str],
        *,
        progress: Progress | None,
        rebuild: bool,
        encoder: str | None,
    ) -> IndexReport:
        with self.write_lock():
            if rebuild:
                self._reset(encoder or self.encoder_spec)
            if self.catalog.get_meta("encoder_name") is None:
                self.catalog.set_meta("encoder_name", self.encoder.name)
            _ = self.store  # creates it with the encoder's dim
            self.reconcile()
            self.migrate_vectors()  # a library of full vectors moves to its encoder's compact format, once
            from picscope.indexer import Indexer

            cells = self._cells_for_index()
            indexer = Indexer(self.catalog, self.store, self.encoder, self.config.index, progress, cells=cells)
            report = indexer.run(folder)
            if cells is not None:
                if progress is not None:
                    progress.stage("cells for re-ranking")
                report.cells = cells.backfill(progress)
            return report

    def _cells_for_index(self) -> PhotoCells | None:
        """The cell store the indexer keeps up to date, when this library re-ranks. When it does not, cells left
        from before are dropped: nothing would keep them in step with the photos."""
        if self.rerank_for() is not None:
            return self.photo_cells
        self._close_cells()
        import shutil

        shutil.rmtree(self.layout.cells, ignore_errors=True)
        return None

    def _reset(self, encoder_spec: str) -> None:
        """Drop every vector (and, for a new encoder, the store) so the next run re-encodes."""
        import shutil

        if self.dim is not None:
            self.store.drop()  # data outside the store folder (a Milvus server collection)
        if self._store is not None:
            self._store.close()
            self._store = None
        shutil.rmtree(self.layout.store, ignore_errors=True)
        self._close_cells()
        shutil.rmtree(self.layout.cells, ignore_errors=True)
        self.catalog.reset(encoder_spec)
        self.config.encoder = encoder_spec
        self.config.save(self.layout.config)
        self._encoder = None

    def reconcile(self) -> tuple[int, int]:
        """Make the store agree with the catalog (the source of truth) after a crash.

        Returns (orphan vectors removed, catalog files without a vector marked for re-indexing).
        """
        store_ids = self.store.ids()
        ok_ids = np.array(self.catalog.ok_ids(), np.int64)
        orphans = np.setdiff1d(store_ids, ok_ids, assume_unique=False)
        missing = np.setdiff1d(ok_ids, store_ids, assume_unique=False)
        if len(orphans):
            self.store.delete(orphans)
        if len(missing):
            self.catalog.mark_missing(missing.tolist())
        if self.layout.cells.exists() and self.rerank_for() is not None:
            cells = self.photo_cells.store  # rows written before a kill, for files whose rows never committed
            stray = np.setdiff1d(cells.ids(), ok_ids)
            if len(stray):
                cells.delete(stray)
        return len(orphans), len(missing)

    # -- reading -------------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.embed_texts(list(texts))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encoder.embed_images(list(images))

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self.store.get(np.asarray(list(ids), np.int64))

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        add: Terms = (),
        subtract: Terms = (),
        min_score: float | None = None,
        min_relevance: float | None = None,
        path_prefix: str | None = None,
        exclude_ids: Sequence[int] = (),
        dedupe: bool = False,
        rerank: bool | None = None,
    ) -> list[SearchResult]:
        """Text → images, best first, with cosine scores.

        `add`/`subtract`: query arithmetic terms (text, `WEIGHT:text`, image paths, library ids, PIL images);
        `min_relevance`: a calibrated P(relevant) threshold; `dedupe`: collapse near-duplicates into one result;
        `rerank`: re-order the top candidates with the verifier (`picscope.rerank`; None: `[search] rerank`).
        A plain text query is re-ranked; one with `add`/`subtract` terms stays encoder-only.
        """
        return self.text_search(query, k, add=add, subtract=subtract, min_score=min_score,
                                min_relevance=min_relevance, path_prefix=path_prefix, exclude_ids=exclude_ids,
                                dedupe=dedupe, rerank=rerank)[0]

    def text_search(
        self,
        query: str,
        k: int = 10,
        *,
        add: Terms = (),
        subtract: Terms = (),
        min_score: float | None = None,
        min_relevance: float | None = None,
        path_prefix: str | None = None,
        exclude_ids: Sequence[int] = (),
        dedupe: bool = False,
        rerank: bool | None = None,
    ) -> tuple[list[SearchResult], RerankInfo | None]:
        """`search`, and what the re-rank did (None when it did not run)."""
        if not query or not query.strip():
            raise ValueError("empty query")
        vec = self.embed_texts([query])[0]
        vec, used = self.apply_terms(vec, add, subtract)
        plain = not add and not subtract
        settings = self.rerank_for(rerank) if plain else None
        options: dict[str, Any] = {"min_score": min_score, "min_relevance": min_relevance,
                                   "path_prefix": path_prefix, "exclude_ids": [*exclude_ids, *used],
                                   "text_query": plain}
        if settings is None:
            return self.search_vector(vec, k, dedupe=dedupe, **options), None
        want = max(settings.pool, 4 * k + 32 if dedupe else k)  # dedupe: room for the collapsed copies
        hits = self.search_vector(vec, want, **options)
        return self.rerank_results(query, hits, k, settings, dedupe)

    def apply_terms(self, vector: np.ndarray, add: Terms = (), subtract: Terms = ()) -> tuple[np.ndarray, list[int]]:
        """Query arithmetic (see `picscope.arithmetic`): the new vector and the library ids of added images."""
        if not add and not subtract:
            return vector, []
        from picscope.arithmetic import combine, parse_terms

        return combine(self, vector, parse_terms(add), parse_terms(subtract))

    # -- scores and near-duplicates ------------------------------------------------------------
    @property
    def calibration(self) -> Calibration | None:
        """The score → relevance calibration of this library's encoder, or None when it has none."""
        return calibration_for(self.catalog.get_meta("encoder_name") or self.encoder.name)

    def _score_floor(self, min_score: float | None, min_relevance: float | None, text_query: bool) -> float | None:
        if min_relevance is None:
            return min_score
        if not text_query:
            raise ConfigError("relevance is calibrated for text queries only (not for image, composed or "
                              "--add/--subtract queries); filter raw scores with --min-score instead")
        cal = self.calibration
        if cal is None:
            raise ConfigError(
                f"encoder {self.catalog.get_meta('encoder_name') or self.encoder_spec!r} has no relevance "
                "calibration, so --min-relevance cannot be used; filter raw scores with --min-score instead"
            )
        floor = cal.score_for(min_relevance)
        return floor if min_score is None else max(floor, min_score)

    def fingerprints(self, ids: Sequence[int]) -> dict[int, Fingerprint]:
        """Content hash, dHash and mean colour per file id; those missing (older libraries) are computed and stored."""
        from picscope.dedupe import Fingerprint, perceptual
        from picscope.imageio import load_image

        records = self.catalog.get_many(ids)
        known = self.catalog.phashes(r.hash for r in records.values() if r.hash)
        missing = {r.hash: r for r in records.values() if r.hash and r.hash not in known and r.status == "ok"}
        if missing:
            computed: dict[str, tuple[int, int]] = {}
            for h, rec in missing.items():
                try:
                    image = load_image(rec.raw, max_pixels=self.config.index.max_pixels, target_size=64)
                    computed[h] = perceptual(image)
                except (ImageDecodeError, OSError):
                    continue  # unreadable now: compared by content hash only
            self.catalog.put_phashes_if_free(computed)
            known.update(computed)
        out = {}
        for fid, rec in records.items():
            got = known.get(rec.hash) if rec.hash else None
            out[fid] = Fingerprint(rec.hash, *got) if got is not None else Fingerprint(rec.hash, None, None)
        return out

    def duplicates(self, max_distance: int | None = None) -> list[list[FileRecord]]:
        """Groups of byte-identical or near-identical indexed images (2+ each), largest first (`max_distance`:
        dHash bits; default `picscope.dedupe.DEFAULT_MAX_DISTANCE`)."""
        from picscope.dedupe import DEFAULT_MAX_DISTANCE, groups_of

        records = self.catalog.all("ok")
        prints = self.fingerprints([r.id for r in records])
        fps = [prints[r.id] for r in records]
        groups = groups_of(fps, DEFAULT_MAX_DISTANCE if max_distance is None else max_distance)
        return [[records[i] for i in group] for group in groups]

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        min_score: float | None = None,
        min_relevance: float | None = None,
        path_prefix: str | None = None,
        exclude_ids: Sequence[int] = (),
        allowed_ids: Sequence[int] | None = None,
        dedupe: bool = False,
        text_query: bool = False,
        querybank: bool | None = None,
    ) -> list[SearchResult]:
        """Nearest images to `vector`. `text_query`: the vector is a plain text embedding, so the results get a
        calibrated `relevance` (the calibration was fitted on text→image scores only) and `min_relevance` works.
        `querybank` (default: `text_query`): the vector is text-like (a text, or a mix of target descriptions), so
        the best `QUERYBANK_POOL` are re-ordered by score minus each photo's query-bank normaliser when the encoder
        has a bank and `[search] querybank` is on. Scores stay the encoder's cosine similarities."""
        if k <= 0:
            raise ValueError("k must be positive")
        min_score = self._score_floor(min_score, min_relevance, text_query)
        allowed: np.ndarray | None = None
        store_filter: MetaFilter | None = None
        if path_prefix:
            prefix = os.path.abspath(os.path.expanduser(path_prefix))
            if self.store.supports_filter:
                store_filter = MetaFilter(path_prefix=prefix)  # filtered on the store's side (Milvus)
            else:
                allowed = np.array(self.catalog.ids_with_prefix(prefix), np.int64)
        if allowed_ids is not None:
            a = np.asarray(list(allowed_ids), np.int64)
            allowed = a if allowed is None else np.intersect1d(allowed, a)
        excluded = set(int(i) for i in exclude_ids)
        want = (4 * k + 32 if dedupe else k) + len(excluded) + 8  # dedupe: room for the collapsed copies
        query = np.asarray(vector, np.float32)[None, :]
        bank = self._querybank(text_query if querybank is None else querybank)
        if bank is not None:
            want = max(want, QUERYBANK_POOL)
        hits = self.store.search(query, want, allowed, filter=store_filter).row(0)
        adjusted: dict[int, float] = {}
        if bank is not None:
            hits, adjusted = self._querybank_order(hits, bank, min(max(QUERYBANK_POOL, want), QUERYBANK_MAX))
        records = self.catalog.get_many(i for i, _ in hits)
        out: list[SearchResult] = []
        for fid, score in hits:
            rec = records.get(fid)
            if rec is None or rec.status != "ok" or fid in excluded:
                continue  # an orphan vector from an interrupted run, or excluded by the caller
            if min_score is not None and score < min_score:
                if bank is None:
                    break  # in score order: the rest are lower
                continue
            out.append(SearchResult(fid, rec.path, score, len(out) + 1, bank_score=adjusted.get(fid)))
            if len(out) == k and not dedupe:
                break
        if dedupe:
            out = self.collapse_duplicates(out)[:k]
        return self.with_relevance(out) if text_query else out

    def _querybank(self, wanted: bool) -> QueryBank | None:
        if not wanted or not self.config.search.querybank:
            return None
        return self.encoder.querybank

    def _querybank_order(self, hits: list[tuple[int, float]], bank: QueryBank, depth: int
                         ) -> tuple[list[tuple[int, float]], dict[int, float]]:
        """The first `depth` hits (at least `QUERYBANK_POOL`, all that were asked for up to `QUERYBANK_MAX`)
        re-ordered by score minus normaliser, the rest after them as they were; and those adjusted scores by id.
        The normalisers come from what the store scores (vectors or compact codes, ~2 ms for 50 photos) each time, so
        they follow a re-index."""
        head = hits[:depth]
        if not head:
            return hits, {}
        z = bank.normalizers_of_rows(*self.store.scored_rows(np.asarray([fid for fid, _ in head], np.int64)))
        adjusted = np.array([score for _, score in head], np.float32) - z
        order = np.argsort(-adjusted, kind="stable")
        return [head[j] for j in order] + hits[depth:], {fid: float(a) for (fid, _), a in
                                                                   zip(head, adjusted, strict=True)}

    def with_relevance(self, results: list[SearchResult]) -> list[SearchResult]:
        """The same results with `relevance` filled in (when the encoder has a calibration)."""
        cal = self.calibration if results else None
        if cal is None:
            return results
        return [replace(r, relevance=cal.relevance(r.score)) for r in results]

    def collapse_duplicates(self, results: list[SearchResult],
                            max_distance: int | None = None) -> list[SearchResult]:
        """Fold exact and near copies into the best-ranked one (`similar_ids`), then renumber the ranks."""
        from picscope.dedupe import DEFAULT_MAX_DISTANCE, Fingerprint, collapse

        prints = self.fingerprints([r.id for r in results])
        fps = [prints.get(r.id, Fingerprint(None, None)) for r in results]
        kept: list[SearchResult] = []
        for group in collapse(fps, DEFAULT_MAX_DISTANCE if max_distance is None else max_distance):
            head = results[group[0]]
            similar = (*head.similar_ids, *(results[i].id for i in group[1:]))
            kept.append(replace(head, rank=len(kept) + 1, similar_ids=similar))
        return kept

    def resolve_image(self, image: str | os.PathLike[str] | int | Image.Image) -> tuple[np.ndarray, int | None]:
        """Vector for an image given as a library id, an indexed path, another file, or a PIL image."""
        from PIL import Image

        from picscope.imageio import load_image

        if isinstance(image, Image.Image):
            return self.embed_images([image])[0], None
        if isinstance(image, int | np.integer):
            rec = self.catalog.get(int(image))
            if rec is None or rec.status != "ok":
                raise ImageNotFoundError(f"no indexed image with id {image}")
            return self.vectors([rec.id])[0], rec.id
        raw = os.fsencode(os.path.abspath(os.path.expanduser(os.fspath(image))))
        rec = self.catalog.by_raw(raw)
        if rec is not None and rec.status == "ok":
            try:
                st = os.stat(raw)
                if st.st_size == rec.size and st.st_mtime_ns == rec.mtime_ns:
                    return self.vectors([rec.id])[0], rec.id
            except OSError:
                return self.vectors([rec.id])[0], rec.id
        img = load_image(raw, max_pixels=self.config.index.max_pixels, target_size=self.encoder.image_size)
        return self.embed_images([img])[0], (rec.id if rec is not None and rec.status == "ok" else None)

    def similar(
        self,
        image: str | os.PathLike[str] | int | Image.Image,
        k: int = 10,
        *,
        add: Terms = (),
        subtract: Terms = (),
        min_score: float | None = None,
        min_relevance: float | None = None,
        path_prefix: str | None = None,
        dedupe: bool = False,
    ) -> list[SearchResult]:
        """Image → similar images (the query image itself is left out); `add`/`subtract` as in `search`."""
        vec, self_id = self.resolve_image(image)
        vec, used = self.apply_terms(vec, add, subtract)
        exclude = [*used, *([self_id] if self_id is not None else [])]
        return self.search_vector(vec, k, min_score=min_score, min_relevance=min_relevance, path_prefix=path_prefix,
                                  exclude_ids=exclude, dedupe=dedupe)

    def get(self, file_id: int) -> FileRecord | None:
        return self.catalog.get(file_id)

    def problems(self) -> list[Problem]:
        """Every current problem: files not indexed, kept at a previous version, or skipped by the last scan."""
        return self.catalog.problems()

    def caches(self) -> list[dict[str, Any]]:
        """The caches picscope keeps for this library and for all libraries, with their sizes."""
        from picscope.paths import cache_entries

        return [c.to_dict() for c in cache_entries(self.path)]

    def status(self) -> LibraryStatus:
        from picscope.store.cells import summary

        counts = self.catalog.counts()
        vectors = len(self.store) if self.dim is not None else 0
        cells = summary(self.layout.cells)
        return LibraryStatus(
            path=str(self.path),
            encoder=self.catalog.get_meta("encoder"),
            encoder_name=self.catalog.get_meta("encoder_name"),
            store=self.config.store,
            dim=self.dim,
            schema_version=SCHEMA_VERSION,
            files=counts["ok"],
            errors=counts["error"],
            stale=counts["stale"],
            skipped=counts["skipped"],
            vectors=vectors,
            readonly=self.readonly,
            roots=[p for p, _ in self.catalog.roots()],
            caches=self.caches(),
            vector_format=self.vector_format,
            bytes_per_photo=self._bytes_per_photo(),
            cells=cells[1] if cells else None,
            cells_model=cells[0] if cells else None,
            cell_bytes_per_photo=cells[2] if cells else None,
        )

    def _bytes_per_photo(self) -> int | None:
        if self.dim is None:
            return None
        codec = getattr(self._store, "codec", None)  # the open store's: loading a codec again costs ~0.08 s
        if not isinstance(codec, VectorCodec) or codec.name != self.vector_format:
            codec = self.codec()
        return codec.bytes_per_vector if codec is not None else self.dim * 4
