"""Load on `picscope serve`: requests/s and p50/p95 latency of `/api/search` (encoder pipeline) and of thumbnails,
with 8 concurrent keep-alive clients over a 10k-image library, against an in-process baseline measured in the
same run (`Library.search` and the thumbnail code called directly, no HTTP).

    python benchmarks/bench_server.py                       # builds /tmp/picscope-bench-server/lib once, reuses it
    python benchmarks/bench_server.py --images 10000 --clients 8 --requests 800

The library: the Flickr8k train+dev photos (7,000, indexed where they lie in the shared data) plus mirrored and
cropped variants of them written to the bench folder, until `--images` files. Queries are distinct Flickr8k dev
captions (no request repeats another, so nothing is answered from a cache). The server is the real command
(`python -m picscope serve`) in its own process on 127.0.0.1; clients are threads in this process, so client and
server share the machine's cores, as a person's browser would. Both the baseline and the server use one torch
thread per request (`PICSCOPE_THREADS=1`, the server's default).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageOps

os.environ.setdefault("PICSCOPE_THREADS", "1")  # as `picscope serve` does: the baseline runs the same way

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, percentiles, table

from picscope import Library
from picscope.paths import data_root

DEFAULT_ROOT = Path("/tmp/picscope-bench-server")


def captions(split: str = "dev") -> list[str]:
    out = []
    with open(data_root() / "flickr8k" / "captions.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["split"] == split:
                out.extend(" ".join(c.replace(" .", "").split()) for c in row["captions"])
    return out


def build_library(root: Path, n_images: int) -> Path:
    """Index the Flickr8k photos in place plus generated variants up to `n_images` files (once; reused)."""
    lib_path = root / "lib"
    if lib_path.exists():
        with Library.open(lib_path, create=False) as lib:
            if lib.status().files >= n_images:
                return lib_path
    src = data_root() / "flickr8k" / "images"
    photos = sorted(src.glob("*.jpg"))
    extra = root / "variants"
    need = max(0, n_images - len(photos))
    extra.mkdir(parents=True, exist_ok=True)
    for i in range(need):
        target = extra / f"v{i:05d}.jpg"
        if target.exists():
            continue
        with Image.open(photos[i % len(photos)]) as im:
            img = ImageOps.mirror(im.convert("RGB")) if i % 2 == 0 else im.convert("RGB").crop((16, 16, 208, 208))
            img.save(target, quality=90)
    t0 = time.perf_counter()
    with Library.open(lib_path) as lib:
        lib.index(src)
        if need:
            lib.index(extra)
        files = lib.status().files
    print(f"indexed {files} images in {time.perf_counter() - t0:.0f} s into {lib_path}", file=sys.stderr)
    return lib_path


class Server:
    def __init__(self, lib_path: Path, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "picscope", "serve", str(lib_path), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"picscope serve exited: {self.proc.stdout.read() if self.proc.stdout else ''}")
            try:
                if self.get("/api/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.3)

    def get(self, path: str, con: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        c = con or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if con is None:
            c.close()
        return r.status, body

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_load(clients: int, jobs: Sequence[object], call: Callable[[object, object], bool],
             connect: Callable[[], object]) -> dict[str, float]:
    """`clients` threads share `jobs`; each thread keeps one connection. Returns rps, p50, p95 (ms), errors."""
    lock = threading.Lock()
    it = iter(jobs)
    lat: list[float] = []
    errors = 0

    def worker() -> None:
        nonlocal errors
        con = connect()
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                break
            t0 = time.perf_counter()
            ok = call(con, job)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                errors += 0 if ok else 1
        close = getattr(con, "close", None)
        if callable(close):
            close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    p50, p95 = percentiles(lat)
    return {"n": len(lat), "rps": len(lat) / wall, "p50": p50 * 1000, "p95": p95 * 1000, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=800, help="search requests per measurement")
    ap.add_argument("--thumbs", type=int, default=800, help="distinct thumbnails per measurement")
    ap.add_argument("--k", type=int, default=24)
    ap.add_argument("--port", type=int, default=8791)
    args = ap.parse_args()
    if not (data_root() / "flickr8k" / "captions.jsonl").exists():
        sys.exit(f"needs the shared Flickr8k data under {data_root()} (set PICSCOPE_DATA)")
    lib_path = build_library(args.root, args.images)
    queries = captions("dev")
    n = args.requests
    rows: list[list[object]] = []

    def row(what: str, clients: int, r: dict[str, float]) -> None:
        rows.append([what, clients, int(r["n"]), r["rps"], r["p50"], r["p95"], int(r["errors"])])
        print(f"  {what}: {r['rps']:.1f} req/s, p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, "
              f"{int(r['errors'])} errors", file=sys.stderr)

    with Library.open(lib_path, create=False) as lib:
        files = lib.status().files
        ids = lib.catalog.ok_ids()[: args.thumbs]
        lib.search("warm up", args.k)

        def lib_search(_: object, q: object) -> bool:
            return len(lib.search(str(q), args.k)) == args.k

        # baseline: in-process, no HTTP, first sequential then with the same concurrency
        row("in-process Library.search", 1, run_load(1, queries[n: n + n // 2], lib_search, lambda: None))
        row("in-process Library.search", args.clients,
            run_load(args.clients, queries[2 * n: 3 * n], lib_search, lambda: None))

        from picscope.server.images import LibraryImages

        cold_dir = args.root / "inproc-thumbs"
        shutil.rmtree(cold_dir, ignore_errors=True)
        images = LibraryImages(lib, thumb_dir=cold_dir)

        def lib_thumb(_: object, fid: object) -> bool:
            return len(images.thumbnail(int(str(fid)), 256).data) > 0

        row("in-process thumbnail, cold (decode + resize + cache)", args.clients,
            run_load(args.clients, ids, lib_thumb, lambda: None))
        row("in-process thumbnail, warm (disk cache)", args.clients, run_load(args.clients, ids, lib_thumb,
                                                                              lambda: None))

    shutil.rmtree(lib_path / "thumbs", ignore_errors=True)
    server = Server(lib_path, args.port)
    try:
        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)

        def http_search(con: object, q: object) -> bool:
            status, body = server.get(f"/api/search?q={quote(str(q))}&k={args.k}", con)  # type: ignore[arg-type]
            return status == 200 and len(json.loads(body)["results"]) == args.k

        def http_thumb(con: object, fid: object) -> bool:
            status, body = server.get(f"/api/images/{fid}/thumbnail", con)  # type: ignore[arg-type]
            return status == 200 and body[:2] == b"\xff\xd8"

        server.get(f"/api/search?q=warm+up&k={args.k}")
        row("HTTP GET /api/search (encoder)", 1, run_load(1, queries[3 * n: 3 * n + n // 2], http_search, connect))
        row("HTTP GET /api/search (encoder)", args.clients,
            run_load(args.clients, queries[4 * n: 5 * n], http_search, connect))
        row("HTTP thumbnail, cold (decode + resize + cache)", args.clients,
            run_load(args.clients, ids, http_thumb, connect))
        row("HTTP thumbnail, warm (disk cache)", args.clients, run_load(args.clients, ids, http_thumb, connect))
    finally:
        server.stop()

    print(f"\n{files:,} images, k={args.k}, {machine()}, {os.cpu_count()} cores shared by clients and server\n")
    print(table(["what", "clients", "requests", "req/s", "p50 ms", "p95 ms", "errors"], rows))
    errors = sum(int(str(r[-1])) for r in rows)
    if errors:
        sys.exit(f"{errors} requests failed")


if __name__ == "__main__":
    main()
