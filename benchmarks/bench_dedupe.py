"""Near-duplicate detection (dHash + mean colour, `picscope.dedupe`) on the shared data and on edited copies.

- edited copies: each demo photo re-saved at JPEG quality 40 and at half size; the dHash distance to the original;
- MSR-VTT frames: the groups found, and how many of them join frames of different videos (false positives);
- Flickr8k train+dev: the groups found among 7,000 distinct photos, and how many join different photos.

    python benchmarks/bench_dedupe.py
"""

from __future__ import annotations

import glob
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from picscope.dedupe import DEFAULT_MAX_DISTANCE, Fingerprint, groups_of, hamming, perceptual
from picscope.demo import write_demo_folder
from picscope.paths import data_root


def edited_copies() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [p for p in write_demo_folder(Path(tmp)) if Path(p).suffix in (".jpg", ".png")]
        worst = 0
        for p in paths:
            img = Image.open(p).convert("RGB")
            d0 = perceptual(img)[0]
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=40)
            worst = max(worst, hamming(d0, perceptual(Image.open(buf))[0]),
                        hamming(d0, perceptual(img.resize((img.width // 2, img.height // 2)))[0]))
        print(f"demo photos: {len(paths)}; largest dHash distance to a quality-40 re-save or half-size copy: "
              f"{worst} bits (threshold {DEFAULT_MAX_DISTANCE})")


def collection(name: str, pattern: str, owner: Callable[[str], str]) -> None:
    files = sorted(glob.glob(pattern))
    if not files:
        print(f"{name}: not found ({pattern})")
        return
    t0 = time.perf_counter()
    prints = []
    for f in files:
        img = Image.open(f)
        img.draft("RGB", (64, 64))
        prints.append(Fingerprint(None, *perceptual(img)))
    t1 = time.perf_counter()
    groups = groups_of(prints)
    t2 = time.perf_counter()
    mixed = sum(1 for g in groups if len({owner(files[i]) for i in g}) > 1)
    print(f"{name}: {len(files)} images, hashed in {t1 - t0:.1f} s, grouped in {t2 - t1:.2f} s; {len(groups)} "
          f"groups holding {sum(len(g) for g in groups)} images; {mixed} groups join different videos/photos")


def main() -> None:
    root = data_root()
    edited_copies()
    collection("MSR-VTT frames", str(root / "msrvtt-frames" / "frames" / "*.jpg"),
               lambda f: Path(f).name.split("_")[0])
    collection("Flickr8k train+dev", str(root / "flickr8k" / "images" / "*.jpg"), lambda f: f)


if __name__ == "__main__":
    main()
