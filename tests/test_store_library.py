"""Stores inside a real library (demo photos, `labels` encoder): exact vs Milvus FLAT, sync-index, ingest, Ray."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from picscope import Library
from picscope.cli import main
from picscope.errors import EncoderMismatchError, StoreError

ENC = "labels"
QUERIES = ["a cup of coffee", "a tabby cat", "a rocket launch", "an astronaut", "a brick wall", "a horse"]

needs_milvus = pytest.mark.skipif(importlib.util.find_spec("pymilvus") is None, reason="pip install 'picscope[milvus]'")
needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="pip install 'picscope[ann]'")


@pytest.fixture()
def photos(tmp_path: Path, demo_folder: Path) -> Path:
    folder = tmp_path / "photos"
    shutil.copytree(demo_folder, folder)
    (folder / "sub_dir").mkdir()  # an underscore: must not act as a wildcard in server-side filters
    for name in ("coffee.jpg", "cat.jpg"):  # variants, not copies: no exact score ties
        flipped(folder / name, folder / "sub_dir" / f"flipped-{name}")
    (folder / "subxdir").mkdir()
    flipped(folder / "rocket.jpg", folder / "subxdir" / "rocket2.jpg")
    return folder


def flipped(src: Path, dst: Path) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dst)


def results(lib: Library, **kw: object) -> list[list[tuple[str, float]]]:
    return [[(r.path, r.score) for r in lib.search(q, k=6, **kw)] for q in QUERIES]  # type: ignore[arg-type]


def assert_same(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert [p for p, _ in ra] == [p for p, _ in rb]
        np.testing.assert_allclose([s for _, s in ra], [s for _, s in rb], atol=1e-5)


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def catalog_rows(lib_path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(lib_path / "catalog.sqlite") as db:
        return db.execute("SELECT id, path, status, mtime_ns FROM files ORDER BY id").fetchall()


@needs_milvus
def test_exact_and_milvus_flat_give_the_same_results(photos: Path, tmp_path: Path) -> None:
    with (
        Library.open(tmp_path / "exact", encoder=ENC) as a,
        Library.open(tmp_path / "mv", encoder=ENC, store="milvus:") as b,
    ):
        ra, rb = a.index(photos), b.index(photos)
        assert ra.added == rb.added > 15
        assert len(b.store) == ra.added and b.status().store == "milvus:"
        assert_same(results(a), results(b))
        # path filter: catalog allowed_ids (exact) vs a server-side range expression (Milvus)
        prefix = str(photos / "sub_dir")
        fa, fb = results(a, path_prefix=prefix), results(b, path_prefix=prefix)
        assert_same(fa, fb)
        assert all(p.startswith(prefix) for row in fb for p, _ in row) and len(fb[0]) == 2
        # incremental changes reach Milvus: delete a file, rename one (vector reused, new path stored)
        (photos / "rocket.jpg").unlink()
        (photos / "cat.jpg").rename(photos / "sub_dir" / "moved-cat.jpg")
        a.index(photos), b.index(photos)
        assert_same(results(a), results(b))
        assert_same(results(a, path_prefix=prefix), results(b, path_prefix=prefix))
        assert len(results(b, path_prefix=prefix)[0]) == 3


@needs_milvus
def test_status_shows_store_and_rebuild_drops_the_collection(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib_path = tmp_path / "lib"
    assert main(["index", str(photos), "--library", str(lib_path), "--encoder", ENC, "--store", "milvus:", "-q"]) == 0
    capsys.readouterr()
    assert main(["status", "--library", str(lib_path), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["store"] == "milvus:" and st["vectors"] == st["files"] > 15
    assert main(["index", str(photos), "--library", str(lib_path), "--rebuild", "-q"]) == 0
    capsys.readouterr()
    assert main(["status", "--library", str(lib_path), "--json"]) == 0
    st2 = json.loads(capsys.readouterr().out)
    assert st2["vectors"] == st2["files"] == st["files"]


@needs_milvus
@needs_faiss
def test_sync_index_moves_between_backends_and_keeps_results(photos: Path, tmp_path: Path) -> None:
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, encoder=ENC) as lib:
        lib.index(photos)
        before = results(lib)
        n = len(lib.store)
    for spec in ["milvus:vectors.db", "ann", "exact"]:
        assert main(["sync-index", "--library", str(lib_path), "--store", spec]) == 0
        with Library.open(lib_path) as lib:
            assert lib.status().store == spec
            assert len(lib.store) == n
            assert_same(results(lib), before)
    # the old stores' data is gone (exact files are back, ann and the Lite file removed)
    names = sorted(p.name for p in (lib_path / "store").iterdir())
    assert names == ["vectors.f32", "vectors.ids"]


@needs_milvus
def test_sync_index_repairs_a_store_that_disagrees_with_the_catalog(photos: Path, tmp_path: Path) -> None:
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, encoder=ENC, store="milvus:") as lib:
        lib.index(photos)
        expected = results(lib)
        ids = sorted(lib.store.ids().tolist())
        # a crash left: two vectors missing, one orphan vector, one stale path in Milvus
        lib.store.delete(np.array(ids[:2], np.int64))
        lib.store.upsert(np.array([99_999], np.int64), lib.store.get(np.array([ids[5]])))
        store = lib.store
        from picscope.store.meta import FileMeta

        store.upsert_with_meta(np.array([ids[6]]), store.get(np.array([ids[6]])), [FileMeta("/elsewhere/x.jpg", 0)])  # type: ignore[attr-defined]
    assert main(["sync-index", "--library", str(lib_path)]) == 0
    with Library.open(lib_path) as lib:
        assert sorted(lib.store.ids().tolist()) == ids
        assert lib.store.get_meta(np.array([ids[6]]))[ids[6]].path == lib.catalog.get(ids[6]).path  # type: ignore[attr-defined,union-attr]
        assert_same(results(lib), expected)


@needs_milvus
def test_unreachable_milvus_is_a_clear_error_and_changes_nothing(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, encoder=ENC) as lib:
        lib.index(photos)
        before = results(lib)
    rows = catalog_rows(lib_path)
    cfg = (lib_path / "config.toml").read_text()
    (lib_path / "config.toml").write_text(cfg + "\n[milvus]\ntimeout = 1.0\nretries = 1\nbackoff = 0.1\n")
    uri = f"http://127.0.0.1:{dead_port()}"
    assert main(["sync-index", "--library", str(lib_path), "--store", f"milvus:{uri}"]) == 2
    assert f"cannot reach Milvus server {uri}" in capsys.readouterr().err
    with Library.open(lib_path) as lib:
        assert lib.status().store == "exact"
        assert_same(results(lib), before)
    assert catalog_rows(lib_path) == rows
    # a library that lives on that server: indexing fails before touching the catalog
    lib2 = tmp_path / "lib2"
    lib2.mkdir()
    (lib2 / "config.toml").write_text(
        f'encoder = "{ENC}"\nstore = "milvus:{uri}"\n\n[milvus]\ntimeout = 1.0\nretries = 0\n'
    )
    with Library.open(lib2) as lib, pytest.raises(StoreError, match="Nothing was changed"):
        lib.index(photos)
    assert catalog_rows(lib2) == []


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pip install 'picscope[distributed]'")
def test_ingest_of_precomputed_vectors_matches_indexing(photos: Path, tmp_path: Path) -> None:
    """The per-batch work the Ray actors do, run in-process; ingest gives the same library as `index`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from picscope.distributed import ingest_vectors, list_inputs
    from picscope.distributed.ray_embed import MANIFEST, EmbedActor

    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    paths = list_inputs([str(photos)])
    actor = EmbedActor(ENC)
    out = tmp_path / "emb"
    out.mkdir()
    for i in range(0, len(paths), 7):
        batch = actor({"path": np.array(paths[i : i + 7], dtype=object)})
        cols = {k: (list(v) if k == "vector" else v.tolist()) for k, v in batch.items()}
        pq.write_table(pa.table(cols), out / f"part-{i}.parquet")
    meta = {"encoder": ENC, "encoder_name": actor.encoder.name, "dim": actor.encoder.dim}
    (out / MANIFEST).write_text(json.dumps(meta))
    with Library.open(tmp_path / "other", encoder="hf:nonexistent-model") as wrong:
        with pytest.raises(EncoderMismatchError):
            ingest_vectors(wrong, out)
        assert wrong.catalog.counts()["ok"] == 0
    with Library.open(tmp_path / "ingested", encoder=ENC) as a, Library.open(tmp_path / "indexed", encoder=ENC) as b:
        rep = ingest_vectors(a, out)
        assert rep.added == len(paths) - 1 and rep.failed == 1 and rep.problems[0][0].endswith("broken.jpg")
        assert ingest_vectors(a, out).added == rep.added  # idempotent: same rows, same ids
        assert a.catalog.counts()["ok"] == rep.added
        again = a.index(photos)  # sizes and mtimes were recorded: nothing is re-encoded
        assert again.encoded == 0 and again.unchanged == again.scanned - again.skipped - 1  # skipped: a .txt
        b.index(photos)
        assert_same(results(a), results(b))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="pip install 'picscope[distributed]'")
