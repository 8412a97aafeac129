"""Safe image decoding: every failure becomes an `ImageDecodeError` whose message is the reason shown.

Handles JPEG draft-mode downscaling, EXIF orientation, palette/RGBA/LA (composited on white),
CMYK, 16-bit and float greyscale, animated images (first frame), optional HEIC (pillow-heif), and a
decompression-bomb guard checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from picscope.errors import ImageDecodeError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".heic", ".heif"}
)

# We apply our own (configurable) limit before decoding; keep PIL's own guard out of the way.
Image.MAX_IMAGE_PIXELS = None

try:  # optional HEIC/HEIF support
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - optional
    HEIF_SUPPORTED = False


def is_image_name(name: str | bytes) -> bool:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


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


def decode_image(data: bytes, *, max_pixels: int = 100_000_000, target_size: int | None = None) -> Image.Image:
    """Decode bytes into an RGB image, or raise `ImageDecodeError` with the reason.

    `target_size`: JPEGs are decoded at the smallest DCT scale that keeps both sides >= this
    (draft mode), which makes large photos several times cheaper to decode.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    img: Image.Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
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
    """Read and decode a file; unreadable files raise `ImageDecodeError` with the OS reason."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels=max_pixels, target_size=target_size)
