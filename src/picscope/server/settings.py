"""Server settings: where it listens, who may call it, and the limits that keep it responsive."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None  # when set, every route needs it (header, cookie, or ?token= once)
    cors_origins: list[str] = field(default_factory=list)  # CORS is off unless origins are given
    allowed_hosts: list[str] | None = None  # Host headers accepted; None: loopback names for a loopback bind
    upload_dir: Path | None = None  # None: a fresh temporary folder, removed at shutdown
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 50_000_000  # decompression-bomb guard for uploads
    max_upload_decode_bytes: int = 160 * 1024 * 1024  # pixels in memory while decoding one upload (mode-aware)
    upload_decodes: int = 2  # uploads decoded at once
    max_uploads: int = 200  # the oldest are removed beyond this
    upload_ttl_s: float = 3600.0
    max_json_bytes: int = 256 * 1024  # request bodies other than uploads
    max_query_chars: int = 1000
    max_k: int = 500  # results per request (offset + k)
    max_turns: int = 20
    work_slots: int = 4  # requests running model work at once (search, similar, session rounds)
    work_queue: int = 64  # requests waiting for a slot; beyond this: 429
    queue_timeout_s: float = 30.0  # a request that waited this long for a slot: 429
    model_slots: int = 2  # LLM/VLM pipeline requests (imagescope stages, model feedback rounds) at once: their own
    model_queue: int = 16  # pool, so hung model calls never take the slots of encoder-only searches
    model_budget_s: float | None = None  # a model request's total time (None: the library's pipeline.max_seconds)
    per_client_connections: int = 32  # open connections per client address (the oldest idle one makes room)
    header_timeout_s: float = 10.0  # a request head must be complete within this (slowloris guard)
    body_timeout_s: float = 60.0  # a request body must be complete within this of its head
    thumb_slots: int = 4  # thumbnails decoded at once
    thumb_queue: int = 512
    thumb_size: int = 256  # long side of grid thumbnails
    view_size: int = 1600  # long side of the large view of formats browsers cannot show
    default_pipeline: str = "encoder"
    pipelines: tuple[str, ...] = ("encoder", "imagescope")  # pipelines a request may ask for

    def hosts(self) -> list[str]:
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        if is_loopback(self.host):
            return ["127.0.0.1", "localhost", "::1", "[::1]"]
        return ["*"]
