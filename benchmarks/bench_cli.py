"""Whole-process CLI latency: what a user (or a shell script) waits for, against an import floor in the same run.

    python benchmarks/bench_cli.py [--repeat 7] [--library PATH] [--query TEXT] [--image FILE] [--first-repeat 3]
                                   [--compare SRC]

Each command runs as a new process started as the installed `picscope` script starts it (`LAUNCH`; bytecode caching
on, as after an install), N times, round-robin (so a change in machine load
hits every command alike); the table gives p50/p95 wall seconds and the ratio to the floor,
`python -c "import numpy, onnxruntime"`. Commands: `--help`, `status`, `search TEXT`, `search --image FILE` on a
library (default: the demo photos, indexed once before timing; `--library` for a bigger one), and the README's
first command (`demo` → `index` → `search`) on a fresh folder and library, with the model cache already built
("after setup") and, `--cold-cache`, with an empty one (the very first run on a machine). `--compare SRC` also
times each command with another checkout's `src` folder (e.g. `/work/main/src`), in the same rounds: a before/after
that the machine's load moves alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, percentiles, table

# What the `picscope` console script runs (pip writes it), with `main` for a checkout from before `entry` existed.
LAUNCH = "import sys; from picscope import cli; sys.argv[0] = 'picscope'; sys.exit(getattr(cli, 'entry', cli.main)())"


def _env(extra: dict[str, str] | None = None, src: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    src = src or str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules load from .pyc (written by the warm-up run)
    env.update(extra or {})
    return env


def _timed(cmd: list[str] | str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, shell=isinstance(cmd, str), capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {cmd}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs per command (default 7)")
    ap.add_argument("--library", type=Path, help="an indexed library (default: the demo photos, indexed here)")
    ap.add_argument("--query", default="a tabby cat")
    ap.add_argument("--image", type=Path, help="query photo for --image (default: a mirrored demo photo)")
    ap.add_argument("--first-repeat", type=int, default=3, help="runs of the README's first command (0: skip)")
    ap.add_argument("--cold-cache", action="store_true", help="also time the first command with an empty cache")
    ap.add_argument("--compare", type=Path, metavar="SRC", help="also time each command with this src folder")
    args = ap.parse_args()

    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = _env()
    try:
        demo = tmp / "demo"
        subprocess.run([py, "-m", "picscope", "demo", str(demo)], env=env, check=True, capture_output=True)
        library = args.library
        if library is None:
            library = tmp / "demo-lib"
            subprocess.run([py, "-m", "picscope", "index", str(demo), "--library", str(library), "--quiet"],
                           env=env, check=True, capture_output=True)
        image = args.image
        if image is None:  # a photo that is not in the library, so the image tower runs
            from PIL import Image, ImageOps

            image = tmp / "query.jpg"
            ImageOps.mirror(Image.open(demo / "cat.jpg").convert("RGB")).save(image, quality=90)
        lib = ["--library", str(library)]
        commands: dict[str, list[str] | str] = {
            'floor: python -c "import numpy, onnxruntime"': [py, "-c", "import numpy, onnxruntime"],
            "picscope --help": [py, "-c", LAUNCH, "--help"],
            "picscope status": [py, "-c", LAUNCH, "status", *lib],
            f"picscope search {args.query!r}": [py, "-c", LAUNCH, "search", args.query, *lib],
            "picscope search --image FILE": [py, "-c", LAUNCH, "search", "--image", str(image), *lib],
        }
        envs = {name: env for name in commands}
        if args.compare is not None:
            other = _env(src=str(args.compare.resolve()))
            for name, cmd in list(commands.items())[1:]:
                commands[f"{name} [{args.compare}]"] = cmd
                envs[f"{name} [{args.compare}]"] = other
        for name, cmd in commands.items():  # one untimed run each: page cache and .pyc files warm
            _timed(cmd, envs[name])
        samples: dict[str, list[float]] = {name: [] for name in commands}
        load_before = machine()
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                samples[name].append(_timed(cmd, envs[name]))

        first: dict[str, list[float]] = {}
        variants = [("README first command (model cache built)", {})]
        if args.cold_cache:
            variants.append(("README first command (empty model cache)", {"PICSCOPE_CACHE": ""}))
        for label, extra in variants:
            if args.first_repeat <= 0:
                break
            first[label] = []
            for i in range(args.first_repeat):
                run = tmp / f"first-{len(first)}-{i}"
                run_env = _env({"PICSCOPE_LIBRARY": str(run / "lib")})
                if "PICSCOPE_CACHE" in extra:
                    run_env["PICSCOPE_CACHE"] = str(run / "cache")
                line = (f"{py} -m picscope demo {run / 'photos'} && {py} -m picscope index {run / 'photos'} && "
                        f"{py} -m picscope search 'a tabby cat'")
                first[label].append(_timed(line, run_env))

        floor = percentiles(next(iter(samples.values())))[0]
        rows = []
        for name, values in {**samples, **first}.items():
            p50, p95 = percentiles(values)
            rows.append([name, len(values), p50, p95, f"{p50 / floor:.2f}×"])
        print(f"library: {library}; {load_before} before, {machine()} after")
        print(table(["command", "runs", "p50 s", "p95 s", "p50 / floor"], rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
