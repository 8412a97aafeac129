"""Reference photos uploaded for "like this, but …": checked, normalised, kept outside the library, expired.

An upload is accepted only if its bytes decode as an image (the format is sniffed; the file name and the
declared content type are ignored), within the byte limit and the decompression-bomb pixel guard (checked from
the header before any pixel is decoded). It is stored re-encoded as PNG (metadata dropped) under a random id in
the server's upload folder, which must not lie inside the library; uploads expire after a TTL, the oldest go
beyond a count, and a temporary folder is removed when the server stops.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from picscope.errors import ImageDecodeError
from picscope.imageio import decode_image
from picscope.server.images import encode_jpeg, sniff

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SIDE = 2048  # uploads are stored at most this large (plenty for a reference photo)


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


class UploadStore:
    def __init__(self, folder: Path | None, library_path: Path, *, max_bytes: int, max_pixels: int,
                 max_count: int, ttl_s: float) -> None:
        self.temporary = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="picscope-uploads-")) if folder is None else Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        lib = os.path.realpath(library_path)
        up = os.path.realpath(self.folder)
        if up == lib or up.startswith(lib.rstrip("/") + "/"):
            raise ValueError(f"the upload folder {self.folder} must not lie inside the library {library_path}")
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
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
        try:
            img = decode_image(data, max_pixels=self.max_pixels, target_size=MAX_SIDE)
        except ImageDecodeError as exc:
            code = "too_many_pixels" if "too large" in str(exc) else "undecodable"
            raise UploadRefused(413 if code == "too_many_pixels" else 415, code, f"upload refused: {exc}") from None
        img.thumbnail((MAX_SIDE, MAX_SIDE))
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
