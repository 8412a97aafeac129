"""A sample photo folder any fresh machine can make: the photos bundled in the scikit-image wheel.

They are public domain / CC0 (see skimage.data). Each comes with a short description that the tests
and the README use as queries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# name in skimage.data -> (file name, a description a person might type)
SAMPLES: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut.jpg", "an astronaut in a white space suit with an american flag"),
    "coffee": ("coffee.jpg", "a cup of coffee on a saucer"),
    "chelsea": ("cat.jpg", "a tabby cat"),
    "rocket": ("rocket.jpg", "a rocket on the launch pad"),
    "camera": ("cameraman.png", "a man with a camera on a tripod"),
    "motorcycle_left": ("motorcycle.png", "a red motorcycle"),
    "hubble_deep_field": ("galaxies.jpg", "galaxies in deep space"),
    "immunohistochemistry": ("cells.png", "stained cells under a microscope"),
    "coins": ("coins.png", "old coins"),
    "clock": ("clock.png", "a clock"),
    "horse": ("horse.png", "a horse silhouette"),
    "page": ("page.png", "a page of printed text"),
    "text": ("text.png", "text written on a wall"),
    "brick": ("brick.png", "a brick wall"),
    "grass": ("grass.png", "grass"),
    "gravel": ("gravel.png", "gravel"),
    "retina": ("retina.jpg", "a photo of a retina"),
}


def _load(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle_left":
        left, _right, _disp = skimage.data.stereo_motorcycle()
        return np.asarray(left)
    return np.asarray(getattr(skimage.data, name)())


def sample_images() -> dict[str, tuple[Image.Image, str]]:
    """file name -> (PIL image, description). Samples missing from the installed skimage are skipped."""
    out: dict[str, tuple[Image.Image, str]] = {}
    for name, (fname, description) in SAMPLES.items():
        try:
            arr = _load(name)
        except Exception:
            continue  # not in this skimage version / needs pooch data not bundled
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        out[fname] = (Image.fromarray(arr).convert("RGB"), description)
    return out


def write_demo_folder(folder: Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    samples = sample_images()
    for fname, (img, _desc) in samples.items():
        path = folder / fname
        if not path.exists():
            img.save(path, quality=92) if fname.endswith(".jpg") else img.save(path)
        written.append(path)
    (folder / "DESCRIPTIONS.txt").write_text("".join(f"{f}\t{d}\n" for f, (_i, d) in samples.items()), encoding="utf-8")
    return written
