"""The plain text search of a new process without typer (`picscope.cli.quick`): which command lines it takes, that
its option names and default are the search command's, that it prints what the typer command prints, and that the
`picscope` program ends as soon as its output is written, with all of it written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import picscope
from picscope.cli import load_commands, main, quick
from picscope.cli.quick import QuickSearch, parse


@pytest.fixture(scope="module")
def library(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("quick") / "lib"
    assert main(["index", str(demo_folder), "--library", str(lib), "--quiet"]) == 0  # the default encoder
    return lib


@pytest.mark.parametrize(("argv", "expected"), [
    (["search", "a cat"], QuickSearch("a cat", None, 10, False, False)),
    (["search", "a cat", "--library", "L", "-k", "3"], QuickSearch("a cat", Path("L"), 3, False, False)),
    (["search", "-L", "L", "--top", "4", "a cat", "--paths"], QuickSearch("a cat", Path("L"), 4, True, False)),
    (["search", "--library=L", "--top=2", "--json", "a cat"], QuickSearch("a cat", Path("L"), 2, False, True)),
    (["search", "  spaced  query "], QuickSearch("  spaced  query ", None, 10, False, False)),
    (["search", "--image", "c.jpg", "-k", "2"], QuickSearch(None, None, 2, False, False, Path("c.jpg"))),
])
def test_the_common_forms_are_read(argv: list[str], expected: QuickSearch) -> None:
    assert parse(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["index", "photos"], ["--verbose", "search", "a cat"], ["search"], ["search", ""], ["search", "   "],
    ["search", "a", "cat"], ["search", "a cat", "-k", "0"], ["search", "a cat", "-k", "x"], ["search", "a cat", "-k"],
    ["search", "a cat", "-k", "-1"], ["search", "a cat", "-k5"], ["search", "a cat", "-k=5"],
    ["search", "a cat", "-k", "1", "-k", "2"], ["search", "a cat", "--json", "--paths"],
    ["search", "a cat", "--paths", "--paths"], ["search", "a cat", "--library"], ["search", "a cat", "--library="],
    ["search", "a cat", "--library", "-x"], ["search", "a cat", "--image", "c.jpg"], ["search", "--image", "c.jpg",
    "--image", "d.jpg"], ["search", "--image"], ["search", "--image", "c.jpg", "--explain"],
    ["search", "--image", "c.jpg", "--ref", "x.jpg"], ["search", "a cat", "--stages", "1-3"],
    ["search", "a cat", "--explain"], ["search", "a cat", "--rerank"], ["search", "a cat", "--help"],
    ["search", "--", "-a cat"], ["search", "-"], ["search", "a cat", "--ref", "x.jpg"], ["search", "a cat", "-v"],
])
def test_everything_else_is_left_to_the_command(argv: list[str]) -> None:
    assert parse(argv) is None


def test_the_names_and_the_default_are_the_search_commands() -> None:
    import typer.main

    from picscope.cli.app import app

    load_commands(["search"])
    command = typer.main.get_command(app).commands[quick.COMMAND]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    for spelling, name in {**quick.VALUE_OPTIONS, **quick.FLAG_OPTIONS}.items():
        param = params[name]
        assert spelling in param.opts or spelling in param.secondary_opts, (spelling, name)
        assert param.is_flag == (spelling in quick.FLAG_OPTIONS), spelling
    assert params["k"].default == quick.DEFAULT_K
    positional = [p.name for p in command.params if p.param_type_name == "argument"]
    assert positional == ["query"] and params["image"].default is None


def _without_times(value: Any) -> Any:
    """A search's JSON without its timings (they differ from run to run)."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _typer_path(argv: list[str]) -> int:
    from picscope.cli.app import run_app

    load_commands(argv)
    return run_app(argv)


@pytest.mark.parametrize("extra", [[], ["-k", "3"], ["--paths", "-k", "4"], ["--json", "--top=2"], ["--image"],
                                   ["--image", "--json", "-k", "2"]])
