"""`picscope session`: numbered results, +N/-N marks, next, undo, back, show, why, quit, --resume, bad input."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from picscope import Library
from picscope.cli import main
from picscope.sessions import Session
from tests.feedback_test_doubles import write_colour_images


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    write_colour_images(tmp_path / "photos", per_colour=6)
    with Library.open(tmp_path / "lib", encoder="test-colour") as lib:
        lib.index(tmp_path / "photos")
    return tmp_path / "lib"


def _run(args: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out + captured.err


def test_a_terminal_session_and_resume(
    library: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _run(
        ["session", "red", "-k", "4", "--library", str(library)],
        "+1 +2 -4\nshow 2\nundo\n+1\nnext\nwhy\n+9\nfoo\nquit\n",
        monkeypatch,
        capsys,
    )
    assert re.search(r"^\s+1\. .*red\d\d\.png", text, re.M)
    assert "marked: 2 relevant, 1 not relevant" in text
    assert "id " in text and "score" in text  # show 2
    assert "undone: -4" in text
    assert "round 1" in text and "round 0: 'red'" in text
    assert "there is no result 9 on this page" in text and "unknown command 'foo'" in text
    sid = re.search(r"--resume (\w+)", text)
    assert sid
    with Library.open(library) as lib:
        s = Session.open(lib, sid.group(1))
        assert s.round == 1 and s.explain()["history"][1]["relevant_so_far"] == 2
    again = _run(["session", "--resume", sid.group(1), "--library", str(library)], "back\n", monkeypatch, capsys)
    assert "round 0" in again
    listed = _run(["session", "--list", "--library", str(library)], "", monkeypatch, capsys)
    assert sid.group(1) in listed


def test_bad_session_input(library: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["session", "--resume", "nope", "--library", str(library)]) == 2
    assert "unknown session id" in capsys.readouterr().err
    assert main(["session", "--library", str(library)]) == 2
    assert "give a query" in capsys.readouterr().err
    assert main(["session", "red", "--strategy", "magic", "--library", str(library)]) == 2
    assert "unknown feedback strategy" in capsys.readouterr().err
