"""Reference photos uploaded for "like this, but …": checked, normalised, kept outside the library, expired.

An upload is accepted only if its bytes decode as an image (the format is sniffed; the file name and the
declared content type are ignored), within the byte limit, the decompression-bomb pixel guard and a memory budget
for the decoded pixels computed from the header's size, mode and bit depth (a 110 kB 16-bit greyscale PNG of
7000×7000 is 98 MB of pixels), all checked before any pixel is decoded. JPEGs are decoded at a reduced DCT scale
(`draft`); other images are shrunk in their own mode before any conversion, at most `max_decodes` at once, and
freed memory is handed back to the OS afterwards (`malloc_trim`).

It is stored re-encoded as PNG (metadata dropped) under a random id in
the server's upload folder, which must not lie inside the library; uploads expire after a TTL, the oldest go
beyond a count, and a temporary folder is removed when the server stops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from picscope.server.images import encode_jpeg, sniff

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SIDE = 2048  # uploads are stored at most this large (plenty for a reference photo)
MAX_DECODE_BYTES = 160 * 1024 * 1024  # pixels in memory while one upload is decoded
MAX_DECODES = 2  # uploads decoded at once
# bytes per pixel as Pillow holds an image in memory (multi-band modes take 4 bytes a pixel)
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def decode_cost(mode: str, width: int, height: int) -> int:
    """Peak bytes of pixels while decoding an image of this mode and size (before shrinking it): the decoded
    raster, plus an RGBA copy for palette images (converted before they can be resized)."""
    pixels = width * height
    return pixels * BYTES_PER_PIXEL.get(mode, 4) + (pixels * 4 if mode in ("P", "PA") else 0)


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps large freed blocks otherwise)."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


_libc = _load_libc()


class UploadRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass
class Upload:
    id: str
    path: Path
    format: str
    width: int
    height: int
    bytes: int
    created: float


def shrink_to_rgb(img: Image.Image, side: int) -> Image.Image:
    """Shrink first, in the image's own mode where Pillow can, then convert the small image to RGB: the big
    raster is never copied into a wider mode. High-bit-depth images are stretched to 8 bits after shrinking."""
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode == "CMYK" or img.mode == "YCbCr" or img.mode == "LAB" or img.mode == "HSV":
        img = img.convert("RGB")
    if max(img.size) > side:
        scale = side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BOX if img.mode in HIGH_DEPTH else Image.Resampling.LANCZOS,
                         reducing_gap=2.0 if img.mode not in HIGH_DEPTH else None)
    if img.mode in HIGH_DEPTH:
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale8 = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(np.clip((arr - lo) * scale8, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


class UploadStore:
    def __init__(self, folder: Path | None, library_path: Path, *, max_bytes: int, max_pixels: int,
                 max_count: int, ttl_s: float, max_decode_bytes: int = MAX_DECODE_BYTES,
                 max_decodes: int = MAX_DECODES) -> None:
        self.temporary = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="picscope-uploads-")) if folder is None else Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        lib = os.path.realpath(library_path)
        up = os.path.realpath(self.folder)
        if up == lib or up.startswith(lib.rstrip("/") + "/"):
            raise ValueError(f"the upload folder {self.folder} must not lie inside the library {library_path}")
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.max_decode_bytes = max_decode_bytes
        self._decoding = threading.BoundedSemaphore(max(1, max_decodes))
        self.max_count, self.ttl_s = max_count, ttl_s
        self._items: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, data: bytes) -> Upload:
        if not data:
            raise UploadRefused(400, "empty", "the uploaded file is empty")
        if len(data) > self.max_bytes:
            raise UploadRefused(413, "too_large", f"upload too large: the limit is {self.max_bytes} bytes")
        fmt = sniff(data)
        if fmt is None:
            raise UploadRefused(415, "not_an_image", "the upload is not an image (its content was checked, "
                                "not its name): use JPEG, PNG, WebP, GIF, BMP or TIFF")
        with self._decoding:
            try:
                img = self.decode(data)
            finally:
                release_memory()
        uid = uuid.uuid4().hex
        path = self.folder / f"{uid}.png"
        tmp = self.folder / f".{uid}.tmp"
        img.save(tmp, "PNG")
        os.replace(tmp, path)
        up = Upload(uid, path, fmt, img.width, img.height, len(data), time.time())
        with self._lock:
            self._items[uid] = up
        self.expire()
        return up

    def decode(self, data: bytes) -> Image.Image:
        """The upload as RGB, at most MAX_SIDE a side, with bounded memory (see the module docstring)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                src = Image.open(io.BytesIO(data))
        except Exception as exc:
            raise UploadRefused(415, "undecodable", f"upload refused: cannot open the image ({exc})") from None
        w, h = src.size
        if w <= 0 or h <= 0:
            raise UploadRefused(415, "undecodable", f"upload refused: invalid image size {w}x{h}")
        if w * h > self.max_pixels:
            raise UploadRefused(413, "too_many_pixels", f"upload refused: {w}x{h} = {w * h / 1e6:.0f} MP exceeds "
                                f"the {self.max_pixels / 1e6:.0f} MP limit (decompression-bomb guard)")
        if src.format == "JPEG":
            src.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode at a reduced DCT scale: 1/2, 1/4 or 1/8
        cost = decode_cost(src.mode, *src.size)  # after draft: the size the JPEG will decode at
        if cost > self.max_decode_bytes:
            raise UploadRefused(413, "too_much_memory", f"upload refused: a {w}x{h} {src.mode} image needs "
                                f"{cost / 2**20:.0f} MB to decode; the limit is {self.max_decode_bytes / 2**20:.0f}"
                                " MB (send a smaller or 8-bit version of the photo)")
        try:
            if getattr(src, "is_animated", False):
                src.seek(0)
            src.load()
            img = shrink_to_rgb(src, MAX_SIDE)
            return ImageOps.exif_transpose(img) or img
        except UploadRefused:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UploadRefused(415, "undecodable", f"upload refused: corrupt image data ({exc})") from None
        finally:
            src.close()

    def get(self, uid: str) -> Upload:
        self.expire()
        with self._lock:
            up = self._items.get(uid) if UPLOAD_ID.match(uid) else None
        if up is None or not up.path.exists():
            raise UploadRefused(404, "not_found", f"no upload with id {uid!r} (uploads expire after "
                                f"{self.ttl_s / 60:.0f} minutes; upload the photo again)")
        return up

    def image(self, uid: str) -> Image.Image:
        with Image.open(self.get(uid).path) as img:
            return img.convert("RGB")

    def thumbnail(self, uid: str, size: int) -> bytes:
        return encode_jpeg(self.image(uid), size)

    def delete(self, uid: str) -> None:
        up = self.get(uid)
        with self._lock:
            self._items.pop(up.id, None)
        up.path.unlink(missing_ok=True)

    def expire(self) -> None:
        now = time.time()
        with self._lock:
            items = sorted(self._items.values(), key=lambda u: u.created)
            old = [u for u in items if now - u.created > self.ttl_s]
            keep = [u for u in items if u not in old]
            old += keep[: max(0, len(keep) - self.max_count)]
            for u in old:
                self._items.pop(u.id, None)
        for u in old:
            u.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for u in items:
            u.path.unlink(missing_ok=True)
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)