def test_it_prints_what_the_command_prints(extra: list[str], library: Path, demo_folder: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    what = ["--image", str(demo_folder / "cat.jpg")] if "--image" in extra else ["a tabby cat"]
    argv = ["search", *what, "--library", str(library), *[e for e in extra if e != "--image"]]
    assert parse(argv) is not None
    capsys.readouterr()
    assert quick.run(argv) == 0
    fast = capsys.readouterr()
    assert _typer_path(argv) == 0
    slow = capsys.readouterr()
    if "--json" in extra:
        fast_data, slow_data = json.loads(fast.out), json.loads(slow.out)
        assert len(fast_data["results"]) == 2 and _without_times(fast_data) == _without_times(slow_data)
        assert fast_data["results"][0]["path"].endswith("cat.jpg") or "--image" in extra  # the photo is left out
    else:
        assert fast.out == slow.out and len(fast.out.splitlines()) >= 3
        assert "--image" in extra or "cat.jpg" in fast.out.splitlines()[2 if "--paths" not in extra else 0]
    assert fast.err == slow.err == ""


def test_a_missing_library_is_the_same_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "a cat", "--library", str(tmp_path / "nothing here")]
    capsys.readouterr()
    assert quick.run(argv) == 2
    fast = capsys.readouterr()
    assert _typer_path(argv) == 2
    slow = capsys.readouterr()
    assert fast.err == slow.err and "no library at" in " ".join(fast.err.split()) and fast.out == slow.out == ""


LAUNCH = "import sys; from picscope.cli import entry; sys.argv[0] = 'picscope'; entry()"  # as the console script


def _program(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(picscope.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def test_the_program_writes_everything_before_it_ends(library: Path) -> None:
    proc = _program(["search", "a tabby cat", "-k", "12", "--paths", "--library", str(library)])
    out, err = proc.communicate(timeout=300)
    lines = out.splitlines()
    assert proc.returncode == 0 and err == ""
    assert len(lines) == 12 and lines[0].endswith("cat.jpg") and all(Path(p).exists() for p in lines)
    proc = _program(["search", "a tabby cat", "--json", "--library", str(library)])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and len(json.loads(out)["results"]) == 10


def test_the_program_sets_the_blas_wait_and_runs_its_exit_handlers(library: Path) -> None:
    """numpy's OpenBLAS starts with threads that do not spin for a quick search (unless the user set the wait);
    the handlers registered at exit still run although the process skips Python's teardown."""
    code = ("import atexit, os, sys; from picscope.cli import entry; "  # numpy is not imported before `entry`
            "atexit.register(lambda: print('BLAS', os.environ.get('OPENBLAS_THREAD_TIMEOUT'), "
            "__import__('picscope.encoders.numerics').encoders.numerics._blas_controller().threads(), "
            "file=sys.stderr)); sys.argv[0] = 'picscope'; entry()")
    env = dict(os.environ)
    env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    env["OPENBLAS_NUM_THREADS"] = "2"
    env["PYTHONPATH"] = str(Path(picscope.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")

    def blas(args: list[str], **extra: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              env={**env, **extra}, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return [ln for ln in proc.stderr.splitlines() if ln.startswith("BLAS ")][-1].split()[1:]

    plain = ["search", "a tabby cat", "--paths", "--library", str(library)]
    assert blas(plain) == ["4", "2"]  # threads kept for large scans, without the spin
    assert blas(plain, OPENBLAS_THREAD_TIMEOUT="20") == ["20", "2"]  # the user's setting
    assert blas(["search", "a tabby cat", "--rerank", "--library", str(library)])[0] == "None"  # the typer route


def test_a_reader_that_goes_away_gets_no_traceback(library: Path) -> None:
    proc = _program(["search", "a tabby cat", "-k", "17", "--paths", "--library", str(library)])
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read()
    assert proc.wait(timeout=300) in (0, 1)
    assert first.strip().endswith("cat.jpg") and "Traceback" not in err and "Error" not in err


def test_a_plain_search_loads_no_typer(library: Path) -> None:
    code = ("import json, sys; from picscope.cli import main; rc = main(json.loads(sys.argv[1])); "
            "print(json.dumps([rc, [m for m in ('typer', 'click', 'rich') if m in sys.modules]]), file=sys.stderr)")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(picscope.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    for argv, loaded in ([["search", "a cat", "--library", str(library)], []],
                         [["search", "a cat", "--explain", "--library", str(library)], ["typer"]]):
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                              env=env, timeout=300)
        rc, modules = json.loads(proc.stderr.strip().splitlines()[-1])
        assert rc == 0 and [m for m in modules if m == "typer"] == loaded, proc.stderr


class _Ended(Exception):
    pass


def test_end_now_waits_for_a_running_thread_and_otherwise_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import atexit
    import threading

    from picscope.cli import end_now

    calls: list[object] = []

    def fake_exit(rc: int) -> None:
        calls.append(("os._exit", rc))
        raise _Ended

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: calls.append("exit handlers"))
    with pytest.raises(_Ended):
        end_now(3)
    assert calls == ["exit handlers", ("os._exit", 3)]

    calls.clear()
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=False)  # a thread of its own still running
    worker.start()
    try:
        with pytest.raises(SystemExit) as ended:
            end_now(4)
    finally:
        stop.set()
        worker.join()
    assert ended.value.code == 4 and calls == []  # the ordinary exit, which waits for the thread
