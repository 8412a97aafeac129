"""Run-time faults in the indexer and the catalog: special files never block and get a reason; `status` lists
every problem of the last scan (scan-level ones too) exactly as the index summary does; a read-only library is
searchable and refuses to index clearly; a full disk says so and leaves the library consistent."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import picscope.indexer
import picscope.library
from picscope import Library
from picscope.cli import main as cli_main
from picscope.diskspace import DiskFullError, ensure_free
from picscope.errors import LibraryReadOnlyError
from tests.helpers import write_images

ENC = "labels"
REPO = Path(__file__).resolve().parents[1]


def _deep_folder(base: Path) -> bytes:
    """A chain of folders whose absolute path is longer than PATH_MAX (made with openat, as no path can name it)."""
    name = "d" * 200
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while len(os.fsencode(base)) + depth * (len(name) + 1) <= os.pathconf(base, "PC_PATH_MAX") + 300:
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, depth = nfd, depth + 1
    finally:
        os.close(fd)
    return os.fsencode(base) + (b"/" + name.encode()) * depth


def _rows(problems: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(p["path"], p["status"], p["reason"]) for p in problems]


def test_special_files_get_reasons_in_summary_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    write_images(folder, 3)
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("/dev/zero", folder / "zero.jpg")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    os.symlink("self.jpg", folder / "self.jpg")
    (folder / "deep").mkdir()
    _deep_folder(folder / "deep")
    lib_path = tmp_path / "lib"

    done: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: done.setdefault(
            "rc", cli_main(["index", str(folder), "--library", str(lib_path), "--encoder", ENC, "--json"])
        ),
        daemon=True,
    )
    thread.start()
    thread.join(120)
    if thread.is_alive():  # unblock a reader stuck in open() so that the test run can end
        os.close(os.open(folder / "pipe.jpg", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("indexing blocked on a FIFO")
    assert done["rc"] == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 3 and report["failed"] == 0
    reasons = {p["path"]: p["reason"] for p in report["problems"]}
    assert reasons[str(folder / "pipe.jpg")] == "not a regular file: a FIFO / named pipe"
    assert reasons[str(folder / "zero.jpg")] == "not a regular file: a character device (through a symlink)"
    assert reasons[str(folder / "dangling.jpg")] == f"dangling symlink: its target {folder / 'gone.jpg'} does not exist"
    assert reasons[str(folder / "self.jpg")].startswith("symlink loop")
    too_long = [r for p, r in reasons.items() if p.startswith(str(folder / "deep"))]
    assert too_long == ["path too long for the operating system (ENAMETOOLONG)"]
    assert len(reasons) == 5 and all(p["status"] == "skipped" for p in report["problems"])

    # status (table and JSON) lists exactly the summary's problems, scan-level ones included
    assert cli_main(["status", "--library", str(lib_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert _rows(status["problems"]) == _rows(report["problems"])
    assert status["skipped"] == 5 and status["files"] == 3
    assert cli_main(["status", "--library", str(lib_path), "--limit", "100"]) == 0
    table = capsys.readouterr().out
    assert "5 problem(s)" in table and "FIFO" in table and "dangling" in table and "ENAMETOOLONG" in table

    # the problems stay listed on an unchanged re-run, and go when the cause goes
    os.unlink(folder / "dangling.jpg")
    with Library.open(lib_path) as lib:
        again = lib.index(folder)
        assert again.unchanged == 3 and again.skipped == 4
        assert len(lib.problems()) == 4 and str(folder / "dangling.jpg") not in {p.path for p in lib.problems()}


def test_file_turning_into_a_fifo_after_the_scan_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    paths = write_images(folder, 3)
    victim = paths[1]
    real_scan = picscope.indexer.scan

    def scan_then_swap(*args, **kwargs):  # type: ignore[no-untyped-def]
        yield from real_scan(*args, **kwargs)
        victim.unlink()  # after the scan listed it as a regular file, before it is read
        os.mkfifo(victim)

    monkeypatch.setattr(picscope.indexer, "scan", scan_then_swap)
    result: dict[str, object] = {}

    def run() -> None:
        with Library.open(tmp_path / "lib", encoder=ENC) as lib:
            result["report"] = lib.index(folder)
            result["problems"] = {p.path: p.reason for p in lib.problems()}

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    if thread.is_alive():
        os.close(os.open(victim, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the indexer blocked opening a FIFO")
    assert result["report"].added == 2  # type: ignore[attr-defined]
    assert result["problems"] == {str(victim): "not a regular file: a FIFO / named pipe"}
    # and the write lock was released: the library can be indexed again
    monkeypatch.undo()
    with Library.open(tmp_path / "lib") as lib:
        assert lib.index(folder).unchanged == 2


# -- read-only libraries ----------------------------------------------------------------------------------


def _can_bind_mount() -> str | None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare(1) for a read-only bind mount"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare -m is not allowed here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def _run_child(setup: str, steps: list[dict[str, object]], out: Path) -> subprocess.CompletedProcess[bytes]:
    """`setup` (shell, as root in a private mount namespace) then the steps in one Python process."""
    out.mkdir(exist_ok=True)
    plan = out / "plan.json"
    plan.write_text(json.dumps({"out": str(out), "steps": steps}))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    child = f"{setup} {sys.executable} {REPO / 'tests' / 'fault_child.py'} {plan}"
    return subprocess.run(["unshare", "-m", "sh", "-c", child], env=env, capture_output=True, timeout=400,
                          check=False)


@pytest.mark.slow  # ~30 s on 2 busy cores: a second process loads torch and both encoder towers
def test_readonly_library_is_searchable_and_refuses_to_index(tmp_path: Path) -> None:
    """Read-only for real: a read-only bind mount of the library in a private mount namespace (chmod does not
    stop root). Where that is not possible, the test skips with the reason (see the next test for the rest)."""
    why = _can_bind_mount()
    if why:
        pytest.skip(why)
    folder = tmp_path / "photos"
    write_images(folder, 4)
    lib_path = tmp_path / "lib"
    assert cli_main(["index", str(folder), "--library", str(lib_path), "--encoder", ENC, "--quiet"]) == 0
    assert not Path(f"{lib_path}/catalog.sqlite-wal").exists()  # closed cleanly: no WAL side files
    out = tmp_path / "out"
    steps: list[dict[str, object]] = [
        {"name": "status", "cli": ["status", "--library", str(lib_path), "--json"]},
        {"name": "search", "cli": ["search", "a photo", "--library", str(lib_path), "--paths"]},
        {"name": "similar", "cli": ["search", "--image", str(folder / "img0001.jpg"), "--library", str(lib_path),
                                    "--paths", "-k", "2"]},
        {"name": "index", "cli": ["index", str(folder), "--library", str(lib_path)]},
        {"name": "serve", "serve": str(lib_path),
         "get": ["/api/status", "/api/search?q=a+photo&k=2", "/api/images/1/thumbnail", "/api/similar?id=1"]},
    ]
    mount = f"mount --bind {lib_path} {lib_path} && mount -o remount,bind,ro {lib_path} || exit 97;"
    proc = _run_child(mount + f" touch {lib_path}/probe 2>/dev/null && exit 98;", steps, out)
    if proc.returncode == 97:
        pytest.skip(f"read-only bind mount not allowed: {proc.stderr.decode(errors='replace')}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    def read(name: str) -> str:
        return (out / name).read_text()

    assert read("status.rc") == "0", read("status.err")
    status = json.loads(read("status.out"))
    assert status["readonly"] is True and status["files"] == 4 and status["vectors"] == 4
    assert read("search.rc") == "0", read("search.err")
    assert len(read("search.out").split()) == 4
    assert read("similar.rc") == "0" and len(read("similar.out").split()) == 2, read("similar.err")
    assert read("index.rc") == "2"
    index_err = " ".join(read("index.err").split())
    assert "is read-only" in index_err and "Traceback" not in index_err and "internal error" not in index_err
    assert read("serve.out").split() == ["200"] * 4  # `picscope serve` works on it too
    assert not (lib_path / "catalog.sqlite-wal").exists()  # nothing was written to the real folder


def test_readonly_open_without_a_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rules through `Library.open(readonly=True)` (what the server and every command get when the
    folder is not writable): no WAL switch, no writes, a clear refusal to index."""
    folder = tmp_path / "photos"
    write_images(folder, 3)
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, encoder=ENC) as lib:
        lib.index(folder)
    before = {p.name: p.stat().st_mtime_ns for p in lib_path.rglob("*") if p.is_file()}
    with Library.open(lib_path, readonly=True) as lib:
        assert lib.readonly and lib.status().files == 3
        assert len(lib.search("a photo", k=3)) == 3
        with pytest.raises(LibraryReadOnlyError, match="read-only"):
            lib.index(folder)
    after = {p.name: p.stat().st_mtime_ns for p in lib_path.rglob("*") if p.is_file()}
    # SQLite may leave an empty WAL beside a catalog it read on a writable folder; nothing else changed
    assert (lib_path / "catalog.sqlite-wal").stat().st_size == 0
    assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == before
    # the automatic choice: a folder that is not writable opens read-only
    monkeypatch.setattr(picscope.library, "folder_is_writable", lambda path: False)
    with Library.open(lib_path) as lib:
        assert lib.readonly


