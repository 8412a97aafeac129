"""Caches: inside the library (thumbnails) or in the one shared folder ($PICSCOPE_CACHE); `status` lists them
with sizes; `picscope cache clear` empties the results caches, `--all` the converted models too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from picscope.cli import main as cli_main
from picscope.library import CATALOG
from picscope.store.catalog import Catalog


def test_cache_list_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    shared = tmp_path / "cache"
    monkeypatch.setenv("PICSCOPE_CACHE", str(shared))
    lib = tmp_path / "lib"
    lib.mkdir()
    Catalog(lib / CATALOG).close()  # a library folder (caches are listed without loading an encoder)
    (lib / "thumbs" / "256").mkdir(parents=True)
    (lib / "thumbs" / "256" / "1-abc.jpg").write_bytes(b"x" * 5000)
    (shared / "model-calls" / "ab").mkdir(parents=True)
    (shared / "model-calls" / "ab" / "abcd.json").write_text("{}" * 100)
    (shared / "efficientnet-lite0-1234.onnx").write_bytes(b"o" * 7000)

    assert cli_main(["cache", "list", "--library", str(lib), "--json"]) == 0
    caches = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert caches["thumbnails"]["bytes"] == 5000 and caches["thumbnails"]["scope"] == "library"
    assert caches["thumbnails"]["path"] == str(lib / "thumbs")
    assert caches["model-calls"]["bytes"] == 200 and caches["model-calls"]["path"] == str(shared / "model-calls")
    assert caches["converted-models"]["bytes"] == 7000 and caches["converted-models"]["kind"] == "models"
    assert all(Path(c["path"]).is_relative_to(lib) or Path(c["path"]).is_relative_to(shared) for c in caches.values())

    assert cli_main(["cache", "clear", "--library", str(lib)]) == 0
    said = capsys.readouterr().out
    assert "cleared thumbnails" in said and "cleared model-calls" in said
    assert not (lib / "thumbs").exists() and not (shared / "model-calls").exists()
    assert (shared / "efficientnet-lite0-1234.onnx").exists()  # models stay without --all
    assert (lib / CATALOG).exists()
    assert cli_main(["cache", "clear", "--library", str(lib), "--all"]) == 0
    capsys.readouterr()
    assert not (shared / "efficientnet-lite0-1234.onnx").exists()


def test_status_lists_caches(tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_folder: Path) -> None:
    lib = tmp_path / "lib"
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        (folder / name).write_bytes((demo_folder / name).read_bytes())
    assert cli_main(["index", str(folder), "--library", str(lib), "--encoder", "labels", "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["status", "--library", str(lib), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in status["caches"]]
    assert names[0] == "thumbnails" and "model-calls" in names
    assert cli_main(["status", "--library", str(lib)]) == 0
    assert "thumbnails" in capsys.readouterr().out
