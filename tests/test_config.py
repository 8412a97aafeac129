"""`config.toml`: defaults, checks (types, bounds, unknown keys, choices), store tables kept, and a clear CLI error."""

from __future__ import annotations

from pathlib import Path

import pytest

from picscope.cli import main
from picscope.config import InvalidConfig, PicscopeConfig, PipelineConfig
from picscope.errors import ConfigError


def test_defaults_and_a_round_trip_keep_store_tables(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('encoder = "labels"\n[search]\nmin_score = 1\n[ann]\nM = 8\nef_search = 16\n', encoding="utf-8")
    cfg = PicscopeConfig.load(path)
    assert cfg.encoder == "labels" and cfg.store == "exact" and cfg.index.batch_size == 8
    assert cfg.search.min_score == 1.0 and isinstance(cfg.search.min_score, float)  # an int is fine for a float
    assert cfg.extra == {"ann": {"M": 8, "ef_search": 16}}
    cfg.index.include = ["*.jpg"]
    cfg.save(path)
    again = PicscopeConfig.load(path)
    assert again == cfg and again.extra == cfg.extra and again.index.include == ["*.jpg"]
    assert "[ann]" in path.read_text(encoding="utf-8") and "min_score = 1.0" in path.read_text(encoding="utf-8")
    assert PicscopeConfig.load(tmp_path / "missing.toml") == PicscopeConfig()


@pytest.mark.parametrize(("data", "message"), [
    ({"index": {"batch_size": 0}}, "index.batch_size: should be greater than or equal to 1, got 0"),
    ({"index": {"decode_workers": 65}}, "index.decode_workers: should be less than or equal to 64, got 65"),
    ({"pipeline": {"max_seconds": 0}}, "pipeline.max_seconds: should be greater than 0, got 0"),
    ({"vectors": "tiny"}, "vectors: expected one of 'compact', 'full', got 'tiny'"),
    ({"index": {"batchsize": 4}}, "index.batchsize: unknown key"),
    ({"pipeline": {"stages": [1, "two"]}}, "pipeline.stages[1]: expected int, got 'two'"),
    ({"index": {"follow_symlinks": "maybe"}}, "index.follow_symlinks: expected bool, got 'maybe'"),
    ({"index": {"batch_size": 8.5}}, "index.batch_size: expected int, got 8.5"),
    ({"search": {"k": True}}, "search.k: expected int, got True"),
    ({"search": {"min_score": "high"}}, "search.min_score: expected float or none, got 'high'"),
    ({"index": 3}, "index: expected a table, got 3"),
])
def test_each_wrong_key_is_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        PicscopeConfig.model_validate(data)
    assert message in str(info.value)


LAX_CASES = ["8", " 8 ", "8.0", 8.0, 8.5, "8.5", "0.5", "1e3", "1_000", "+3", "-2", "", "x", "yes", "no", "on",
             "off", "1", "0", 1, 0, 2, "true", "False", "maybe", None, [1]]


@pytest.mark.parametrize("hint", [int, float, bool, str])
def test_values_are_read_as_leniently_as_pydantic_read_them(hint: type) -> None:
    """The config was a pydantic model; a file it accepted must still load, with the same values, and one it refused
    must still be refused. (One deliberate difference, tested above: a bool is no longer read as a number.)"""
    pydantic = pytest.importorskip("pydantic")
    from picscope.config import _BAD, _lax

    adapter = pydantic.TypeAdapter(hint)
    for value in LAX_CASES:
        try:
            expected = adapter.validate_python(value)
        except pydantic.ValidationError:
            expected = _BAD
        got = _lax(value, hint)
        assert got == expected and type(got) is type(expected), (hint, value, got, expected)


def test_every_mistake_is_listed_at_once() -> None:
    with pytest.raises(InvalidConfig, match="2 error") as info:
        PicscopeConfig.model_validate({"index": {"batch_size": 0}, "llm": 3})
    assert "index.batch_size" in str(info.value) and "llm: expected str, got 3" in str(info.value)


def test_copy_with_an_update_leaves_the_original() -> None:
    base = PipelineConfig(verify_k=4)
    copy = base.model_copy(update={"reasoner": "rules"})
    assert (copy.reasoner, copy.verify_k, base.reasoner) == ("rules", 4, "auto")
    assert PipelineConfig.model_validate({"alpha": 3}).alpha == 3


def test_a_bad_config_file_is_a_clear_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "config.toml").write_text("[index]\nbatch_size = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid configuration"):
        PicscopeConfig.load(lib / "config.toml")
    assert main(["index", str(tmp_path), "--library", str(lib), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "invalid configuration" in err and "index.batch_size" in err and "Traceback" not in err
