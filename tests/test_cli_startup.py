"""What a new `picscope` process imports: a search never imports torch/transformers/sentence-transformers, and
`--help`, `--version` and `status` import no model code at all. Each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import picscope
from picscope.cli import main

TORCH = ("torch", "transformers", "sentence_transformers")
MODEL_CODE = (*TORCH, "onnxruntime", "onnx", "tokenizers", "picscope.encoders.towers", "picscope.encoders.minilm",
              "scipy", "efficientnet_lite_pytorch")

DRIVER = """
import json, sys
from picscope.cli import main
rc = main(json.loads(sys.argv[1]))
watch = json.loads(sys.argv[2])
print("MODULES " + json.dumps({"rc": rc, "loaded": [m for m in watch if m in sys.modules]}), file=sys.stderr)
"""


def _run(args: list[str], watch: tuple[str, ...]) -> tuple[int, list[str], str]:
    env = dict(os.environ)
    src = str(Path(picscope.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args), json.dumps(list(watch))],
                          capture_output=True, text=True, env=env, timeout=300)
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    data = json.loads(line[len("MODULES "):])
    return int(data["rc"]), list(data["loaded"]), proc.stdout


@pytest.fixture(scope="module")
def small_library(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four demo photos indexed with the default encoder."""
    base = tmp_path_factory.mktemp("startup")
    photos = base / "photos"
    photos.mkdir()
    for name in ("cat.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"):
        if (demo_folder / name).exists():
            shutil.copy(demo_folder / name, photos / name)
    lib = base / "lib"
    assert main(["index", str(photos), "--library", str(lib), "--quiet"]) == 0
    return lib


def test_text_search_imports_no_torch(small_library: Path) -> None:
    rc, loaded, out = _run(["search", "a tabby cat", "-k", "2", "--json", "--library", str(small_library)],
                           (*TORCH, "picscope.encoders.towers"))
    assert rc == 0
    assert json.loads(out)["results"][0]["path"].endswith("cat.jpg")
    assert loaded == ["picscope.encoders.towers"]  # the text tower ran, without torch


def test_image_search_imports_no_torch(small_library: Path, demo_folder: Path) -> None:
    photo = demo_folder / "horse.png"  # not in the library, so the image tower runs
    rc, loaded, out = _run(["search", "--image", str(photo), "--json", "--library", str(small_library)],
                           (*TORCH, "onnxruntime"))
    assert rc == 0 and len(json.loads(out)["results"]) == 4
    assert loaded == ["onnxruntime"]  # the image tower ran, without torch


# What a text search has no use for: other commands' modules, the server and pipeline, the indexer and image
# decoding (PIL, HEIF), query arithmetic and near-duplicates (only with --add/--subtract, --dedupe), HTTP clients,
# the store backends' option tables, rich (the results table is drawn by `cli/table.py`; rich cost ~40 ms),
# pydantic (the config is plain dataclasses and typer < 0.29 parses arguments without it: it cost ~0.15 s), and in a
# common form of the command typer itself and the command modules (`cli/quick.py` reads it: ~30-50 ms).
NOT_FOR_TEXT_SEARCH = (
    "typer", "picscope.cli.app", "picscope.cli.core",
    "picscope.cli.eval", "picscope.cli.train", "picscope.cli.models", "picscope.cli.chat", "picscope.cli.captions",
    "picscope.cli.session", "picscope.cli.serve", "picscope.cli.scale", "picscope.cli.duplicates",
    "picscope.cli.progress", "picscope.server", "picscope.pipeline", "picscope.pipeline.imagescope",
    "picscope.indexer", "picscope.imageio", "picscope.scan", "picscope.arithmetic", "picscope.dedupe",
    "picscope.models.bundled_vision", "picscope.models.chat", "picscope.feedback", "picscope.sessions", "PIL",
    "PIL.Image", "pillow_heif", "httpx", "uvicorn", "fastapi", "rich", "rich.console", "rich.progress", "rich.table",
    "onnxruntime", "pydantic",
)


def test_text_search_imports_only_what_it_uses(small_library: Path) -> None:
    rc, loaded, out = _run(["search", "a tabby cat", "-k", "1", "--paths", "--library", str(small_library)],
                           (*NOT_FOR_TEXT_SEARCH, "picscope.cli.searching", "picscope.library",
                            "picscope.models.verifier"))
    assert rc == 0 and out.strip().endswith("cat.jpg")
    # the watch list works: these are needed (the verifier re-ranks, from the cells stored at index time)
    assert loaded == ["picscope.cli.searching", "picscope.library", "picscope.models.verifier"]
    rc, loaded, out = _run(["search", "a tabby cat", "-k", "2", "--library", str(small_library)],
                           (*NOT_FOR_TEXT_SEARCH, "picscope.cli.table"))
    assert rc == 0 and loaded == ["picscope.cli.table"]  # the table, without rich
    lines = out.splitlines()
    assert lines[0].split() == ["#", "┃", "score", "┃", "relevance", "┃", "id", "┃", "path"] and len(lines) == 4
    assert lines[2].split("│")[-1].strip().endswith("cat.jpg")


