"""`picscope serve [LIBRARY]`: the local web app and REST API (binds 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from picscope.cli.app import LibraryOpt, app
from picscope.cli.console import err, out
from picscope.errors import ConfigError


@app.command()
def serve(
    library_arg: Annotated[Path | None, typer.Argument(metavar="[LIBRARY]", help="library folder "
                                                       "(same as --library)")] = None,
    library: LibraryOpt = None,
    host: Annotated[str, typer.Option(help="address to bind; anything but loopback is reachable by others")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8765,
    token: Annotated[str | None, typer.Option(help="require this token on every route [env PICSCOPE_TOKEN]",
                                              envvar="PICSCOPE_TOKEN")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="allow cross-origin calls from "
                                                          "this origin (repeatable; CORS is off by default)")] = None,
    pipeline: Annotated[str, typer.Option(help="default search pipeline: encoder or imagescope")] = "encoder",
    slots: Annotated[int, typer.Option(min=1, help="encoder requests (search, similar, sessions) at once")] = 4,
    model_slots: Annotated[int, typer.Option(min=1, help="LLM/VLM pipeline requests at once (their own pool)")] = 2,
    max_connections_per_client: Annotated[int, typer.Option(min=1, help="open connections per client address")]
    = 32,
) -> None:
    """Start the web app: search box, thumbnails, "more like this", "like this, but…", sessions, explanations."""
    # One torch thread per request: a server runs requests side by side, and on a busy machine a multi-threaded
    # text tower waits on its slowest thread (measured: p50 13 ms with 1 thread vs 60-550 ms with 2 under load).
    os.environ.setdefault("PICSCOPE_THREADS", "1")
    try:
        from picscope.server import ServerSettings, create_app
        from picscope.server.connections import Server, uvicorn_config
    except ImportError as exc:
        raise ConfigError(f"the web app needs the server extra: pip install 'picscope[server]' ({exc})") from exc
    if library_arg is not None and library is not None and library_arg != library:
        raise typer.BadParameter("give the library once: as an argument or with --library")
    if token is not None and not token.strip():
        raise ConfigError("--token is empty: give a real secret (e.g. --token \"$(openssl rand -hex 16)\") or "
                          "leave --token out (and unset PICSCOPE_TOKEN) to serve loopback without one")
    if pipeline not in ("encoder", "imagescope"):
        raise typer.BadParameter("--pipeline must be encoder or imagescope")
    settings = ServerSettings(host=host, port=port, token=token, cors_origins=list(cors_origin or []),
                              work_slots=slots, model_slots=model_slots, default_pipeline=pipeline,
                              per_client_connections=max_connections_per_client)
    from picscope.server.settings import is_loopback

    if not is_loopback(host) and not token:
        err.print(f"[yellow]warning:[/] serving on {host} without --token: anyone who can reach this machine can "
                  "search and view your photos", highlight=False)
    application = create_app(library_arg or library or os.environ.get("PICSCOPE_LIBRARY") or _default(), settings)
    state = application.state.picscope
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    out.print(f"picscope: serving {state.library.path} ({state.library.status().files} photos) at {url}",
              highlight=False)
    Server(uvicorn_config(application, settings), on_exit=state.cancel_model_work).run()


def _default() -> Path:
    from picscope.paths import default_library_path

    return default_library_path()
