"""The verifier's cells of a library's photos: read from the cell store, else computed from the photo and kept.

The indexer stores cells for every photo it encodes (`from_grid`, from the image network's pass it runs anyway).
A photo without stored cells (a library indexed before cells were kept, or by an encoder that does not run
EfficientNet-Lite0) is decoded and run through the network when a search first needs it (`for_ids`); the cells
are written to the store when the library's write lock is free (else kept in memory for this process), and the
next `picscope index` computes the rest (`backfill`). Imports of PIL and ONNX Runtime happen only on those paths:
a search whose candidates all have stored cells loads neither.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from picscope.errors import DiskFullError, ImageDecodeError, LibraryLockedError, StoreError
from picscope.store.cells import CellStore

if TYPE_CHECKING:
    from PIL import Image

    from picscope.indexer import Progress
    from picscope.library import Library
    from picscope.models.verifier import Verifier
    from picscope.store.catalog import FileRecord

MEMORY = 1024  # cells computed on demand but not written (a locked or read-only library), kept per process
BACKFILL_BATCH = 16


class PhotoCells:
    def __init__(self, library: Library) -> None:
        self.library = library
        self._store: CellStore | None = None
        self._memory: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def verifier(self) -> Verifier:
        """The shipped verifier: one per process (`load_verifier` is cached), shared with the `bundled` vision."""
        from picscope.models.verifier import load_verifier

        return load_verifier()

    @property
    def store(self) -> CellStore:
        with self._lock:
            if self._store is None:
                v = self.verifier
                self._store = CellStore(self.library.layout.cells, v.name, 50, int(v.w["pca"].shape[0]),
                                        readonly=self.library.readonly)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._memory.clear()

    # -- index time -------------------------------------------------------------------------------
    def from_grid(self, grid: np.ndarray) -> np.ndarray:
        """(n, 49, 1280) image-network cells -> (n, 50, d) what the verifier reads (and the store keeps)."""
        return self.verifier.cells(grid)

    def missing(self) -> list[int]:
        """Indexed photos without stored cells."""
        ok = np.array(self.library.catalog.ok_ids(), np.int64)
        return np.setdiff1d(ok, self.store.ids()).tolist()

    def backfill(self, progress: Progress | None = None) -> int:
        """Compute and store the cells of every indexed photo that has none (write lock held). Returns how many."""
        todo = self.missing()
        if not todo:
            return 0
        if progress is not None:
            progress.start(len(todo))
        done = 0
        try:
            for start in range(0, len(todo), BACKFILL_BATCH):
                chunk = todo[start : start + BACKFILL_BATCH]
                cells = self._compute(self.library.catalog.get_many(chunk).values())
                if cells:
                    self.store.put(np.array(list(cells), np.int64), np.stack(list(cells.values())))
                done += len(cells)
                if progress is not None:
                    progress.advance(len(chunk))
        finally:
            if progress is not None:
                progress.finish()
        return done

    # -- query time -------------------------------------------------------------------------------
    def for_ids(self, ids: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
        """{file id: (50, d) cells} for the photos (those that cannot be read are left out), and how many of
        them had to be computed now."""
        got = self.store.get(np.asarray(ids, np.int64))
        with self._lock:
            for i in ids:
                if i not in got and i in self._memory:
                    got[i] = self._memory[i]
        todo = [i for i in ids if i not in got]
        if not todo:
            return got, 0
        fresh = self._compute(self.library.catalog.get_many(todo).values())
        got.update(fresh)
        if fresh:
            self._keep(fresh)
        return got, len(fresh)

    def _keep(self, fresh: dict[int, np.ndarray]) -> None:
        """Write computed cells to the store when no other writer holds the library, else keep them in memory."""
        if not self.library.readonly:  # a full disk or a busy library must not fail the search: memory then
            with contextlib.suppress(LibraryLockedError, DiskFullError, StoreError, OSError), self.library.write_lock():
                self.store.put(np.array(list(fresh), np.int64), np.stack(list(fresh.values())))
                return
        with self._lock:
            self._memory.update(fresh)
            while len(self._memory) > MEMORY:
                self._memory.popitem(last=False)

    def _compute(self, records: Iterable[FileRecord]) -> dict[int, np.ndarray]:
        """Decode the photos (two threads) and run the image network once for all of them."""
        from concurrent.futures import ThreadPoolExecutor  # not at import: a search with stored cells never needs it

        recs = [r for r in records if r.status == "ok"]
        images: list[tuple[int, Image.Image]] = []
        with ThreadPoolExecutor(max(1, min(2, len(recs)))) as pool:
            for rid, image in zip([r.id for r in recs], pool.map(self._load, recs), strict=True):
                if image is not None:
                    images.append((rid, image))
        if not images:
            return {}
        cells = self.verifier.image_cells([im for _, im in images])
        return {rid: c for (rid, _), c in zip(images, cells, strict=True)}

    def _load(self, record: FileRecord) -> Image.Image | None:
        from picscope.encoders.towers import IMAGE_SIZE
        from picscope.imageio import load_image

        try:
            return load_image(record.raw, max_pixels=self.library.config.index.max_pixels, target_size=IMAGE_SIZE)
        except (ImageDecodeError, OSError):
            return None  # moved or unreadable since it was indexed: scored without cells

