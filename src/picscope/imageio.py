"""Safe image decoding: every failure becomes an `ImageDecodeError` whose message is the reason shown.

Whether a file is an image is decided by its content (`sniff`: Pillow's registered openers, plus the
RAW signatures), not by its name. Handles JPEG draft-mode downscaling, EXIF orientation,
palette/RGBA/LA (composited on white), CMYK, 16-bit and float greyscale, animated images (first
frame), HEIC/HEIF (pillow-heif), AVIF (Pillow), camera RAW (rawpy: the embedded JPEG preview when
there is one, else a half-size demosaic), and a decompression-bomb guard checked from the header
before any pixel is decoded. `open_regular` opens a path without ever blocking on a FIFO or device.
"""

from __future__ import annotations

import io
import os
import stat as statmod
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from picscope.errors import ImageDecodeError

# Names that are certainly meant as images. Only used to tell "a broken image" (an error) from "some
# other file" (skipped) when the content is not recognised, and by the evaluation dataset loader.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
     ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jpf", ".jpx"}
)
RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef",
     ".srw", ".x3f", ".erf", ".kdc", ".dcr", ".mrw", ".3fr", ".mef", ".mos", ".iiq", ".rwl", ".raw"}
)
SNIFF_BYTES = 4096  # how much of a file `sniff` looks at

# We apply our own (configurable) limit before decoding; keep PIL's own guard out of the way.
Image.MAX_IMAGE_PIXELS = None

try:  # HEIC/HEIF (a base dependency; AVIF is read by Pillow itself)
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - a broken install
    HEIF_SUPPORTED = False

Image.init()  # load every Pillow plugin, so that `sniff` knows all registered openers


def _suffix(name: str | bytes | None) -> str:
    if name is None:
        return ""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def is_image_name(name: str | bytes) -> bool:
    """True for the usual image (and RAW) file name extensions."""
    ext = _suffix(name)
    return ext in IMAGE_EXTENSIONS or ext in RAW_EXTENSIONS


def is_raw_name(name: str | bytes) -> bool:
    return _suffix(name) in RAW_EXTENSIONS


@dataclass(frozen=True)
class Sniff:
    """What the first bytes of a file are: `format` (a Pillow format or "RAW") or, if not an image, why."""

    format: str | None
    reason: str | None = None

    @property
    def is_image(self) -> bool:
        return self.format is not None


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_OTHER_SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (0, b"\x1f\x8b", "a gzip archive"),
    (0, b"7z\xbc\xaf", "a 7-Zip archive"),
    (0, b"Rar!", "a RAR archive"),
    (0, b"\x7fELF", "a program (ELF)"),
    (0, b"ID3", "an MP3 audio file"),
    (0, b"OggS", "an Ogg audio/video file"),
    (0, b"fLaC", "a FLAC audio file"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (0, b"SQLite format 3", "an SQLite database"),
    (8, b"AVI ", "an AVI video"),
    (8, b"WAVE", "a WAV audio file"),
]
_VIDEO_BRANDS = (b"qt  ", b"isom", b"iso2", b"mp41", b"mp42", b"M4V ", b"M4A ", b"3gp4", b"3gp5", b"avc1", b"dash")


def _tiff_has_tag(head: bytes, tag: int) -> bool:
    """True when the first IFD of the TIFF in `head` has `tag` (e.g. 50706, DNGVersion)."""
    try:
        order = "<" if head[:2] == b"II" else ">"
        (off,) = struct.unpack_from(order + "I", head, 4)
        (n,) = struct.unpack_from(order + "H", head, off)
        for i in range(min(n, 512)):
            (t,) = struct.unpack_from(order + "H", head, off + 2 + 12 * i)
            if t == tag:
                return True
    except struct.error:
        return False
    return False


