"""The local web app and REST API (`picscope serve`): FastAPI, a no-build web UI, images by library id only.

    from picscope.server import create_app, ServerSettings
    app = create_app("~/photos.picscope", ServerSettings(token="secret"))

Needs the `server` extra (fastapi, uvicorn, python-multipart). Guide: docs/web.md.
"""

from __future__ import annotations

from picscope.server.app import create_app
from picscope.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
