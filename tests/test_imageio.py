"""Decoding of every pixel format we meet in real folders, with EXIF orientation and draft-mode downscaling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from picscope.errors import ImageDecodeError
from picscope.imageio import decode_image, is_image_name


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("1", "PNG"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
        ("F", "TIFF"),
    ],
)
def test_every_mode_decodes_to_rgb(mode: str, fmt: str) -> None:
    base = Image.linear_gradient("L").resize((40, 30))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(base, np.uint16) * 257).astype(np.uint16))
    elif mode == "F":
        img = Image.fromarray(np.asarray(base, np.float32) / 255.0)
    else:
        img = base.convert(mode)
    out = decode_image(_encode(img, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)
    arr = np.asarray(out, np.float32).mean(axis=2)
    assert arr[-1].mean() > arr[0].mean()  # the gradient survived (not a blank conversion)


def test_transparent_pixels_composite_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    out = decode_image(_encode(img, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied_and_original_size_recorded() -> None:
    img = Image.new("RGB", (60, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    out = decode_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 60)
    assert out.info["original_size"] == (20, 60)
    r, _g, b = out.getpixel((10, 2))
    assert r > 200 and b < 80  # the left band is now on top


def test_draft_mode_decodes_large_jpegs_smaller_but_reports_real_size() -> None:
    big = Image.new("RGB", (2000, 1500), (10, 200, 30))
    out = decode_image(_encode(big, "JPEG"), target_size=224)
    assert 224 <= min(out.size) < 1500
    assert out.info["original_size"] == (2000, 1500)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    r, g, _ = out.getpixel((5, 5))
    assert r > 200 and g < 50


def test_bomb_guard_uses_configured_limit() -> None:
    data = _encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="100x100"):
        decode_image(data, max_pixels=5000)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)


def test_image_names() -> None:
    assert is_image_name("a/B.JPG") and is_image_name(b"x.webp") and is_image_name("p.heic")
    assert not is_image_name("notes.txt") and not is_image_name("jpg")
