"""Encode images on a Ray cluster (or a local Ray instance): Ray Data `map_batches` with an actor pool.

Each actor builds the encoder once (`make_encoder(spec)`), then for each batch of paths/URIs reads
the bytes (local files, or any URI pyarrow can open: `s3://`, `gs://`, `hdfs://`, ...), decodes
with picscope's guarded decoder, and encodes. One bad file becomes a row with an `error`, never a
failed job. Output: Parquet shards (`path, size, mtime_ns, hash, width, height, vector, error`) and
`manifest.json` (encoder spec, encoder name, dim) in `out_dir`, for `ingest_vectors`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from picscope.errors import ConfigError, PicscopeError

MANIFEST = "manifest.json"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif"}


@dataclass
class EmbedSummary:
    out_dir: str
    encoder: str
    encoder_name: str
    dim: int
    files: int
    encoded: int
    failed: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def list_inputs(sources: Iterable[str]) -> list[str]:
    """Image paths from folders (recursive, local), `@list.txt` files (one path/URI a line), or paths/URIs."""
    out: list[str] = []
    for src in sources:
        if src.startswith("@"):
            lines = Path(src[1:]).read_text(encoding="utf-8").splitlines()
            out.extend(line.strip() for line in lines if line.strip() and not line.startswith("#"))
        elif is_uri(src):
            out.append(src)
        elif os.path.isdir(src):
            for root, dirs, files in os.walk(src):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(
                    os.path.abspath(os.path.join(root, f))
                    for f in sorted(files)
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
                )
        elif os.path.exists(src):
            out.append(os.path.abspath(src))
        else:
            raise PicscopeError(f"no such file or folder: {src}")
    return out


def _read(path: str) -> tuple[bytes, int]:
    """(bytes, mtime_ns) of a local file or a URI (mtime 0 when the filesystem has none)."""
    if is_uri(path):
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(path)
        info = filesystem.get_file_info(inner)
        with filesystem.open_input_stream(inner) as fh:
            data = fh.read()
        mtime = info.mtime_ns if info.mtime_ns is not None else 0
        return bytes(data), int(mtime)
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        return fh.read(), int(st.st_mtime_ns)


class EmbedActor:
    """One encoder per Ray actor; `__call__` maps a batch of `path` rows to vectors."""

    def __init__(self, encoder_spec: str, max_pixels: int = 100_000_000) -> None:
        from picscope.encoders import make_encoder

        self.encoder = make_encoder(encoder_spec)
        self.max_pixels = max_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from picscope.imageio import decode_image

        paths = [str(p) for p in batch["path"]]
        n = len(paths)
        size = np.zeros(n, np.int64)
        mtime = np.zeros(n, np.int64)
        width = np.zeros(n, np.int64)
        height = np.zeros(n, np.int64)
        hashes = [""] * n
        errors = [""] * n
        prepared: list[Any] = []
        ok: list[int] = []
        for i, p in enumerate(paths):
            try:
                data, mtime[i] = _read(p)
                size[i] = len(data)
                hashes[i] = hashlib.blake2b(data, digest_size=16).hexdigest()  # = the indexer's content hash
                img = decode_image(data, max_pixels=self.max_pixels, target_size=self.encoder.image_size)
                width[i], height[i] = img.info.get("original_size", img.size)
                prepared.append(self.encoder.prepare_image(img))
                ok.append(i)
            except (OSError, PicscopeError) as exc:
                errors[i] = str(exc) or type(exc).__name__
            except Exception as exc:  # an exotic file must not stop the job
                errors[i] = f"{type(exc).__name__}: {exc}"
        vectors = np.zeros((n, self.encoder.dim), np.float32)
        if prepared:
            vectors[ok] = self.encoder.embed_prepared(prepared)
        return {
            "path": np.array(paths, dtype=object),
            "size": size,
            "mtime_ns": mtime,
            "hash": np.array(hashes, dtype=object),
            "width": width,
            "height": height,
            "vector": vectors,
            "error": np.array(errors, dtype=object),
        }


def embed_with_ray(
    inputs: Sequence[str],
    encoder_spec: str,
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    address: str | None = None,
    object_store_mb: int | None = None,
) -> EmbedSummary:
    """Encode `inputs` on Ray (`address=None`: a local instance; `"auto"` or `ray://host:10001`: a cluster)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError("distributed embedding needs Ray: pip install 'picscope[distributed]'") from exc
    from picscope.encoders import make_encoder

    if not inputs:
        raise PicscopeError("no images to embed")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise PicscopeError(f"output folder {out} is not empty; pick a new one (nothing was written)")
    probe = make_encoder(encoder_spec)  # fail early on a bad spec, and record the exact weights' name
    started = time.perf_counter()
    env = {"PICSCOPE_THREADS": os.environ.get("PICSCOPE_THREADS", str(max(1, int(cpus_per_actor))))}
    ray.init(runtime_env={"env_vars": env}, **_ray_init_args(address, actors, cpus_per_actor, object_store_mb))
    encoded = ray.data.from_items([{"path": p} for p in inputs]).map_batches(
        EmbedActor,
        fn_constructor_kwargs={"encoder_spec": encoder_spec},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )
    out.mkdir(parents=True, exist_ok=True)
    encoded.write_parquet(str(out))
    errors = read_shards(out, columns=["error"]).column("error").to_pylist()
    failed = sum(1 for e in errors if e)
    summary = EmbedSummary(
        out_dir=str(out),
        encoder=encoder_spec,
        encoder_name=probe.name,
        dim=probe.dim,
        files=len(errors),
        encoded=len(errors) - failed,
        failed=failed,
        seconds=time.perf_counter() - started,
    )
    (out / MANIFEST).write_text(json.dumps(summary.to_dict(), indent=1))
    return summary


def _ray_init_args(address: str | None, actors: int, cpus_per_actor: float,
                   object_store_mb: int | None) -> dict[str, Any]:
    """`ray.init` arguments: join a cluster at `address`, or size a local instance for the actor pool."""
    init: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
    if address:
        init["address"] = address
    else:
        init["num_cpus"] = max(1, int(np.ceil(actors * cpus_per_actor)))
        if object_store_mb:
            init["object_store_memory"] = object_store_mb * 1024 * 1024
    return init


def read_shards(folder: Path, columns: list[str] | None = None) -> Any:
    """The Parquet shards that `embed_with_ray` wrote in `folder`, as one pyarrow table (pyarrow errors pass)."""
    import pyarrow.dataset as pads

    shards = sorted(str(p) for p in folder.glob("*.parquet"))
    return pads.dataset(shards, format="parquet").to_table(columns=columns)
