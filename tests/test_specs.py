"""One spec registry for every factory, and `picscope specs` listing what is available."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from picscope.cli import main
from picscope.errors import ConfigError, EncoderError
from picscope.specs import SpecRegistry, all_registries


@pytest.fixture()
def fake_store() -> Iterator[None]:
    """A store backend that needs a module no machine has: listed as not installed."""
    from picscope.store import STORES, register_store

    register_store("nowhere", usage="nowhere:<x>", summary="test only", needs=("picscope_no_such_module_xyz",))(
        lambda arg, folder, dim: None)  # type: ignore[arg-type,return-value]
    yield
    STORES._entries.pop("nowhere")


def test_specs_lists_every_kind_with_what_it_needs(fake_store: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["specs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["specs"]
    by = {(r["kind"], r["spec"]): r for r in rows}
    assert {r["kind"] for r in rows} == {"store", "encoder", "llm", "vision", "reasoner"}
    assert {("store", "exact"), ("store", "ann"), ("store", "milvus:<uri>"), ("encoder", "bundled"),
            ("llm", "bundled[:<name>]"), ("llm", "openai:<base url>#<model>"), ("vision", "socratic[:<llm spec>]"),
            ("reasoner", "auto")} <= set(by)
    assert by[("store", "exact")]["installed"] is True
    missing = by[("store", "nowhere:<x>")]
    assert missing["installed"] is False and missing["missing"] == ["picscope_no_such_module_xyz"]
    assert main(["specs"]) == 0
    table = capsys.readouterr().out
    assert "nowhere:<x>" in table and "missing" in table


def test_every_factory_uses_the_registry() -> None:
    kinds = {reg.kind: reg for reg in all_registries()}
    from picscope.encoders import ENCODERS
    from picscope.models import CHATS, VISIONS
    from picscope.pipeline.reasoner import REASONERS
    from picscope.store import STORES

    assert kinds == {"store": STORES, "encoder": ENCODERS, "llm": CHATS, "vision": VISIONS, "reasoner": REASONERS}


def test_unknown_specs_are_clear_errors_of_each_kind(tmp_path: object) -> None:
    from picscope.encoders import make_encoder
    from picscope.models import make_chat_model, make_vision_model
    from picscope.store import make_store

    with pytest.raises(ConfigError, match=r"unknown store spec .nope.; known: .*exact"):
        make_store("nope", tmp_path, 4)  # type: ignore[arg-type]
    with pytest.raises(EncoderError, match="unknown encoder spec 'nope'"):
        make_encoder("nope")
    with pytest.raises(ConfigError, match=r"unknown llm spec .nope.; known: .*gguf:<path>"):
        make_chat_model("nope")
    with pytest.raises(ConfigError, match="unknown vision spec 'nope'"):
        make_vision_model("nope")


def test_registry_splits_on_the_longest_prefix_and_declares_traits() -> None:
    reg: SpecRegistry[object] = SpecRegistry("test-kind")
    reg.register("a", traits=("t",))(lambda: 1)
    reg.register("a-b")(lambda: 2)
    assert reg.split("a") == (reg.entry("a"), "")
    assert reg.split("a:x:y")[1] == "x:y"
    assert reg.split("a-b:z")[0].prefix == "a-b"
    assert reg.has("a:q", "t") and not reg.has("a-b", "t") and not reg.has("zzz", "t")
    with pytest.raises(ConfigError, match="unknown test-kind spec 'b'"):
        reg.split("b")


def test_auto_reasoner_follows_the_declared_trait_not_the_spec_text() -> None:
    from picscope.pipeline.reasoner import AUTO_RULES_NOTE, choose_reasoner, resolve_reasoner

    assert choose_reasoner("auto", "bundled:smollm2-135m") == ("rules", AUTO_RULES_NOTE)  # declared weak-reasoner
    assert resolve_reasoner("auto", "gguf:/models/big.gguf") == "llm"
    assert resolve_reasoner("auto", "openai:http://127.0.0.1:1/v1#m") == "llm"
    assert resolve_reasoner("auto", None) == "rules"
    assert choose_reasoner("llm", "bundled") == ("llm", None)
    with pytest.raises(ConfigError, match="unknown reasoner spec"):
        resolve_reasoner("clever", None)
