"""Bad input never stops a run: each case is skipped or refused with a reason, the rest completes,
nothing already indexed is lost, and `picscope status` lists the problem files."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

import picscope.scan
from picscope import Library
from picscope.cli import main as cli_main
from picscope.store.catalog import display_path
from tests.helpers import noise_image, write_images

ENC = "labels"


def _png_bomb(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A small PNG whose header claims width x height (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    raw = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows; the rest is "missing"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _problems(lib: Library) -> dict[str, str]:
    return {p.path: p.reason for p in lib.problems()}


def test_each_bad_file_is_recorded_and_the_rest_indexes(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    good = write_images(folder, 4)
    (folder / "empty.jpg").write_bytes(b"")
    data = (folder / "img0000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    _png_bomb(folder / "bomb.png")
    (folder / "loop").mkdir()
    os.symlink(folder, folder / "loop" / "back-to-top")  # a symlink loop
    raw_name = os.fsencode(str(folder)) + b"/caf\xe9-latin1.jpg"  # not valid UTF-8
    with open(raw_name, "wb") as fh:
        noise_image(99).save(fh, format="JPEG")

    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        report = lib.index(folder)
        problems = _problems(lib)
        assert report.added == len(good) + 1  # the non-UTF-8 file indexes fine
        assert report.failed == 4
        assert problems[str(folder / "empty.jpg")] == "empty file (0 bytes)"
        assert "truncated" in problems[str(folder / "truncated.jpg")]
        assert problems[str(folder / "notes.jpg")] == "not an image (text file)"
        assert "30000x30000" in problems[str(folder / "bomb.png")]
        assert "decompression-bomb" in problems[str(folder / "bomb.png")]
        # the symlink loop was followed once, not forever: each image indexed once
        assert lib.status().files == len(good) + 1
        rec = lib.catalog.by_raw(raw_name)
        assert rec is not None and rec.status == "ok" and rec.path == display_path(raw_name)
        assert "\\xe9" in rec.path
        # a second run skips unchanged broken files by stat, and keeps them listed
        again = lib.index(folder)
        assert again.unchanged == again.scanned and again.failed == 0
        assert len(_problems(lib)) == 4


def test_status_lists_problem_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    write_images(folder, 2)
    (folder / "empty.jpg").write_bytes(b"")
    lib_path = tmp_path / "lib"
    assert cli_main(["index", str(folder), "--library", str(lib_path), "--encoder", ENC, "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["status", "--library", str(lib_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["files"] == 2 and status["errors"] == 1
    assert status["problems"] == [
        {
            "id": status["problems"][0]["id"],
            "path": str(folder / "empty.jpg"),
            "status": "error",
            "reason": "empty file (0 bytes)",
        }
    ]


def test_corrupted_previously_indexed_file_keeps_its_vector(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_images(folder, 3)
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.index(folder)
        before = lib.vectors([1])
        paths[0].write_bytes(b"garbage now")
        report = lib.index(folder)
        assert report.failed == 1
        rec = lib.catalog.by_raw(os.fsencode(str(paths[0])))
        assert rec is not None and rec.status == "ok"
        assert rec.error is not None and rec.error.startswith("kept previous version: not an image")
        assert (lib.vectors([rec.id]) == before).all()
        # once it is fixed, the next run re-encodes it and clears the problem
        noise_image(0).save(paths[0], quality=90)
        lib.index(folder)
        rec = lib.catalog.by_raw(os.fsencode(str(paths[0])))
        assert rec is not None and rec.error is None


def test_folder_disappearing_mid_scan_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "photos"
    write_images(folder / "a", 2)
    write_images(folder / "b", 2, prefix="b")
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.index(folder)
        assert lib.status().files == 4
        real_scandir = os.scandir
        vanished = folder / "b"

        def scandir_that_loses_b(path):  # type: ignore[no-untyped-def]
            # the moment the scan lists "a", folder "b" is moved away (really, on disk)
            if os.fsdecode(path).endswith("/a") and vanished.exists():
                shutil.move(str(vanished), str(tmp_path / "b-moved"))
            return real_scandir(path)

        monkeypatch.setattr(picscope.scan.os, "scandir", scandir_that_loses_b)
        report = lib.index(folder)
        assert any("disappeared" in reason for _, reason in report.problems)
        assert report.removed == 0  # files under the vanished folder are kept this run
        assert lib.status().files == 4
        monkeypatch.undo()
        assert lib.index(folder).removed == 2  # gone for real on the next full scan


def test_image_changing_during_indexing_is_indexed_as_its_final_content(tmp_path: Path) -> None:
    from picscope.indexer import Indexer

    folder = tmp_path / "photos"
    paths = write_images(folder, 2)
    target = os.fsencode(str(paths[0]))
    changed = {"done": False}

    def rewrite_once(raw: bytes, data: bytes) -> None:
        if raw == target and not changed["done"]:
            changed["done"] = True
            noise_image(1234, size=(80, 60)).save(paths[0], quality=90)
            st = os.stat(paths[0])
            os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        _ = lib.store
        indexer = Indexer(lib.catalog, lib.store, lib.encoder, lib.config.index, read_hook=rewrite_once)
        report = indexer.run(folder)
        assert changed["done"] and report.failed == 0
        rec = lib.catalog.by_raw(target)
        assert rec is not None and (rec.width, rec.height) == (80, 60)
        st = os.stat(paths[0])
        assert (rec.size, rec.mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_unreadable_file_is_recorded_and_retried(tmp_path: Path) -> None:
    import tempfile

    # a world-traversable place, so that the check below can run as an unprivileged user
    base = Path(tempfile.mkdtemp(prefix="picscope-perm-", dir="/tmp"))
    try:
        base.chmod(0o777)
        folder = base / "photos"
        paths = write_images(folder, 3)
        folder.chmod(0o777)
        lib_path = base / "lib"
        with Library.open(lib_path, encoder=ENC) as lib:
            _ = lib.store, lib.encoder.embed_texts(["warm up"])  # open files and load models first
            for p in [lib_path, *lib_path.rglob("*")]:
                p.chmod(0o777 if p.is_dir() else 0o666)
            paths[1].chmod(0o000)
            if os.geteuid() == 0:
                # root reads anything: index as "nobody" so that the permission check is real
                os.seteuid(65534)
                try:
                    report = lib.index(folder)
                finally:
                    os.seteuid(0)
            else:
                report = lib.index(folder)
            assert report.failed == 1
            assert _problems(lib) == {str(paths[1]): "cannot read file: Permission denied"}
            assert lib.status().files == 2
            paths[1].chmod(0o644)
            report = lib.index(folder)  # retried although its size and mtime did not change
            assert report.added == 1 and _problems(lib) == {}
    finally:
        shutil.rmtree(base, ignore_errors=True)
