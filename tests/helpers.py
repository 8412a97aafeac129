"""Small generators for test images (never dataset images)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def noise_image(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(1, 1, 3))
    arr = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def write_images(folder: Path, n: int, prefix: str = "img", start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"{prefix}{i:04d}.jpg"
        noise_image(i).save(p, quality=90)
        out.append(p)
    return out


def near_copies(src: Path, folder: Path) -> list[Path]:
    """A byte-identical copy, a re-save at JPEG quality 35, a half-size re-save, and a 'next frame' (shifted by
    two pixels, a little brighter) of `src`."""
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB")
    copy = folder / "copy.jpg"
    shutil.copyfile(src, copy)
    low = folder / "low-quality.jpg"
    img.save(low, quality=35)
    small = folder / "small.png"
    img.resize((img.width // 2, img.height // 2)).save(small)
    frame = folder / "next-frame.jpg"
    shifted = img.transform(img.size, Image.Transform.AFFINE, (1, 0, 2, 0, 1, 0))
    shifted.point(lambda v: min(255, v + 4)).save(frame, quality=90)
    return [copy, low, small, frame]


def tiny_llm_library(photos: Path, lib: Path) -> Path:
    """`photos` indexed with the `labels` encoder through the CLI, set up for fast real-model pipeline runs: the tiny
    bundled LLM (SmolLM2-135M) and small stage-2/3 sizes."""
    from picscope.cli import main
    from picscope.library import Library

    assert main(["index", str(photos), "--library", str(lib), "--encoder", "labels", "--quiet"]) == 0
    with Library.open(lib) as opened:
        opened.config.llm = "bundled:smollm2-135m"
        opened.config.pipeline.verify_k = 4
        opened.config.pipeline.alpha = 3
        opened.save_config()
    return lib
