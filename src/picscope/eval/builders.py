"""Builders that write dataset folders from the shared data (images are symlinked, never copied).

- `flickr8k`: text→image, each of the 5 captions of an image is a query with that one image relevant.
- `msrvtt-frames`: "MSR-VTT 1k-A frames (subset)": each clip caption is a query; every frame of the clip is relevant.
- `caption-dialog`: "caption-as-dialog (Flickr8k)": round 0 is an image's first caption, turns are its other
  captions (the caption-only baseline of ChatIR), one relevant image. A substitute, never "VisDial".
- `templated-cir`: "templated CIR (Flickr8k-derived)": reference = the most similar *other* image of the split by
  caption meaning, modification text = a template around the target's first caption, one relevant image (the
  target). A substitute for CIRR/CIRCO/FashionIQ, whose images are not available here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from picscope.eval.dataset import Query, link_image, write_dataset
from picscope.paths import data_root
from picscope.training.data import flickr8k
from picscope.vectors import unit


def _link_all(paths: list[Path], out: Path) -> dict[Path, str]:
    keys = {}
    for p in paths:
        key = f"images/{p.name}"
        link_image(p, out / key)
        keys[p] = key
    return keys


def build_flickr8k(out: Path, split: str = "dev", limit: int | None = None) -> Path:
    data = flickr8k(split)
    paths = data.paths[:limit]
    keys = _link_all(paths, out)
    queries = [
        Query(f"{p.stem}#{i}", cap, (keys[p],))
        for p, caps in zip(paths, data.captions[: len(paths)], strict=True)
        for i, cap in enumerate(caps)
    ]
    return write_dataset(out, queries)


def build_caption_dialog(out: Path, split: str = "dev", limit: int | None = None) -> Path:
    data = flickr8k(split)
    paths = data.paths[:limit]
    keys = _link_all(paths, out)
    queries = [
        Query(p.stem, caps[0], (keys[p],), turns=tuple(caps[1:]))
        for p, caps in zip(paths, data.captions[: len(paths)], strict=True)
    ]
    return write_dataset(out, queries)


TEMPLATES = (
    "like this photo, but {c}",
    "the same kind of scene, changed so that {c}",
    "similar to this one, except that {c}",
)


def build_templated_cir(out: Path, split: str = "dev", limit: int | None = None) -> Path:
    from picscope.encoders import towers

    data = flickr8k(split)
    paths = data.paths[:limit]
    caps = data.captions[: len(paths)]
    keys = _link_all(paths, out)
    emb = towers.minilm().encode([c for cs in caps for c in cs]).reshape(len(paths), 5, -1).mean(axis=1)
    emb = unit(emb)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    queries = []
    for i, p in enumerate(paths):
        ref = paths[int(sim[i].argmax())]
        text = TEMPLATES[i % len(TEMPLATES)].format(c=caps[i][0].rstrip(" ."))
        queries.append(Query(f"{p.stem}", text, (keys[p],), reference=keys[ref]))
    return write_dataset(out, queries)


def build_msrvtt_frames(out: Path, root: Path | None = None) -> Path:
    folder = (root or data_root()) / "msrvtt-frames"
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    by_video: dict[str, list[str]] = defaultdict(list)
    for f in index["frames"]:
        src = folder / f["frame"]
        key = f"images/{src.name}"
        link_image(src, out / key)
        by_video[f["video_id"]].append(key)
    queries = [Query(q["video_id"], q["caption"], tuple(sorted(by_video[q["video_id"]]))) for q in index["queries"]]
    return write_dataset(out, queries)
