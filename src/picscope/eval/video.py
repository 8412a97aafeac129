"""The interactive-retrieval paper's dataset recipe: videos → frames → multi-positive image-retrieval queries.

Frames are sampled uniformly (n per clip) or at shot boundaries (a new shot starts where the grey-level histogram
changes by more than a threshold; its first frame is kept), near-duplicates are removed by a 64-bit difference
hash (Hamming distance ≤ `dedup_distance`), every kept frame of a clip is relevant to each caption of the clip.
Frame counts and removed duplicates are reported, since near-duplicate frames make recall easier.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from picscope.eval.dataset import DatasetError, Query, write_dataset


@dataclass
class VideoStats:
    videos: int = 0
    frames_sampled: int = 0
    frames_kept: int = 0
    duplicates_removed: int = 0
    per_video: dict[str, int] = field(default_factory=dict)


def _decode(video: Path) -> list[Image.Image]:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - optional
        raise DatasetError("building from videos needs PyAV: pip install av") from exc
    try:
        with av.open(str(video)) as container:
            return [frame.to_image() for frame in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as exc:
        raise DatasetError(f"cannot decode {video}: {exc}") from exc


def _histogram(img: Image.Image) -> np.ndarray:
    h = np.asarray(img.convert("L").resize((64, 64)).histogram(), np.float64)
    return h / h.sum()


def sample_frames(
    frames: list[Image.Image], mode: str = "uniform", n: int = 8, shot_threshold: float = 0.3
) -> list[int]:
    """Indices of the frames to keep."""
    if not frames:
        return []
    if mode == "uniform":
        count = min(n, len(frames))
        return sorted({round(float(x)) for x in np.linspace(0, len(frames) - 1, count)})
    if mode == "shots":
        keep = [0]
        prev = _histogram(frames[0])
        for i in range(1, len(frames)):
            cur = _histogram(frames[i])
            if 0.5 * np.abs(cur - prev).sum() > shot_threshold:  # total-variation distance in [0, 1]
                keep.append(i)
            prev = cur
        return keep
    raise DatasetError(f"unknown frame sampling {mode!r}: uniform or shots")


def dhash(img: Image.Image) -> int:
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def dedup(images: list[Image.Image], max_distance: int) -> list[int]:
    """Indices kept: a frame is dropped when its dHash is within `max_distance` bits of a kept frame."""
    kept: list[int] = []
    hashes: list[int] = []
    for i, img in enumerate(images):
        h = dhash(img)
        if max_distance >= 0 and any(bin(h ^ other).count("1") <= max_distance for other in hashes):
            continue
        kept.append(i)
        hashes.append(h)
    return kept


def read_captions(path: Path) -> dict[str, list[str]]:
    """JSFusion/CLIP4Clip 1k-A CSV (key, vid_key, video_id, sentence) or MSRVTT_data.json ('sentences')."""
    out: dict[str, list[str]] = defaultdict(list)
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                out[row["video_id"]].append(row["sentence"].strip())
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        for s in data["sentences"]:
            out[s["video_id"]].append(s["caption"].strip())
    return dict(out)


def build_from_videos(
    videos: Path,
    captions: Path,
    out: Path,
    *,
    mode: str = "uniform",
    n: int = 8,
    shot_threshold: float = 0.3,
    dedup_distance: int = 4,
    captions_per_video: int = 1,
) -> VideoStats:
    caps = read_captions(captions)
    stats = VideoStats()
    queries: list[Query] = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    for video_id in sorted(caps):
        path = videos / f"{video_id}.mp4"
        if not path.exists():
            raise DatasetError(f"missing video {path} (captions name it)")
        frames = _decode(path)
        picked = [frames[i] for i in sample_frames(frames, mode, n, shot_threshold)]
        kept = [picked[i] for i in dedup(picked, dedup_distance)]
        keys = []
        for j, img in enumerate(kept):
            key = f"images/{video_id}_{j:03d}.jpg"
            img.convert("RGB").save(out / key, quality=92)
            keys.append(key)
        stats.videos += 1
        stats.frames_sampled += len(picked)
        stats.frames_kept += len(kept)
        stats.duplicates_removed += len(picked) - len(kept)
        stats.per_video[video_id] = len(kept)
        for c, text in enumerate(caps[video_id][:captions_per_video]):
            queries.append(Query(f"{video_id}#{c}", text, tuple(keys)))
    write_dataset(out, queries)
    (out / "build.json").write_text(
        json.dumps(
            {
                "mode": mode,
                "n": n,
                "shot_threshold": shot_threshold,
                "dedup_distance": dedup_distance,
                **{k: v for k, v in vars(stats).items()},
            },
            indent=2,
        )
        + "\n"
    )
    return stats
