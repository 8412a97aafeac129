"""Load on `picscope serve`: requests/s and p50/p95 latency of `/api/search` (encoder pipeline) and of thumbnails,
with 8 concurrent keep-alive clients over a 10k-image library, against an in-process baseline measured in the
same run (`Library.search` and the thumbnail code called directly, no HTTP).

    python benchmarks/bench_server.py                       # builds /tmp/picscope-bench-server/lib once, reuses it
    python benchmarks/bench_server.py --images 10000 --clients 8 --requests 800
    python benchmarks/bench_server.py --faults --images 500   # run-time faults only, on a small library (~2 min)

`--faults` (issue 18) measures encoder-only `/api/search` and `/api/status` while 4 pipeline searches hang on an
LLM endpoint that accepts and never answers (a raw socket on 127.0.0.1, set as the library's `llm` for the run),
against the same searches with nothing hanging; and the server's peak RSS growth for one upload of each image
mode (its VmHWM, reset before each upload through /proc/PID/clear_refs).

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

    def connect(self) -> http.client.HTTPConnection:
        """A keep-alive connection for one load client."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def search_ok(self, con: object, q: object, k: int) -> bool:
        """`GET /api/search` on `con`: answered with k results."""
        status, body = self.get(f"/api/search?q={quote(str(q))}&k={k}", con)  # type: ignore[arg-type]
        return status == 200 and len(json.loads(body)["results"]) == k

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