# -- full disks -------------------------------------------------------------------------------------------


def test_ensure_free_message(tmp_path: Path) -> None:
    ensure_free(tmp_path, 1000)
    with pytest.raises(DiskFullError, match=r"^disk full: [\d.]+ MB needed, [\d.]+ MB free at "):
        ensure_free(tmp_path, 1 << 60)


@pytest.mark.slow  # ~30 s on 2 busy cores: a second process loads torch and both encoder towers
def test_disk_full_is_reported_and_the_library_stays_consistent(tmp_path: Path) -> None:
    """On a real full filesystem: a small tmpfs in a private mount namespace (skipped where mounting is not
    allowed). Indexing into it says "disk full: …" (exit 2, no traceback), and after space is freed the next
    run completes and the library matches a clean one."""
    why = _can_bind_mount()
    if why:
        pytest.skip(why)
    a, b = tmp_path / "photos" / "a", tmp_path / "photos" / "b"
    write_images(a, 4)
    write_images(b, 12, prefix="b")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    lib = str(mnt / "lib")
    steps: list[dict[str, object]] = [
        {"name": "first", "cli": ["index", str(a), "--library", lib, "--encoder", ENC, "--quiet"]},
        {"fill": str(mnt), "leave": 300_000},
        {"name": "full", "cli": ["index", str(b), "--library", lib, "--quiet"]},
        {"name": "search_full", "cli": ["search", "a photo", "--library", lib, "--paths"]},
        {"name": "sqlite", "cli": ["index", str(a), "--library", str(mnt / "other"), "--encoder", ENC, "--quiet"]},
        {"rm": [str(mnt / "filler")]},
        {"name": "again", "cli": ["index", str(b), "--library", lib, "--quiet"]},
        {"name": "status", "cli": ["status", "--library", lib, "--json"]},
    ]
    proc = _run_child(f"mount -t tmpfs -o size=24m tmpfs {mnt} || exit 97;", steps, out)
    if proc.returncode == 97:
        pytest.skip(f"mounting a tmpfs is not allowed here: {proc.stderr.decode(errors='replace')}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    def read(name: str) -> str:
        return (out / name).read_text()

    assert read("first.rc") == "0", read("first.err")
    assert read("full.rc") == "2", read("full.err") + read("full.out")
    full_err = " ".join(read("full.err").split())
    assert full_err.startswith("error: disk full: ") and "MB needed" in full_err and "MB free at" in full_err
    assert "Traceback" not in full_err and "internal error" not in full_err
    assert read("search_full.rc") == "2" and "disk full" in read("search_full.err")  # not killed by SIGBUS
    # a new library on the full disk: SQLite's "database or disk is full" becomes the same clear message
    assert read("sqlite.rc") == "2" and " ".join(read("sqlite.err").split()).startswith("error: disk full: ")
    assert read("again.rc") == "0", read("again.err")
    status = json.loads(read("status.out"))
    assert status["files"] == status["vectors"] == 16 and status["errors"] == 0 and status["problems"] == []


def test_enospc_while_indexing_becomes_disk_full_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write failing with ENOSPC half-way (the store, say) ends the run with DiskFullError; what was committed
    before stays, the failed batch is redone by the next run."""
    folder = tmp_path / "photos"
    write_images(folder, 6)
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.config.index.commit_every = 3
        real = type(lib.store).upsert
        calls = {"n": 0}

        def upsert_fails_second_time(self, ids, vectors):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", "vectors.f32")
            return real(self, ids, vectors)

        monkeypatch.setattr(type(lib.store), "upsert", upsert_fails_second_time)
        with pytest.raises(DiskFullError, match=r"disk full: No space left on device writing vectors\.f32"):
            lib.index(folder)
        assert lib.status().files == lib.status().vectors == 3
        monkeypatch.undo()
        report = lib.index(folder)
        assert report.added == 3 and report.unchanged == 3
        assert lib.status().files == lib.status().vectors == 6


def test_indexer_checks_free_space_before_each_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import picscope.diskspace

    folder = tmp_path / "photos"
    write_images(folder, 6)
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.config.index.commit_every = 3
        real = picscope.diskspace.free_bytes
        checks: list[int] = []

        def free_runs_out(path: str | os.PathLike[str]) -> int:
            checks.append(1)  # the first batch checks twice: before it, and when the new store grows its files
            return real(path) if len(checks) <= 2 else 300_000

        monkeypatch.setattr(picscope.diskspace, "free_bytes", free_runs_out)
        with pytest.raises(DiskFullError, match=r"disk full: [\d.]+ MB needed, 0.3 MB free at "):
            lib.index(folder)
        monkeypatch.undo()
        assert lib.status().files == lib.status().vectors == 3  # the first batch, complete
        assert lib.index(folder).added == 3


def test_symlinks_not_followed_are_listed(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = write_images(folder, 2)
    os.symlink(paths[0], folder / "link.jpg")
    with Library.open(tmp_path / "lib", encoder=ENC) as lib:
        lib.config.index.follow_symlinks = False
        report = lib.index(folder)
        assert report.added == 2 and report.skipped == 1
        assert report.problems == [(str(folder / "link.jpg"), "symlink not followed (index.follow_symlinks = false)")]
        lib.config.index.follow_symlinks = True
        again = lib.index(folder)
        assert again.reused == 1 and again.problems == [] and lib.status().files == 3


def test_schema_1_catalog_upgrades_or_is_read_as_is(tmp_path: Path) -> None:
    """Libraries from before the `skips` table: opened writable they migrate to the current schema; opened read-only
    (a read-only mount) they are read as they are, with no skipped paths."""
    import sqlite3

    from picscope.store.catalog import SCHEMA_VERSION, _v1

    path = tmp_path / "catalog.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    _v1(db)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO files(raw, path, size, mtime_ns, status, error, indexed_at) "
               "VALUES (x'2f612e6a7067', '/a.jpg', 0, 0, 'error', 'empty file (0 bytes)', 0)")
    db.close()
    from picscope.store.catalog import Catalog

    ro = Catalog(path, readonly=True)
    assert [(p.path, p.status) for p in ro.problems()] == [("/a.jpg", "error")]
    assert ro.counts()["skipped"] == 0 and ro.skip_index(b"/") == {}
    with pytest.raises(LibraryReadOnlyError):
        ro.set_meta("x", "y")
    ro.close()
    rw = Catalog(path)
    assert rw.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with rw.transaction() as tx:
        rw.replace_skips(tx, b"/photos", {b"/photos/n.txt": (3, 5, "not an image (text file)")})
    assert [(p.path, p.status, p.reason) for p in rw.problems(b"/photos")] == [
        ("/photos/n.txt", "skipped", "not an image (text file)")
    ]
    rw.close()
