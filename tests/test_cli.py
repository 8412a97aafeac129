"""The CLI contract: index, search (table, --json, --paths, --image), status, demo; errors exit 2 with a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from picscope.cli import main


@pytest.fixture(scope="module")
def library(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("cli") / "lib"
    assert main(["index", str(demo_folder), "--library", str(lib), "--encoder", "labels", "--quiet"]) == 0
    return lib


def test_search_json_contract(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["search", "a cup of coffee", "-k", "3", "--json", "--library", str(library)]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert len(rows) == 3 and {"path", "score", "id", "rank"} <= set(rows[0])
    assert rows[0]["path"].endswith("coffee.jpg")
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]


def test_search_paths_and_table(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["search", "a tabby cat", "-k", "2", "--paths", "--library", str(library)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("cat.jpg") and Path(lines[0]).exists()
    assert main(["search", "a tabby cat", "-k", "2", "--library", str(library)]) == 0
    table = capsys.readouterr().out
    assert "score" in table and "cat.jpg" in table


def test_search_by_image(library: Path, demo_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["search", "--image", str(demo_folder / "cat.jpg"), "--json", "--library", str(library)]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert rows and all(not r["path"].endswith("/cat.jpg") for r in rows)


def test_env_var_selects_library(
    library: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PICSCOPE_LIBRARY", str(library))
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(library)


def test_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "x", "--library", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no library" in err and "Traceback" not in err
    assert main(["index", str(tmp_path / "nope"), "--library", str(tmp_path / "l"), "--encoder", "labels"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["index", str(tmp_path), "--library", str(tmp_path / "l2"), "--encoder", "bogus"]) == 2
    assert "unknown encoder spec" in capsys.readouterr().err


def test_demo_writes_photos(tmp_path: Path) -> None:
    assert main(["demo", str(tmp_path / "d")]) == 0
    assert len(list((tmp_path / "d").glob("*.jpg"))) >= 4