def test_ray_data_actor_pool_embeds_and_ingests(photos: Path, tmp_path: Path) -> None:
    import ray

    from picscope.distributed import embed_with_ray, ingest_vectors, list_inputs

    try:
        summary = embed_with_ray(
            list_inputs([str(photos)]), ENC, tmp_path / "emb", batch_size=4, actors=2, object_store_mb=256
        )
    finally:
        ray.shutdown()
    assert summary.files == summary.encoded > 15 and summary.failed == 0
    with Library.open(tmp_path / "a", encoder=ENC) as a, Library.open(tmp_path / "b", encoder=ENC) as b:
        assert ingest_vectors(a, tmp_path / "emb").added == summary.encoded
        b.index(photos)
        assert_same(results(a), results(b))


def test_cli_bad_input_changes_nothing(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, encoder=ENC) as lib:
        lib.index(photos)
    rows = catalog_rows(lib_path)
    assert main(["sync-index", "--library", str(lib_path), "--store", "nosuch:thing"]) == 2
    assert "unknown store spec" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["ingest-vectors", str(tmp_path / "empty"), "--library", str(lib_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err
    assert main(["sync-index", "--library", str(tmp_path / "nolib")]) == 2
    assert catalog_rows(lib_path) == rows
    with Library.open(lib_path) as lib:
        assert lib.status().store == "exact" and len(lib.store) == len(rows)