def looks_raw(head: bytes, name: str | bytes | None = None) -> bool:
    """A camera RAW file, by signature (DNG, CR2, CR3, RAF, ORF, RW2) or by a RAW name on a TIFF body."""
    if head[:2] in (b"II", b"MM") and head[:4] in _TIFF_MAGIC:
        return is_raw_name(name or "") or head[8:11] == b"CR\x02" or _tiff_has_tag(head, 50706)
    if head.startswith(b"FUJIFILMCCD-RAW") or head[:4] in (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00"):
        return True
    return head[4:12] == b"ftypcrx "


def sniff(head: bytes, name: str | bytes | None = None) -> Sniff:
    """Decide from a file's first bytes (`SNIFF_BYTES` of them) whether it is an image we can read."""
    if not head:
        return Sniff(None, "empty file (0 bytes)")
    if looks_raw(head, name):
        return Sniff("RAW")
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if accept is None:
            continue
        try:
            if accept(head):
                return Sniff(fmt)
        except Exception:  # a plugin's check that chokes on short or odd input
            continue
    if Image.registered_extensions().get(_suffix(name)) in {f for f in Image.ID if Image.OPEN[f][1] is None}:
        return Sniff(Image.registered_extensions()[_suffix(name)])  # formats without a signature (TGA, ...)
    return Sniff(None, "not an image (" + _describe(head) + ")")


def _describe(head: bytes) -> str:
    for offset, magic, what in _OTHER_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return what
    if head[4:8] == b"ftyp":
        return "a video (MP4/QuickTime)" if head[8:12] in _VIDEO_BRANDS else f"an ISO media file ({head[8:12]!r})"
    sample = head[:SNIFF_BYTES]
    if b"\x00" not in sample:
        try:
            sample.decode("utf-8")
            return "text file"
        except UnicodeDecodeError as exc:
            if exc.start >= len(sample) - 3:  # a multi-byte character cut at the end of the sample
                return "text file"
    return "unrecognised format"


class NotRegularFileError(ImageDecodeError):
    """The path is a FIFO, a device, a socket or a folder: never read as an image."""


def open_regular(path: str | bytes) -> tuple[int, os.stat_result]:
    """Open `path` for reading without blocking (O_NONBLOCK), and refuse anything but a regular file.

    A FIFO would block a plain open() forever and a device could return endless data; both are
    refused with `NotRegularFileError("not a regular file: …")`. open() errors propagate as `OSError`.
    Returns (fd, fstat of the fd).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    st = os.fstat(fd)
    if not statmod.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFileError(f"not a regular file: {file_kind(st.st_mode)}")
    return fd, st


def file_kind(mode: int) -> str:
    """A readable name for a non-regular file type."""
    for test, name in (
        (statmod.S_ISFIFO, "a FIFO / named pipe"),
        (statmod.S_ISCHR, "a character device"),
        (statmod.S_ISBLK, "a block device"),
        (statmod.S_ISSOCK, "a socket"),
        (statmod.S_ISDIR, "a folder"),
        (statmod.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "a special file"


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def _raw_preview(jpeg: bytes, flip: int, max_pixels: int) -> Image.Image | None:
    """The embedded preview, turned like the photo (LibRaw's `flip`) unless the preview carries its own EXIF
    orientation; None when it is too small to stand for the photo."""
    try:
        own = Image.open(io.BytesIO(jpeg)).getexif().get(0x0112, 1)
        img = decode_image(jpeg, max_pixels=max_pixels)
    except Exception:
        return None
    if min(img.size) < 64:
        return None
    if own == 1 and flip in _FLIP:
        img = img.transpose(_FLIP[flip])
    return img


def _decode_raw(data: bytes, max_pixels: int) -> Image.Image:
    """A camera RAW file: its embedded JPEG preview when it has one, else a fast half-size demosaic."""
    try:
        import rawpy
    except ImportError:  # pragma: no cover - a broken install
        raise ImageDecodeError("camera RAW file, but rawpy is not installed (pip install rawpy)") from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            if sizes.width * sizes.height > max_pixels:
                raise ImageDecodeError(
                    f"image too large: {sizes.width}x{sizes.height} exceeds the {max_pixels / 1e6:.0f} MP limit "
                    "(decompression-bomb guard; raise index.max_pixels to allow it)"
                )
            flip = sizes.flip
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
                preview = _raw_preview(bytes(thumb.data), flip, max_pixels)
                if preview is not None:
                    w, h = sizes.width, sizes.height
                    preview.info["original_size"] = (h, w) if flip in (5, 6) else (w, h)
                    return preview
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8, no_auto_bright=False)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(f"cannot decode camera RAW file: {type(exc).__name__}: {exc}") from None
    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    # postprocess() applies the orientation itself; report the oriented full size
    w, h = sizes.width, sizes.height
    img.info["original_size"] = (h, w) if flip in (5, 6) else (w, h)
    return img


def decode_image(
    data: bytes, *, max_pixels: int = 100_000_000, target_size: int | None = None, name: str | bytes | None = None
) -> Image.Image:
    """Decode bytes into an RGB image, or raise `ImageDecodeError` with the reason.

    `target_size`: JPEGs are decoded at the smallest DCT scale that keeps both sides >= this
    (draft mode), which makes large photos several times cheaper to decode. `name`: the file name,
    used only to recognise RAW formats that are plain TIFF inside (NEF, ARW, PEF, ...).
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    if looks_raw(data[:SNIFF_BYTES], name):
        return _decode_raw(data, max_pixels)
    img: Image.Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (" + _describe(data[:SNIFF_BYTES]) + ")") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large (decompression-bomb guard): {exc}") from None
    except Exception as exc:
        raise ImageDecodeError(f"cannot open image: {type(exc).__name__}: {exc}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image too large: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the "
            f"{max_pixels / 1e6:.0f} MP limit (decompression-bomb guard; raise index.max_pixels to allow it)"
        )
    try:
        if target_size and img.format == "JPEG":
            img.draft("RGB", (target_size, target_size))
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        img = ImageOps.exif_transpose(img) or img
        out = _to_rgb(img)
        # the file's own size (draft mode may have decoded it smaller), after EXIF rotation
        out.info["original_size"] = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        return out
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower():
            raise ImageDecodeError(f"truncated image data: {msg}") from None
        raise ImageDecodeError(f"corrupt image data: {type(exc).__name__}: {msg}") from None
    except Exception as exc:
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from None


def load_image(path: str | bytes, *, max_pixels: int = 100_000_000, target_size: int | None = None) -> Image.Image:
    """Read and decode a file; unreadable files (and FIFOs, devices) raise `ImageDecodeError` with the reason."""
    try:
        fd, _ = open_regular(path)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels=max_pixels, target_size=target_size, name=path)
