"""Capabilities are declared on the protocols, never sniffed; no `library: Any` parameters (source scans)."""

from __future__ import annotations

import ast
from pathlib import Path

from picscope.feedback.base import VectorSource
from picscope.models.base import VisionModel
from picscope.store.base import VectorStore

SRC = Path(__file__).resolve().parents[1] / "src" / "picscope"
# the names the old code sniffed for, plus every member the protocols now declare
RETIRED = {"verify_from_vector", "SupportsMeta"}
SNIFFED_PREFIXES = ("socratic", "bundled")
# pipeline/captions.py is the `owners` branch's (the captioning path moves onto CaptionStore there); its three
# `library: Any` parameters go with that move
LIBRARY_ANY_PENDING: set[str] = set()


def _members(proto: type) -> set[str]:
    names = {n for n in vars(proto) if not n.startswith("_")} | set(getattr(proto, "__annotations__", {}))
    return names - {"spec", "dim"}  # plain identity attributes, not capabilities


CAPABILITIES = _members(VectorStore) | _members(VisionModel) | RETIRED


def sniffing(source: str) -> list[str]:
    """Capability sniffing in `source`: getattr/hasattr of a declared capability, `.startswith("socratic"…)` /
    `.startswith("bundled"…)` on a spec, `isinstance(x, SupportsMeta)`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        args = node.args
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(args) >= 2 \
                and isinstance(args[1], ast.Constant) and args[1].value in CAPABILITIES:
            found.append(f"{func.id}(…, {args[1].value!r}) at line {node.lineno}")
        if isinstance(func, ast.Attribute) and func.attr == "startswith" and args:
            values = args[0].elts if isinstance(args[0], ast.Tuple) else [args[0]]
            for v in values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.startswith(SNIFFED_PREFIXES):
                    found.append(f".startswith({v.value!r}) at line {node.lineno}")
        if isinstance(func, ast.Name) and func.id == "isinstance" and len(args) == 2 \
                and isinstance(args[1], ast.Name) and args[1].id in RETIRED:
            found.append(f"isinstance(…, {args[1].id}) at line {node.lineno}")
    return found


def library_any(source: str) -> list[str]:
    """Function parameters named `library`/`lib` annotated `Any` (or not annotated at all)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                if arg.arg in ("library", "lib") and (arg.annotation is None or ast.unparse(arg.annotation) == "Any"):
                    found.append(f"{node.name}({arg.arg}: {ast.unparse(arg.annotation) if arg.annotation else '?'})"
                                 f" at line {node.lineno}")
    return found


def _scan(check: object, skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in skip:
            continue
        out += [f"{rel}: {hit}" for hit in check(path.read_text())]  # type: ignore[operator]
    return out


def test_the_scanners_catch_what_they_are_for() -> None:
    bad = '''
def f(library: Any, store, vision, spec):
    if getattr(store, "supports_filter", False) and callable(getattr(store, "drop", None)):
        pass
    if spec.startswith("socratic") or spec.startswith(("x", "bundled:")):
        pass
    if isinstance(store, SupportsMeta) or getattr(vision, "verify_from_vector", None):
        pass
def g(lib, library: "Library") -> None: ...
'''
    assert len(sniffing(bad)) == 6
    assert [h.split(" at")[0] for h in library_any(bad)] == ["f(library: Any)", "g(lib: ?)"]
    fine = ('def f(library: Library, store: VectorStore):\n'
            '    return store.supports_filter and getattr(store, "refresh", None)')
    assert sniffing(fine) == [] and library_any(fine) == []


def test_protocols_declare_the_capabilities() -> None:
    assert {"supports_filter", "upsert_with_meta", "drop", "search"} <= CAPABILITIES
    assert {"answers_from_encoder", "verify_vectors"} <= CAPABILITIES


def test_no_capability_is_sniffed_in_src() -> None:
    assert _scan(sniffing) == []


def test_no_library_parameter_is_typed_any_in_src() -> None:
    assert _scan(library_any, LIBRARY_ANY_PENDING) == []


def test_the_library_and_the_feedback_test_double_are_vector_sources(tmp_path: Path) -> None:
    import numpy as np

    from picscope.library import Library
    from tests.feedback_test_doubles import ColourTestEncoder  # noqa: F401  (registers the test-colour encoder)
    from tests.test_feedback_strategies import _VectorLibrary

    with Library.open(tmp_path / "lib", encoder="test-colour") as lib:
        assert isinstance(lib, VectorSource)
    assert isinstance(_VectorLibrary(np.eye(3), None), VectorSource)
    assert not isinstance(object(), VectorSource)
