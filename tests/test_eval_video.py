"""MSR-VTT-style dataset building end to end on a short video generated here with PyAV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from picscope.eval.dataset import load_dataset
from picscope.eval.video import build_from_videos

av = pytest.importorskip("av")


def _video(path: Path, shots: list[tuple[int, int, int]], frames_per_shot: int = 8) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for s, colour in enumerate(shots):
            yy, xx = np.mgrid[0:48, 0:64]
            wave = 0.55 + 0.45 * np.sin(xx / (2.0 + 2 * s) + yy / 7.0)  # a shot-specific texture
            base = (wave[:, :, None] * np.array(colour)[None, None, :]).astype(np.uint8)
            for _ in range(frames_per_shot):
                frame = np.clip(base.astype(int) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture()
def videos(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "videos"
    folder.mkdir()
    _video(folder / "video7.mp4", [(200, 30, 30), (30, 200, 30), (30, 30, 200)])
    _video(folder / "video9.mp4", [(220, 220, 220)])
    captions = tmp_path / "MSRVTT_JSFUSION_test.csv"
    with captions.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        w.writerow(["ret0", "msr7", "video7", "colours change three times"])
        w.writerow(["ret1", "msr9", "video9", "a grey screen"])
    return folder, captions


def test_uniform_sampling_with_dedup(videos: tuple[Path, Path], tmp_path: Path) -> None:
    folder, captions = videos
    out = tmp_path / "uniform"
    stats = build_from_videos(folder, captions, out, mode="uniform", n=6, dedup_distance=4)
    assert stats.videos == 2 and stats.frames_sampled == 12
    # 6 frames of 3 shots collapse to 3 distinct frames; the one-shot video to 1
    assert stats.per_video == {"video7": 3, "video9": 1}
    assert stats.duplicates_removed == 12 - 4
    ds = load_dataset(out)
    q = {x.id: x for x in ds.queries}
    assert len(q["video7#0"].relevant) == 3 and q["video9#0"].relevant == ("images/video9_000.jpg",)
    assert len(ds.gallery) == 4


def test_shot_keyframes_without_dedup(videos: tuple[Path, Path], tmp_path: Path) -> None:
    folder, captions = videos
    stats = build_from_videos(folder, captions, tmp_path / "shots", mode="shots", dedup_distance=-1)
    assert stats.per_video == {"video7": 3, "video9": 1} and stats.duplicates_removed == 0
    no_dedup = build_from_videos(folder, captions, tmp_path / "all", mode="uniform", n=6, dedup_distance=-1)
    assert no_dedup.per_video == {"video7": 6, "video9": 6}
