"""`picscope doctor` and the `--llm` / `--vision` options other commands reuse (`LlmOpt`, `VisionOpt`)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from picscope.cli.app import LibraryOpt, app
from picscope.cli.console import out
from picscope.config import PicscopeConfig

LlmOpt = Annotated[
    str | None,
    typer.Option("--llm", help="chat model: bundled | bundled:<name> | gguf:<path> | openai:<base url>#<model> "
                               "[default: the library config's `llm`]"),
]
VisionOpt = Annotated[
    str | None,
    typer.Option("--vision", help="vision model: socratic | socratic:<llm spec> | openai:<base url>#<model> "
                                  "[default: the library config's `vision`]"),
]


def library_config(library: Path | None) -> tuple[PicscopeConfig, Path]:
    from picscope.layout import LibraryLayout
    from picscope.paths import default_library_path

    path = Path(library).expanduser() if library else default_library_path()
    return PicscopeConfig.load(LibraryLayout(path).config), path


def _probe(name: str, role: str, spec: str, fn: Callable[[], str]) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        detail, status = fn(), "ok"
    except Exception as exc:  # doctor reports every failure as a status
        detail, status = f"{type(exc).__name__}: {exc}", "error"
    return {"name": name, "role": role, "spec": spec, "status": status,
            "detail": f"{detail} ({time.perf_counter() - t:.1f}s)"}


def run_doctor(config: PicscopeConfig, library_path: Path, llm: str | None = None,
               vision: str | None = None) -> list[dict[str, Any]]:
    from picscope.encoders import make_encoder
    from picscope.models import USES_LLM, VISIONS, make_chat_model, make_vision_model
    from picscope.store import make_store

    state: dict[str, Any] = {}
    llm_spec, vision_spec = llm or config.llm, vision or config.vision

    def encoder() -> str:
        enc = make_encoder(config.encoder)
        v = np.asarray(enc.embed_texts(["a photo of a dog"]))
        if v.shape != (1, enc.dim) or not np.isfinite(v).all():
            raise RuntimeError(f"bad text embedding shape {v.shape}")
        state["encoder"] = enc
        return f"{enc.name}, dim {enc.dim}"

    def store() -> str:
        with tempfile.TemporaryDirectory() as tmp:
            s = make_store(config.store, Path(tmp), 8)
            vecs = np.eye(8, dtype=np.float32)[:3]
            s.upsert(np.arange(1, 4, dtype=np.int64), vecs)
            hits = s.search(vecs[1:2], 1)
            s.close()
        ok = int(np.asarray(hits.ids)[0][0]) == 2
        if not ok:
            raise RuntimeError("a stored vector did not find itself")
        return "upsert+search round trip ok" + (" (library exists)" if library_path.exists() else "")

    def chat() -> str:
        model = make_chat_model(llm_spec)
        state["chat"] = model
        detail = model.check() if hasattr(model, "check") else "built"
        prov = getattr(model, "provenance", None)
        return detail + (f"; {prov.get('model', '')} sha256 {prov['sha256'][:12]}…" if prov and "sha256" in prov
                         else "")

    def vis() -> str:
        from PIL import Image

        chat_model = state.get("chat")
        entry, arg = VISIONS.split(vision_spec)
        if chat_model is None and USES_LLM in entry.traits and not arg:
            chat_model = make_chat_model(llm_spec)  # the socratic model uses the configured llm
        model = make_vision_model(vision_spec, chat=chat_model, encoder=state.get("encoder"))
        if hasattr(model, "check"):
            return str(model.check())
        p = model.verify(Image.new("RGB", (64, 64), (200, 30, 30)), ["a red square"])
        return f"verify answered P(yes)={p[0]:.2f}"

    return [
        _probe("encoder", "encoder", config.encoder, encoder),
        _probe("store", "store", config.store, store),
        _probe("llm", "chat", llm_spec, chat),
        _probe("vision", "vision", vision_spec, vis),
    ]


@app.command()
def doctor(
    library: LibraryOpt = None,
    llm: LlmOpt = None,
    vision: VisionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print {\"backends\": [...]} as JSON")] = False,
) -> None:
    """Check every configured backend (encoder, store, llm, vision) with a live call; exit 1 if one is not ok."""
    config, path = library_config(library)
    rows = run_doctor(config, path, llm, vision)
    if as_json:
        out.print_json(json.dumps({"backends": rows}))
    else:
        for r in rows:
            mark = "[green]ok[/]" if r["status"] == "ok" else f"[red]{r['status']}[/]"
            out.print(f"{r['name']:8} {mark:8} {r['spec']}  {r['detail']}", highlight=False)
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)


@app.command()
def specs(
    as_json: Annotated[bool, typer.Option("--json", help="print {\"specs\": [...]} as JSON")] = False,
) -> None:
    """List every backend a spec string can name (stores, encoders, llm, vision, reasoners): how to write it, what
    it needs and whether that is installed."""
    from picscope.specs import all_registries

    entries = [(reg.kind, e) for reg in all_registries() for e in reg.entries()]
    if as_json:
        rows = [{"kind": kind, "spec": e.usage, "installed": e.installed, "missing": e.missing(),
                 "needs": list(e.needs), "summary": e.summary} for kind, e in entries]
        out.print_json(json.dumps({"specs": rows}))
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for col in ("kind", "spec", "installed", "needs", "what it is"):
        table.add_column(col, overflow="fold")
    for kind, e in entries:
        missing = e.missing()
        have = f"no (missing {', '.join(missing)})" if missing else "yes"
        table.add_row(kind, e.usage, have, ", ".join(e.needs) or "-", e.summary)
    out.print(table)
