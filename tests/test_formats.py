"""Every photo format a user has: decided by content, not by name; each image in a folder of all of them is
indexed and found by `search --image` of (a copy of) itself at rank 1; what is not an image is listed with a
reason; a RAW file beside a same-named JPEG is skipped (configurable); a re-index opens no unchanged file."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import picscope.indexer
from picscope import Library
from picscope.cli import main as cli_main
from picscope.imageio import decode_image, sniff
from tests.helpers import noise_image

ENC = "labels"


def _picture(seed: int, size: tuple[int, int] = (72, 56)) -> Image.Image:
    """A distinct picture per seed: a colour gradient, a shape and noise (so no two images embed alike)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    c0, c1 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    t = (xx / w)[..., None] if seed % 2 else (yy / h)[..., None]
    arr = c0 * (1 - t) + c1 * t + rng.normal(0, 12, (h, w, 3))
    cx, cy, r = rng.integers(10, w - 10), rng.integers(10, h - 10), rng.integers(5, 15)
    arr[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def write_dng(path: Path, seed: int, size: tuple[int, int] = (96, 64)) -> None:
    """A tiny valid DNG (an RGGB Bayer mosaic, 16-bit, no preview) written with tifffile."""
    tifffile = pytest.importorskip("tifffile")
    rgb = np.asarray(_picture(seed, size), np.uint16) * 16  # 12-bit values
    h, w = rgb.shape[:2]
    cfa = np.zeros((h, w), np.uint16)
    cfa[0::2, 0::2] = rgb[0::2, 0::2, 0]
    cfa[0::2, 1::2] = rgb[0::2, 1::2, 1]
    cfa[1::2, 0::2] = rgb[1::2, 0::2, 1]
    cfa[1::2, 1::2] = rgb[1::2, 1::2, 2]
    identity = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)
    tags = [
        (33421, "H", 2, (2, 2)),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2)),  # CFAPattern: RGGB
        (50706, "B", 4, (1, 4, 0, 0)),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0)),  # DNGBackwardVersion
        (50708, "s", 0, "picscope test camera"),  # UniqueCameraModel
        (50714, "H", 1, 0),  # BlackLevel
        (50717, "H", 1, 4095),  # WhiteLevel
        (50721, "2i", 9, identity),  # ColorMatrix1
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1)),  # AsShotNeutral
        (50778, "H", 1, 21),  # CalibrationIlluminant1: D65
    ]
    tifffile.imwrite(path, cfa, photometric=32803, subfiletype=0, extratags=tags, metadata=None)