class HungEndpoint:
    """An OpenAI-compatible endpoint that accepts every request and never answers."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.requests = 0
        self.conns: list[object] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.requests += 1

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()  # type: ignore[attr-defined]


def build_small_library(root: Path, n_images: int) -> Path:
    """`n_images` Flickr8k dev photos copied into `root/photos` and indexed (once; reused)."""
    lib_path = root / "lib"
    if lib_path.exists():
        with Library.open(lib_path, create=False) as lib:
            if lib.status().files >= n_images:
                return lib_path
    photos = root / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for p in sorted((data_root() / "flickr8k" / "images").glob("*.jpg"))[:n_images]:
        if not (photos / p.name).exists():
            shutil.copyfile(p, photos / p.name)
    t0 = time.perf_counter()
    with Library.open(lib_path) as lib:
        lib.index(photos)
    print(f"indexed {n_images} images in {time.perf_counter() - t0:.0f} s into {lib_path}", file=sys.stderr)
    return lib_path


def upload_samples() -> list[tuple[str, bytes]]:
    """One photo per image mode, as uploads arrive: what each costs the server is the row."""
    import io
    import struct
    import zlib

    def enc(img: Image.Image, fmt: str, **kw: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    def png16(w: int, h: int, colour_type: int, channels: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        z = zlib.compressobj(6)
        data = b"".join(z.compress(b"\x00" + ((y * 9) % 65536).to_bytes(2, "big") * (w * channels))
                        for y in range(h)) + z.flush()
        head = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", data) + chunk(b"IEND", b"")

    photo = Image.open(sorted((data_root() / "flickr8k" / "images").glob("*.jpg"))[0]).convert("RGB")
    big = photo.resize((6000, 4000))
    out = [("JPEG RGB 6000×4000 (24 MP)", enc(big, "JPEG", quality=85)),
           ("PNG RGB 4000×3000 (12 MP)", enc(big.resize((4000, 3000)), "PNG", compress_level=1)),
           ("PNG RGBA 4000×3000", enc(big.resize((4000, 3000)).convert("RGBA"), "PNG", compress_level=1)),
           ("PNG 8-bit grey 7000×7000 (49 MP)", enc(big.resize((7000, 7000)).convert("L"), "PNG",
                                                     compress_level=1)),
           ("PNG 16-bit grey 7000×7000 (49 MP)", png16(7000, 7000, 0, 1)),
           ("PNG 16-bit RGB 5000×5000 (25 MP)", png16(5000, 5000, 2, 3))]
    return out


def vm_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def run_faults(args: argparse.Namespace) -> None:
    """Issue 18 rows: search while 4 LLM requests hang, and upload memory by image mode."""
    root = args.root.with_name(args.root.name + "-faults") if args.root == DEFAULT_ROOT else args.root
    lib_path = build_small_library(root, args.images)
    queries = captions("dev")
    n = args.requests
    rows: list[list[object]] = []
    config = lib_path / "config.toml"
    saved = config.read_text()
    hung = HungEndpoint()
    with Library.open(lib_path, create=False) as lib:
        lib.config.llm = f"openai:http://127.0.0.1:{hung.port}/v1#hung"
        lib.config.models.breaker_failures = 1000  # keep every pipeline request hanging for the whole run
        lib.config.models.call_deadline_s = 60.0
        lib.config.pipeline.max_seconds = 120.0
        lib.save_config()
    server = Server(lib_path, args.port)
    stop = threading.Event()
    try:
        connect = server.connect

        def http_search(con: object, q: object) -> bool:
            return server.search_ok(con, q, args.k)

        def http_status(con: object, _: object) -> bool:
            return server.get("/api/status", con)[0] == 200  # type: ignore[arg-type]

        def row(what: str, clients: int, r: dict[str, float]) -> None:
            rows.append([what, clients, int(r["n"]), r["rps"], r["p50"], r["p95"], int(r["errors"])])
            print(f"  {what}: {r['rps']:.1f} req/s, p95 {r['p95']:.1f} ms, {int(r['errors'])} errors",
                  file=sys.stderr)

        server.get(f"/api/search?q=warm+up&k={args.k}")
        row("GET /api/search (encoder), nothing hanging", args.clients,
            run_load(args.clients, queries[:n], http_search, connect))

        def hang_forever() -> None:
            body = json.dumps({"text": "a dog", "pipeline": "imagescope", "stages": [1, 2, 3], "k": 5})
            while not stop.is_set():
                c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
                try:
                    c.request("POST", "/api/search", body, {"Content-Type": "application/json"})
                    c.getresponse().read()
                except OSError:
                    pass
                finally:
                    c.close()

        hangers = [threading.Thread(target=hang_forever, daemon=True) for _ in range(4)]
        for t in hangers:
            t.start()
        deadline = time.monotonic() + 60
        while hung.requests < 2 and time.monotonic() < deadline:  # the model pool (2 slots) is held
            time.sleep(0.1)
        row("GET /api/search (encoder) while 4 LLM requests hang", args.clients,
            run_load(args.clients, queries[n: 2 * n], http_search, connect))
        row("GET /api/status while 4 LLM requests hang", 1, run_load(1, range(50), http_status, connect))
        print(f"  the hung endpoint saw {hung.requests} connections", file=sys.stderr)
        stop.set()

        mem: list[list[object]] = []
        pid = server.proc.pid
        for what, data in upload_samples():
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
            before = vm_kb(pid, "VmRSS")
            c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=300)
            body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--B--\r\n")
            t0 = time.perf_counter()
            c.request("POST", "/api/uploads", body, {"Content-Type": "multipart/form-data; boundary=B"})
            r = c.getresponse()
            answer = json.loads(r.read())
            seconds = time.perf_counter() - t0
            c.close()
            peak, after = vm_kb(pid, "VmHWM"), vm_kb(pid, "VmRSS")
            mem.append([what, f"{len(data) / 1e6:.2f}", r.status, answer.get("code", "") if r.status >= 400 else "",
                        f"{(peak - before) / 1024:.0f}", f"{(after - before) / 1024:.0f}", f"{seconds:.2f}"])
            print(f"  upload {what}: {r.status}, peak +{(peak - before) / 1024:.0f} MB", file=sys.stderr)
    finally:
        stop.set()
        server.stop()
        hung.close()
        config.write_text(saved)
    print(f"\n{args.images} images, k={args.k}, {machine()}, {os.cpu_count()} cores shared by clients and server\n")
    print(table(["what", "clients", "requests", "req/s", "p50 ms", "p95 ms", "errors"], rows))
    print()
    print(table(["upload", "MB on disk", "status", "code", "peak RSS growth MB", "RSS growth after MB", "s"], mem))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=800, help="search requests per measurement")
    ap.add_argument("--thumbs", type=int, default=800, help="distinct thumbnails per measurement")
    ap.add_argument("--k", type=int, default=24)
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--faults", action="store_true", help="only the run-time fault rows (issue 18), small library")
    args = ap.parse_args()
    if not (data_root() / "flickr8k" / "captions.jsonl").exists():
        sys.exit(f"needs the shared Flickr8k data under {data_root()} (set PICSCOPE_DATA)")
    if args.faults:
        if args.images == 10_000:
            args.images = 500
        if args.requests == 800:
            args.requests = 200
        run_faults(args)
        return
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
        connect = server.connect

        def http_search(con: object, q: object) -> bool:
            return server.search_ok(con, q, args.k)

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
