"""Library images by id: the only way the server reads a photo. There is no route that takes a path.

An id is looked up in the catalog (status `ok` only). The file is opened through its real path (symlinks
resolved) with O_NOFOLLOW, and served only when that real path lies inside one of the library's indexed folders
and the open file is the same regular file, with the size and modification time the catalog recorded. So
`../`, encoded variants, absolute paths and symlinks (planted before or after indexing) can never make the
server read anything but an indexed photo. What is served is sniffed from the bytes, never from the name.

Thumbnails are JPEGs cached on disk under `<library>/thumbs/<size>/`, keyed by id and content hash. The file
is checked against the catalog before a cached thumbnail is served (one open + fstat), so a photo deleted since
indexing answers 410 and one changed since indexing 409, as the full image does, until it is re-indexed.
"""

from __future__ import annotations

import io
import os
import stat as statmod
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from picscope.errors import ImageDecodeError
from picscope.imageio import decode_image
from picscope.library import Library
from picscope.store.catalog import Catalog, FileRecord

WEB_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
               "BMP": "image/bmp"}
THUMB_QUALITY = 82


class ImageRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass
class Blob:
    data: bytes
    media_type: str
    etag: str


def version_tag(rec: FileRecord) -> str:
    """A short tag that changes whenever the file's content does (used in URLs and ETags)."""
    return (rec.hash or f"{rec.size:x}{rec.mtime_ns:x}")[:16]


def sniff(data: bytes) -> str | None:
    """The image format from the bytes (PIL reads the header only), or None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:
        return None


class LibraryImages:
    def __init__(self, library: Library, *, thumb_dir: Path | None = None) -> None:
        self.library = library
        self.max_pixels = library.config.index.max_pixels
        self.max_bytes = library.config.index.max_file_bytes
        self.thumb_dir = thumb_dir if thumb_dir is not None else library.layout.thumbs
        self._roots: list[bytes] | None = None
        self._lock = threading.Lock()
        self.cache_ok = True

    # -- where files may be -------------------------------------------------------------------------------
    def _load_roots(self) -> list[bytes]:
        """Real paths of the indexed folders (read-only catalog connection; the library is never written)."""
        catalog = Catalog.open_readonly(self.library.layout.catalog)  # also on a read-only mount
        try:
            raws = catalog.root_raws()
        finally:
            catalog.close()
        return [os.path.realpath(r).rstrip(b"/") + b"/" for r in raws]

    def roots(self, refresh: bool = False) -> list[bytes]:
        with self._lock:
            if self._roots is None or refresh:
                self._roots = self._load_roots()
            return self._roots

    def _inside(self, real: bytes) -> bool:
        if any(real.startswith(r) for r in self.roots()):
            return True
        return any(real.startswith(r) for r in self.roots(refresh=True))  # a folder indexed since we started

    # -- reading ------------------------------------------------------------------------------------------
    def record(self, file_id: int) -> FileRecord:
        rec = self.library.get(file_id) if 0 < file_id < 2**63 else None
        if rec is None or rec.status != "ok":
            raise ImageRefused(404, "not_found", f"no indexed image with id {file_id}")
        return rec

    def _open_checked(self, rec: FileRecord) -> int:
        """An fd of the indexed file, or ImageRefused: 403 outside the indexed folders or not a regular file,
        410 gone from disk, 409 changed since it was indexed (size or mtime), 413 over the size limit."""
        real = os.path.realpath(rec.raw)
        if not self._inside(real):
            raise ImageRefused(403, "outside_library", f"image {rec.id} resolves to a file outside the indexed "
                               "folders (a symlink); it is not served")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ImageRefused(410, "gone", f"image {rec.id} is no longer on disk; re-index the folder") from None
        except OSError as exc:
            raise ImageRefused(403, "unreadable", f"image {rec.id} cannot be read: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise ImageRefused(403, "not_a_file", f"image {rec.id} is not a regular file any more")
            if st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
                raise ImageRefused(409, "changed", f"image {rec.id} changed on disk since it was indexed; "
                                   "re-index the folder")
            if st.st_size > self.max_bytes:
                raise ImageRefused(413, "too_large", f"image {rec.id} is larger than index.max_file_bytes")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def check(self, rec: FileRecord) -> None:
        """The file is still the one the catalog describes (see `_open_checked`); nothing is read."""
        os.close(self._open_checked(rec))

    def read(self, rec: FileRecord) -> bytes:
        """The bytes of an indexed file, or ImageRefused (see the module docstring for the rules)."""
        fd = self._open_checked(rec)
        try:
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def original(self, file_id: int, view_size: int) -> Blob:
        """The photo as the browser should show it: its own bytes for web formats, else a JPEG rendering."""
        rec = self.record(file_id)
        tag = version_tag(rec)
        data = self.read(rec)
        fmt = sniff(data)
        if fmt is None:
            raise ImageRefused(415, "not_an_image", f"image {rec.id} is not a readable image any more")
        if fmt in WEB_FORMATS:
            return Blob(data, WEB_FORMATS[fmt], f'"{rec.id}-{tag}-o"')
        return Blob(self._render(rec, data, view_size), "image/jpeg", f'"{rec.id}-{tag}-v{view_size}"')

    def thumbnail(self, file_id: int, size: int) -> Blob:
        rec = self.record(file_id)
        tag = version_tag(rec)
        etag = f'"{rec.id}-{tag}-t{size}"'
        path = self.thumb_dir / str(size) / f"{rec.id % 1000:03d}" / f"{rec.id}-{tag}.jpg"
        self.check(rec)  # a cached thumbnail of a photo deleted (410) or changed (409) since indexing is not served
        try:
            return Blob(path.read_bytes(), "image/jpeg", etag)
        except OSError:
            pass
        data = self._render(rec, self.read(rec), size)
        self._store(path, data, rec.id)
        return Blob(data, "image/jpeg", etag)

    def _render(self, rec: FileRecord, data: bytes, size: int) -> bytes:
        try:
            img = decode_image(data, max_pixels=self.max_pixels, target_size=size)
        except ImageDecodeError as exc:
            raise ImageRefused(415, "not_an_image", f"image {rec.id} cannot be decoded: {exc}") from None
        return encode_jpeg(img, size)

    def _store(self, path: Path, data: bytes, file_id: int) -> None:
        if not self.cache_ok:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in path.parent.glob(f"{file_id}-*.jpg"):  # an older version of the same photo
                old.unlink(missing_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            self.cache_ok = False  # a read-only library: thumbnails are made per request, not cached


def encode_jpeg(img: Image.Image, size: int) -> bytes:
    img = img.convert("RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS if size <= 512 else Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=False, progressive=size > 512)
    return buf.getvalue()