def write_every_format(folder: Path) -> dict[str, Path]:
    """One image per format (name -> path), plus the non-images and the RAW+JPEG pair (not in the dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    saves = [
        ("webp", "WEBP", "RGB", {}),
        ("png", "PNG", "RGB", {}),
        ("tiff", "TIFF", "RGB", {}),
        ("bmp", "BMP", "RGB", {}),
        ("gif", "GIF", "P", {}),
        ("jp2", "JPEG2000", "RGB", {}),
        ("pnm", "PPM", "RGB", {}),  # .pnm: Pillow writes P6
        ("pbm", "PPM", "1", {}),
        ("pgm", "PPM", "L", {}),
        ("ppm", "PPM", "RGB", {}),
        ("heic", "HEIF", "RGB", {"quality": 90}),
        ("avif", "AVIF", "RGB", {"quality": 90}),
        ("jpg", "JPEG", "RGB", {"quality": 92}),
    ]
    for seed, (ext, fmt, mode, kw) in enumerate(saves):
        path = folder / f"photo-{ext}.{ext}"
        img = _picture(seed + 10)
        if mode == "1":
            img = img.convert("L").point(lambda v: 255 if v > 127 else 0).convert("1")
        elif mode == "P":
            img = img.convert("P", palette=Image.Palette.ADAPTIVE)
        else:
            img = img.convert(mode)
        img.save(path, format=fmt, **kw)
        images[ext] = path
    frames = [_picture(40 + i).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(3)]
    images["animated-gif"] = folder / "animated.gif"
    frames[0].save(images["animated-gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    images["no-extension"] = folder / "scan-0001"  # an image whose name says nothing
    _picture(50).save(images["no-extension"], format="PNG")
    images["dng"] = folder / "camera-solo.dng"  # RAW alone: indexed
    write_dng(images["dng"], 60)
    write_dng(folder / "camera-pair.dng", 61)  # RAW beside a same-named JPEG: skipped
    images["pair-jpg"] = folder / "camera-pair.JPG"
    _picture(61).save(images["pair-jpg"], format="JPEG", quality=92)
    (folder / "notes.txt").write_text("holiday notes: day 1, the beach\n")
    (folder / "blob.bin").write_bytes(bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8)))
    return images


def test_sniff_decides_by_content_not_name() -> None:
    buf = io.BytesIO()
    noise_image(1).save(buf, format="PNG")
    assert sniff(buf.getvalue()[:4096], "looks-like.txt").format == "PNG"
    assert sniff(b"just some words\n", "photo.jpg").reason == "not an image (text file)"
    assert sniff(b"%PDF-1.7\n...", "scan.jpg").reason == "not an image (a PDF document)"
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    assert sniff(mp4, "clip.mp4").reason == "not an image (a video (MP4/QuickTime))"
    assert sniff(b"", "x.png").reason == "empty file (0 bytes)"


def test_raw_decodes_by_half_size_demosaic(tmp_path: Path) -> None:
    write_dng(tmp_path / "a.dng", 3, size=(96, 64))
    data = (tmp_path / "a.dng").read_bytes()
    assert sniff(data[:4096], "renamed.bin").format == "RAW"  # DNGVersion tag: RAW by content
    img = decode_image(data, name="a.dng")
    assert img.mode == "RGB" and img.size == (48, 32)  # half size: no preview in this file
    assert img.info["original_size"] == (96, 64)
    # the picture survives the demosaic: each channel follows the source (colour rendering aside)
    src = np.asarray(_picture(3, (96, 64)).resize((48, 32)), np.float64)
    dec = np.asarray(img, np.float64)
    for c in range(3):
        assert np.corrcoef(src[..., c].ravel(), dec[..., c].ravel())[0, 1] > 0.4


def test_every_format_is_indexed_and_found_by_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    images = write_every_format(folder)
    queries = tmp_path / "queries"  # copies outside the library: `--image` leaves an indexed file itself out
    queries.mkdir()
    lib_path = tmp_path / "lib"
    assert cli_main(["index", str(folder), "--library", str(lib_path), "--encoder", ENC, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0 and report["added"] == len(images)
    with Library.open(lib_path) as lib:
        assert lib.status().files == lib.status().vectors == len(images)
        for name, path in images.items():
            copy = queries / f"query-{path.name}"
            shutil.copy(path, copy)
            hits = lib.similar(copy, k=3)
            assert hits[0].path == str(path), f"{name}: {[(h.path, round(h.score, 3)) for h in hits]}"
            assert hits[0].score > 0.999
        problems = {p.path: (p.status, p.reason) for p in lib.problems()}
    assert problems == {
        str(folder / "notes.txt"): ("skipped", "not an image (text file)"),
        str(folder / "blob.bin"): ("skipped", "not an image (unrecognised format)"),
        str(folder / "camera-pair.dng"): (
            "skipped",
            "RAW file with a same-named JPEG/PNG beside it: the JPEG/PNG is indexed instead "
            "(set index.skip_raw_with_sibling = false to index both)",
        ),
    }
    # the index summary, its table and `status` show the same problem set
    assert cli_main(["status", "--library", str(lib_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["skipped"] == 3 and status["errors"] == 0
    assert [(p["path"], p["status"], p["reason"]) for p in status["problems"]] == [
        (p["path"], p["status"], p["reason"]) for p in report["problems"]
    ]
    # and through the CLI: `search --image` of a HEIC and of a DNG copy finds the original first
    for name in ("heic", "dng", "avif"):
        query = queries / f"query-{images[name].name}"
        assert cli_main(["search", "--library", str(lib_path), "--image", str(query), "-k", "1", "--paths"]) == 0
        assert capsys.readouterr().out.strip() == str(images[name])


def test_raw_beside_jpeg_indexed_when_configured(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_dng(folder / "IMG_1.DNG", 5)
    _picture(5).save(folder / "IMG_1.jpg", quality=92)
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        first = lib.index(folder)
        assert first.added == 1 and first.skipped == 1
        lib.config.index.skip_raw_with_sibling = False
        second = lib.index(folder)
        assert second.added == 1 and second.skipped == 0 and lib.problems() == []
        assert lib.status().files == 2


def test_reindex_opens_no_unchanged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "photos"
    write_every_format(folder)
    opened: list[bytes] = []
    real = picscope.indexer.open_regular

    def counting(path: bytes) -> tuple[int, object]:
        opened.append(path)
        return real(path)

    monkeypatch.setattr(picscope.indexer, "open_regular", counting)
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        first = lib.index(folder)
        assert len(opened) == first.scanned  # each file read once (the non-images only their first bytes)
        opened.clear()
        again = lib.index(folder)
        assert opened == [] and again.unchanged == again.scanned and again.encoded == 0
        assert again.problems == first.problems
        (folder / "notes.txt").write_text("changed notes\n")
        lib.index(folder)
        assert opened == [os.fsencode(folder / "notes.txt")]


def test_raw_preview_is_turned_like_the_photo() -> None:
    from picscope.imageio import _raw_preview

    buf = io.BytesIO()
    _picture(8, (128, 96)).save(buf, format="JPEG", quality=90)
    assert _raw_preview(buf.getvalue(), 0, 10**8).size == (128, 96)  # type: ignore[union-attr]
    assert _raw_preview(buf.getvalue(), 6, 10**8).size == (96, 128)  # type: ignore[union-attr]  # 90° CW
    small = io.BytesIO()
    _picture(8, (40, 30)).save(small, format="JPEG")
    assert _raw_preview(small.getvalue(), 0, 10**8) is None  # too small to stand for the photo: demosaic instead


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF", "WEBP", "PNG", "TIFF"])
def test_exif_orientation_applied_once_in_every_format(fmt: str) -> None:
    """A 80x40 picture tagged "rotate 90° CW" decodes as 40x80 (turned once, not twice) in each format."""
    img = Image.new("RGB", (80, 40), (200, 10, 10))
    img.paste((10, 10, 200), (0, 0, 40, 40))  # blue on the left half
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt != "PNG" else {}))
    out = decode_image(buf.getvalue())
    assert out.size == (40, 80) and out.info["original_size"] == (40, 80)
    top = np.asarray(out, np.float64)[:20].mean(axis=(0, 1))
    assert top[2] > top[0]  # turned clockwise: the left (blue) half is now on top
