"""Flickr8k train/dev from the shared data folder (never the test split)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from picscope.errors import PicscopeError
from picscope.paths import data_root


@dataclass(frozen=True)
class CaptionedImages:
    split: str
    paths: list[Path]
    captions: list[list[str]]  # 5 per image


def flickr8k(split: str, root: Path | None = None) -> CaptionedImages:
    if split not in ("train", "dev"):
        raise PicscopeError(f"Flickr8k split must be train or dev (the test split is kept out), not {split!r}")
    folder = (root or data_root()) / "flickr8k"
    index = folder / "captions.jsonl"
    if not index.exists():
        raise PicscopeError(f"Flickr8k not found at {folder} (set PICSCOPE_DATA to the folder holding flickr8k/)")
    paths, caps = [], []
    with index.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["split"] == split:
                paths.append(folder / row["image"])
                caps.append([" ".join(c.split()) for c in row["captions"]])
    return CaptionedImages(split, paths, caps)
