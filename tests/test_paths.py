"""The per-user folders: on Linux, computed by the XDG rule without importing platformdirs, and equal to what
platformdirs says for every setting of the variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import picscope
from picscope.paths import APP, user_folder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG rule is computed on Linux")

SETTINGS = [
    {},  # neither variable
    {"XDG_CACHE_HOME": "/tmp/xdg-cache", "XDG_DATA_HOME": "/tmp/xdg-data"},
    {"XDG_CACHE_HOME": "/tmp/xdg-cache/", "XDG_DATA_HOME": "/tmp/xdg data/"},  # a trailing slash, a space
    {"XDG_CACHE_HOME": "", "XDG_DATA_HOME": ""},  # empty: the default
    {"XDG_CACHE_HOME": "  ", "XDG_DATA_HOME": " /tmp/x"},  # blank, and not absolute: the default
    {"XDG_CACHE_HOME": "relative/cache", "XDG_DATA_HOME": "~/data"},  # relative paths are ignored (the spec)
    {"HOME": "/home/someone/"},
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: ",".join(f"{k}={v!r}" for k, v in s.items()) or "none")
def test_the_folders_are_platformdirs_folders(setting: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    platformdirs = pytest.importorskip("platformdirs")
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in setting.items():
        monkeypatch.setenv(var, value)
    assert user_folder("cache") == Path(platformdirs.user_cache_dir(APP))
    assert user_folder("data") == Path(platformdirs.user_data_dir(APP))


def test_finding_the_cache_imports_no_platformdirs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PICSCOPE_CACHE", "PICSCOPE_LIBRARY")}
    env["HOME"] = str(tmp_path)
    env["PYTHONPATH"] = str(Path(picscope.__file__).resolve().parents[1])
    code = ("import sys; from picscope.paths import cache_dir, default_library_path; "
            "print(cache_dir(), default_library_path(), 'platformdirs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == [str(tmp_path / ".cache" / APP), str(tmp_path / ".local/share" / APP / "library"), "False"]
