from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scikit-image sample photos, written once per test session."""
    from picscope.demo import write_demo_folder

    folder = tmp_path_factory.mktemp("demo")
    write_demo_folder(folder)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from picscope.paths import data_root

    root = data_root()
    if not (root / "flickr8k" / "captions.jsonl").exists():
        pytest.skip(f"shared evaluation data not found at {root} (set PICSCOPE_DATA)")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Libraries default to a temp folder so tests never touch the user's data."""
    monkeypatch.setenv("PICSCOPE_LIBRARY", str(tmp_path_factory.getbasetemp() / "default-library"))