def test_the_command_table_matches_the_registered_commands() -> None:
    """`COMMANDS` (which module a new process imports for a command) names every command of every module."""
    code = """
import json
from picscope.cli import COMMANDS, MODULES, load_commands
from picscope.cli.app import app
load_commands()
seen = {}
for info in app.registered_commands:
    seen[info.name or info.callback.__name__.replace("_", "-")] = info.callback.__module__
for group in app.registered_groups:
    seen[group.name] = group.typer_instance.registered_commands[0].callback.__module__
print(json.dumps({"seen": seen, "table": COMMANDS, "modules": list(MODULES)}))
"""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(picscope.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {name: f"picscope.cli.{mod}" for name, mod in data["table"].items()} == data["seen"]
    assert set(data["table"].values()) == set(data["modules"])


@pytest.mark.parametrize("argv", [["search", "--help"], ["--verbose", "cache", "--help"], ["nosuch"]])
def test_one_command_module_or_all(argv: list[str]) -> None:
    """A named command loads its own module only; an unknown name loads them all, so click can list them."""
    rc, loaded, out = _run(argv, ("picscope.cli.core", "picscope.cli.serve", "picscope.cli.eval"))
    if argv == ["nosuch"]:
        assert rc == 2 and loaded == ["picscope.cli.core", "picscope.cli.serve", "picscope.cli.eval"]
    else:
        assert rc == 0 and loaded == ["picscope.cli.core"] and "Usage: picscope" in out


def test_help_lists_every_command() -> None:
    rc, _, out = _run(["--help"], ())
    assert rc == 0
    from picscope.cli import COMMANDS

    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert set(COMMANDS) <= listed


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["status"]])
def test_help_version_and_status_import_no_model_code(args: list[str], small_library: Path) -> None:
    argv = [*args, "--library", str(small_library)] if args == ["status"] else args
    rc, loaded, out = _run(argv, MODEL_CODE)
    assert rc == 0 and out.strip()
    assert loaded == []
    if args == ["--version"]:
        assert out.strip() == f"picscope {picscope.__version__}"


BLOCKER = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "sentence_transformers", "efficientnet_lite_pytorch",
                                  "torchvision", "scipy"}:
            raise ImportError(f"{name} is blocked: this process plays a base install without torch")
        return None
sys.meta_path.insert(0, Block())
from picscope.cli import main
for argv in json.loads(sys.argv[1]):
    rc = main(argv)
    if rc:
        sys.exit(rc)
"""


@pytest.mark.slow  # builds both ONNX models, the label embeddings and the hubness bank from scratch (~30 s)
def test_a_fresh_install_without_torch_indexes_and_searches(demo_folder: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(picscope.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env["PICSCOPE_CACHE"] = str(tmp_path / "cache")  # nothing built yet
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("cat.jpg", "coffee.jpg", "rocket.jpg", "horse.png"):
        shutil.copy(demo_folder / name, photos / name)
    lib = str(tmp_path / "lib")
    steps = [["index", str(photos), "--library", lib],
             ["search", "a tabby cat", "-k", "1", "--paths", "--library", lib],
             ["search", "--image", str(demo_folder / "astronaut.jpg"), "-k", "1", "--paths", "--library", lib]]
    proc = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(steps)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text_hit, image_hit = proc.stdout.strip().splitlines()[-2:]
    assert text_hit == str(photos / "cat.jpg") and Path(image_hit).parent == photos
    assert "preparing the image model (once)…" in proc.stderr
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir() if p.suffix == ".onnx") == [".onnx", ".onnx"]


@pytest.mark.parametrize("spec", ["hf:openai/clip-vit-base-patch32", "open-clip:ViT-B-32/laion2b_s34b_b79k"])
def test_torch_encoders_without_torch_name_the_extra(spec: str, demo_folder: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(picscope.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    steps = [["index", str(demo_folder), "--library", str(tmp_path / "lib"), "--encoder", spec]]
    proc = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(steps)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "pip install 'picscope[train]'" in message and "Traceback" not in message
