"""`kill -9` in the middle of indexing, then a re-run, gives the same library as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from picscope import Library
from picscope.library import CONFIG
from tests.helpers import write_images

ENC = "labels"
REPO = Path(__file__).resolve().parents[1]


def _new_library(path: Path) -> None:
    lib = Library.open(path, encoder=ENC)
    lib.config.index.commit_every = 8
    lib.config.index.batch_size = 8
    lib.config.save(path / CONFIG)
    lib.close()


def _count(lib_path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{lib_path / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _snapshot(lib_path: Path) -> dict[str, tuple[str | None, np.ndarray]]:
    with Library.open(lib_path) as lib:
        recs = lib.catalog.all()
        assert all(r.status == "ok" for r in recs)
        vecs = lib.vectors([r.id for r in recs])
        assert len(lib.store) == len(recs)
        return {r.path: (r.hash, v) for r, v in zip(recs, vecs, strict=True)}


def test_kill_9_mid_index_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_images(folder, 160)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _new_library(reference)
    _new_library(killed)
    with Library.open(reference) as lib:
        lib.index(folder)

    kills = []
    for threshold in (16, 72):  # kill twice, at different points
        proc = subprocess.Popen(
            [sys.executable, "-m", "picscope", "index", str(folder), "--library", str(killed), "--quiet"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 240
        while _count(killed) < threshold and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        kills.append(_count(killed))
    assert 0 < kills[0] < 160 and kills[0] <= kills[1] < 160, f"kill did not land mid-run: {kills}"

    with Library.open(killed) as lib:
        report = lib.index(folder)
        assert report.failed == 0
    ref, got = _snapshot(reference), _snapshot(killed)
    assert sorted(ref) == sorted(got)
    for path, (h, v) in ref.items():
        assert got[path][0] == h
        np.testing.assert_allclose(got[path][1], v, atol=1e-5)
