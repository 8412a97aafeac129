"""Core library behaviour: index, incremental re-index, search, similar, status, encoder/schema guards."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from picscope import Library
from picscope.errors import EncoderMismatchError, LibraryError, LibraryLockedError, SchemaTooNewError
from tests.helpers import write_images

ENC = "labels"


@pytest.fixture()
def photos(tmp_path: Path, demo_folder: Path) -> Path:
    folder = tmp_path / "photos"
    shutil.copytree(demo_folder, folder)
    return folder


def test_index_and_text_search_finds_described_photos(photos: Path, tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        report = lib.index(photos)
        assert report.added == report.scanned - 1 > 10  # every photo; DESCRIPTIONS.txt is skipped with a reason
        assert report.failed == 0 and report.skipped == 1
        assert report.problems == [(str(photos / "DESCRIPTIONS.txt"), "not an image (text file)")]
        hits = lib.search("a cup of coffee", k=3)
        assert hits[0].path.endswith("coffee.jpg")
        assert [h.rank for h in hits] == [1, 2, 3]
        assert hits[0].score >= hits[1].score >= hits[2].score
        cat = lib.search("a tabby cat", k=1)[0]
        assert cat.path.endswith("cat.jpg")


def test_reindex_unchanged_is_stat_only_and_picks_up_changes(photos: Path, tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        first = lib.index(photos)
        again = lib.index(photos)
        assert again.unchanged == first.scanned and again.encoded == 0
        # rename, copy, delete, add, modify
        (photos / "coffee.jpg").rename(photos / "renamed-coffee.jpg")
        shutil.copy(photos / "cat.jpg", photos / "cat-copy.jpg")
        (photos / "rocket.jpg").unlink()
        write_images(photos / "sub", 2)
        time.sleep(0.01)
        write_images(photos, 1, prefix="clock")  # clock0000.jpg (new)
        img = photos / "brick.png"
        from PIL import Image

        Image.open(img).convert("L").save(img)  # changed content, same path
        r = lib.index(photos)
        assert r.reused == 2  # renamed coffee + copied cat: vectors reused, nothing decoded for them
        assert r.removed == 2  # the old coffee path and the rocket
        assert r.added == 3 and r.updated == 1
        assert r.encoded == 4
        paths = {h.path for h in lib.search("a cup of coffee", k=3)}
        assert str(photos / "renamed-coffee.jpg") in paths
        st = lib.status()
        assert st.files == st.vectors == first.scanned - first.skipped + 3  # +copy +2 sub +clock -rocket


def test_similar_excludes_query_and_finds_copy(photos: Path, tmp_path: Path) -> None:
    shutil.copy(photos / "astronaut.jpg", photos / "astronaut-copy.jpg")
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.index(photos)
        hits = lib.similar(photos / "astronaut.jpg", k=3)
        assert hits[0].path.endswith("astronaut-copy.jpg")
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert all(not h.path.endswith("/astronaut.jpg") for h in hits)
        # an outside file (not indexed) works too
        outside = tmp_path / "outside.jpg"
        shutil.copy(photos / "cat.jpg", outside)
        assert lib.similar(outside, k=1)[0].path.endswith("cat.jpg")


def test_min_score_and_path_filter(photos: Path, tmp_path: Path) -> None:
    write_images(photos / "sub", 3)
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.index(photos)
        hits = lib.search("a cup of coffee", k=50, min_score=0.2)
        assert hits and all(h.score >= 0.2 for h in hits)
        sub = lib.search("a cup of coffee", k=50, path_prefix=str(photos / "sub"))
        assert len(sub) == 3 and all("/sub/" in h.path for h in sub)


def test_encoder_mismatch_is_refused_with_rebuild_command(photos: Path, tmp_path: Path) -> None:
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, encoder=ENC) as lib:
        lib.index(photos)
    with pytest.raises(EncoderMismatchError) as exc:
        Library.open(lib_path, encoder="labels:0.1")
    assert "--rebuild" in str(exc.value) and "labels:0.1" in str(exc.value)
    with Library.open(lib_path) as lib:
        report = lib.index(photos, rebuild=True, encoder="labels:0.1")
        assert report.added == report.scanned - report.skipped
        assert lib.status().encoder == "labels:0.1"


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    lib_path = tmp_path / "lib"
    Library.open(lib_path, encoder=ENC).close()
    db = sqlite3.connect(lib_path / "catalog.sqlite")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    before = (lib_path / "catalog.sqlite").read_bytes()
    with pytest.raises(SchemaTooNewError, match="newer picscope"):
        Library.open(lib_path)
    assert (lib_path / "catalog.sqlite").read_bytes() == before


def test_missing_library_and_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match="no library"):
        Library.open(tmp_path / "nope", create=False)
    with Library.open(tmp_path / "lib", encoder=ENC) as lib, pytest.raises(LibraryError, match="not a folder"):
        lib.index(tmp_path / "missing")


def test_concurrent_writer_gets_clear_error(photos: Path, tmp_path: Path) -> None:
    lib_path = tmp_path / "lib"
    with (
        Library.open(lib_path, encoder=ENC) as a,
        Library.open(lib_path) as b,
        a.write_lock(),
        pytest.raises(LibraryLockedError, match=f"pid {os.getpid()}"),
    ):
        b.index(photos)


def test_orphan_vectors_from_a_crash_are_reconciled(photos: Path, tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.index(photos)
        n = lib.status().files
        # simulate a crash between the vector write and the catalog commit
        lib.store.upsert(np.array([10_000]), lib.vectors([1]))
        assert len(lib.store) == n + 1
        assert all(h.id != 10_000 for h in lib.search("a cup of coffee", k=50))
        removed, missing = lib.reconcile()
        assert (removed, missing) == (1, 0)
        assert len(lib.store) == n


def test_include_exclude_globs_and_hidden_folders(tmp_path: Path) -> None:
    from picscope.cli import main

    folder = tmp_path / "photos"
    write_images(folder / "keep", 2)
    write_images(folder / "raw", 2, prefix="raw")
    write_images(folder / ".thumbnails", 2, prefix="thumb")  # hidden: skipped by default
    lib_path = tmp_path / "lib"
    args = ["index", str(folder), "--library", str(lib_path), "--encoder", ENC, "--quiet"]
    assert main([*args, "--exclude", "raw/*"]) == 0
    with Library.open(lib_path) as lib:
        paths = sorted(r.path for r in lib.catalog.all())
        assert [Path(p).parent.name for p in paths] == ["keep", "keep"]
    assert main([*args, "--include", "raw/*", "--exclude", "nothing"]) == 0  # saved config changes; raw in, keep out
    with Library.open(lib_path) as lib:
        assert sorted(Path(r.path).parent.name for r in lib.catalog.all()) == ["raw", "raw"]
