"""One behavioural suite for every vector store: exact, ann (FAISS HNSW), milvus-lite (native Milvus 2.5), and
the compact format over exact and ann (codes: float32 coarse part + int8 fine part, `picscope.store.compact`).

Every test runs against each backend through the `VectorStore` protocol; expected results come from a
brute-force numpy computation over the same vectors, never from another store.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from picscope.errors import ConfigError, StoreError
from picscope.store import VectorStore, make_store
from picscope.store.compact import VectorCodec, coarse_dim, compact
from picscope.store.meta import FileMeta, MetaFilter, SupportsMeta

DIM = 32
BACKENDS = ["exact", "ann", "milvus-lite", "compact-exact", "compact-ann"]
Factory = Callable[[Path], VectorStore]
TOLERANCE = {"compact-exact": 2e-2, "compact-ann": 2e-2}  # int8 fine codes: vectors read back approximately


def _codec(dim: int = DIM, scan_dim: int = 24) -> VectorCodec:
    """A full-rank random rotation: 24 float32 numbers + 8 int8 ones per vector."""
    rng = np.random.default_rng(42)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    arrays = {"mean": np.full(dim, 0.01, np.float32), "encode": rotation.astype(np.float32),
              "query": rotation.astype(np.float32), "scan_dim": np.array([scan_dim], np.int32),
              "fine_scale": np.full(dim - scan_dim, 0.6 / 127, np.float32), "rescore": np.array([64], np.int32),
              "coarse_norm": np.array([1.5], np.float32)}
    return VectorCodec.from_arrays(arrays, "test-codec")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _factory(name: str) -> Factory:
    if name.startswith("compact-"):
        from picscope.store.exact import ExactStore

        codec = _codec()
        lift = name == "compact-ann"  # graph stores get coarse codes lifted to one norm, as in a library
        base = _inner_factory(name.removeprefix("compact-"), coarse_dim(codec, lift))
        return lambda folder: compact(base(folder), ExactStore(folder / "fine", codec.fine_dim, np.int8), codec, lift)
    return _inner_factory(name, DIM)


def _inner_factory(name: str, dim: int) -> Factory:
    if name == "exact":
        from picscope.store.exact import ExactStore

        return lambda folder: ExactStore(folder, dim)
    if name == "ann":
        if not _has("faiss"):
            pytest.skip("faiss not installed (pip install 'picscope[ann]')")
        from picscope.store.ann import AnnOptions, AnnStore

        # exact_below=0 forces the HNSW graph even for these small sets; checkpoint often to exercise reload.
        opts = AnnOptions(exact_below=0, ef_search=128, checkpoint_rows=150)
        return lambda folder: AnnStore(folder, dim, opts)
    if not _has("pymilvus"):
        pytest.skip("pymilvus/milvus-lite not installed (pip install 'picscope[milvus]')")
    from picscope.store.milvus import MilvusOptions, MilvusStore

    return lambda folder: MilvusStore("vectors.db", folder, dim, MilvusOptions(index_type="FLAT"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def opener(backend: str) -> Factory:
    return _factory(backend)


@pytest.fixture()
def atol(backend: str) -> float:
    return TOLERANCE.get(backend, 1e-6)


@pytest.fixture()
def store(opener: Factory, tmp_path: Path) -> Iterator[VectorStore]:
    s = opener(tmp_path / "store")
    yield s
    s.close()


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute(ids: np.ndarray, vecs: np.ndarray, q: np.ndarray, k: int) -> list[list[int]]:
    scores = q @ vecs.T
    return [ids[np.argsort(-row, kind="stable")[:k]].tolist() for row in scores]


def test_insert_search_get(store: VectorStore, atol: float) -> None:
    rng = np.random.default_rng(1)
    ids = np.arange(1, 301, dtype=np.int64) * 7  # sparse, not 0..n
    vecs = unit(rng, 300)
    store.upsert(ids, vecs)
    assert len(store) == 300
    assert sorted(store.ids().tolist()) == sorted(ids.tolist())
    np.testing.assert_allclose(store.get(ids[[5, 0, 99]]), vecs[[5, 0, 99]], atol=atol)
    q = vecs[:20] + 0.05 * unit(rng, 20)
    hits = store.search(q, 5)
    want = brute(ids, vecs, q, 5)
    top1 = [int(r[0]) for r in hits.ids]
    assert top1 == [w[0] for w in want]
    overlap = np.mean([len(set(hits.ids[i].tolist()) & set(want[i])) / 5 for i in range(20)])
    assert overlap >= 0.95
    assert np.all(np.diff(hits.scores, axis=1) <= 1e-6)  # best first
    with pytest.raises(KeyError):
        store.get(np.array([3], np.int64))


def test_upsert_replaces_and_delete_removes(store: VectorStore, atol: float) -> None:
    rng = np.random.default_rng(2)
    ids = np.arange(1, 101, dtype=np.int64)
    vecs = unit(rng, 100)
    store.upsert(ids, vecs)
    new = unit(rng, 3)
    store.upsert(np.array([10, 20, 1000], np.int64), new)  # two replacements, one insert
    assert len(store) == 101
    np.testing.assert_allclose(store.get(np.array([10, 20, 1000])), new, atol=atol)
    assert store.search(new[:1], 1).ids[0, 0] == 10
    # the old vector of id 10 must not be found any more as id 10
    old_hit = store.search(vecs[9:10], 3).row(0)
    assert all(i != 10 or s < 0.999 for i, s in old_hit)
    store.delete(np.array([10, 55, 99999], np.int64))  # an unknown id is ignored
    assert len(store) == 99
    assert 10 not in store.ids().tolist() and 55 not in store.ids().tolist()
    assert 10 not in store.search(new[:1], 5).ids[0].tolist()
    with pytest.raises(KeyError):
        store.get(np.array([55]))


def test_filter_restricts_candidates(store: VectorStore) -> None:
    rng = np.random.default_rng(3)
    ids = np.arange(1, 401, dtype=np.int64)
    vecs = unit(rng, 400)
    store.upsert(ids, vecs)
    allowed = ids[ids % 4 == 0]
    q = unit(rng, 5)
    hits = store.search(q, 10, allowed_ids=allowed)
    assert set(hits.ids[hits.ids > 0].tolist()) <= set(allowed.tolist())
    want = brute(allowed, vecs[allowed - 1], q, 10)
    assert [int(r[0]) for r in hits.ids] == [w[0] for w in want]
    # fewer candidates than k: padded with id 0 / -inf
    few = store.search(q[:1], 10, allowed_ids=np.array([3, 5], np.int64))
    assert sorted(few.ids[0][:2].tolist()) == [3, 5] and few.ids[0][2:].tolist() == [0] * 8
    assert np.isneginf(few.scores[0][2:]).all()
    assert store.search(q[:1], 3, allowed_ids=np.array([], np.int64)).row(0) == []


def test_declared_metadata_filter(store: VectorStore) -> None:
    """Every store declares `supports_filter`: one that keeps metadata filters on it, one that does not refuses a
    filter (never ignores it silently); both take `upsert_with_meta` and an empty filter."""
    rng = np.random.default_rng(5)
    ids = np.arange(1, 41, dtype=np.int64)
    vecs = unit(rng, 40)
    store.upsert_with_meta(ids, vecs, [FileMeta(f"/{'a' if i % 2 == 0 else 'b'}/{i}.jpg", 0) for i in ids.tolist()])
    assert len(store) == 40
    q = unit(rng, 1)
    assert store.search(q, 5, filter=MetaFilter()).row(0) == store.search(q, 5).row(0)  # empty: no restriction
    only_a = MetaFilter(path_prefix="/a/")
    if store.supports_filter:
        got = store.search(q, 10, filter=only_a).row(0)
        assert len(got) == 10 and all(i % 2 == 0 for i, _ in got)
    else:
        with pytest.raises(StoreError, match="no file metadata"):
            store.search(q, 10, filter=only_a)


def test_drop_deletes_the_data(opener: Factory, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    s = opener(tmp_path / "store")
    s.upsert(np.arange(1, 11, dtype=np.int64), unit(rng, 10))
    s.drop()
    s.close()
    again = opener(tmp_path / "store")
    try:
        assert len(again) == 0 and again.ids().tolist() == []
    finally:
        again.close()


def test_bad_input_is_rejected_and_changes_nothing(store: VectorStore) -> None:
    rng = np.random.default_rng(4)
    store.upsert(np.array([1, 2], np.int64), unit(rng, 2))
    with pytest.raises(StoreError):
        store.upsert(np.array([3], np.int64), np.ones((1, DIM + 1), np.float32))
    with pytest.raises(StoreError):
        store.upsert(np.array([0], np.int64), unit(rng, 1))
    with pytest.raises(StoreError):
        store.upsert(np.array([4, 4], np.int64), unit(rng, 2))
    with pytest.raises(ValueError):
        store.search(np.ones(DIM + 2, np.float32), 3)
    assert sorted(store.ids().tolist()) == [1, 2]


def test_reopen_keeps_everything(opener: Factory, tmp_path: Path, atol: float) -> None:
    rng = np.random.default_rng(5)
    folder = tmp_path / "store"
    ids = np.arange(1, 251, dtype=np.int64)
    vecs = unit(rng, 250)
    s = opener(folder)
    s.upsert(ids[:200], vecs[:200])
    s.upsert(ids[200:], vecs[200:])
    s.delete(np.array([7], np.int64))
    s.upsert(np.array([8], np.int64), vecs[:1])
    s.close()
    s = opener(folder)
    try:
        assert len(s) == 249
        assert 7 not in s.ids().tolist()
        np.testing.assert_allclose(s.get(np.array([8, 250])), vecs[[0, 249]], atol=atol)
        hit = s.search(vecs[100:101], 1).row(0)
        assert hit[0][0] == 101
    finally:
        s.close()


def test_concurrent_readers_during_writes(store: VectorStore) -> None:
    rng = np.random.default_rng(6)
    ids = np.arange(1, 201, dtype=np.int64)
    vecs = unit(rng, 200)
    store.upsert(ids, vecs)
    errors: list[BaseException] = []
    found: list[int] = []

    def reader(seed: int) -> None:
        try:
            for j in range(15):
                i = (seed * 37 + j * 11) % 200
                found.append(int(store.search(vecs[i : i + 1], 1).ids[0, 0] == ids[i]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    extra = unit(rng, 50)
    for b in range(5):  # a writer adds rows meanwhile (ids beyond the ones being read)
        store.upsert(np.arange(1000 + 10 * b, 1010 + 10 * b, dtype=np.int64), extra[10 * b : 10 * b + 10])
    for t in threads:
        t.join()
    assert not errors
    assert len(found) == 60 and sum(found) == 60
    assert len(store) == 250


def test_make_store_specs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make_store("nosuch", tmp_path / "s", DIM)
    with pytest.raises(ConfigError):
        make_store("ann:weird", tmp_path / "s", DIM)
    if _has("faiss"):
        (tmp_path / "config.toml").write_text("[ann]\nM = 8\nef_search = 16\n")
        s = make_store("ann", tmp_path / "store", DIM)
        try:
            assert s.options.M == 8 and s.options.ef_search == 16  # type: ignore[attr-defined]
        finally:
            s.close()
        (tmp_path / "config.toml").write_text("[ann]\nM = 1\n")
        with pytest.raises(ConfigError, match=r"\[ann\]"):
            make_store("ann", tmp_path / "store", DIM)


def test_ann_recovers_from_torn_writes_and_lost_checkpoint(tmp_path: Path) -> None:
    if not _has("faiss"):
        pytest.skip("faiss not installed")
    from picscope.store.ann import AnnOptions, AnnStore

    rng = np.random.default_rng(7)
    folder = tmp_path / "store"
    opts = AnnOptions(exact_below=0, checkpoint_rows=10_000)
    vecs = unit(rng, 120)
    s = AnnStore(folder, DIM, opts)
    s.upsert(np.arange(1, 101, dtype=np.int64), vecs[:100])
    s.close()  # checkpoint covers 100 rows
    s = AnnStore(folder, DIM, opts)
    s.upsert(np.arange(101, 121, dtype=np.int64), vecs[100:])
    # simulate a kill: no close (no checkpoint), plus a torn append of half a row and a duplicate live id
    with open(folder / "ann.f32", "ab") as fh:
        fh.write(vecs[5].tobytes())
    with open(folder / "ann.ids", "ab") as fh:
        fh.write(np.array([6], np.int64).tobytes())  # row 120 = a new vector for id 6, old row still live
    with open(folder / "ann.f32", "ab") as fh:
        fh.write(b"\0" * 10)
    del s
    s = AnnStore(folder, DIM, opts)
    try:
        assert len(s) == 120
        np.testing.assert_allclose(s.get(np.array([6])), vecs[5:6], atol=1e-6)  # newest row wins
        assert s.search(vecs[110:111], 1).ids[0, 0] == 111  # rows after the checkpoint are searchable
    finally:
        s.close()
    (folder / "ann.faiss").write_bytes(b"garbage")
    s = AnnStore(folder, DIM, opts)  # a damaged checkpoint: rebuilt from the vector log
    try:
        assert s.search(vecs[50:51], 1).ids[0, 0] == 51
    finally:
        s.close()


# -- Milvus-specific: metadata filters on the server, unreachable server, Lite file rules -----------------


def _milvus_store(folder: Path) -> VectorStore:
    return _factory("milvus-lite")(folder)


def test_milvus_server_side_metadata_filter(tmp_path: Path) -> None:
    s = _milvus_store(tmp_path / "store")
    try:
        assert isinstance(s, SupportsMeta)
        rng = np.random.default_rng(8)
        vecs = unit(rng, 60)
        ids = np.arange(1, 61, dtype=np.int64)
        day = 86_400 * 1_000_000_000
        metas = [
            FileMeta(
                f"/photos/{'my_trip' if i % 3 == 0 else 'myxtrip' if i % 3 == 1 else 'home'}/{i}.jpg",
                (1_600_000_000 * 1_000_000_000) + i * day,
            )
            for i in range(60)
        ]
        s.upsert_with_meta(ids, vecs, metas)
        q = unit(rng, 2)
        for flt in [
            MetaFilter(path_prefix="/photos/my_trip/"),  # `_` must be literal, not a wildcard
            MetaFilter(modified_after=1_600_000_000 + 10 * 86_400, modified_before=1_600_000_000 + 30 * 86_400),
            MetaFilter(path_prefix="/photos/home/", modified_after=1_600_000_000 + 20 * 86_400),
        ]:
            keep = np.array([m for m, meta in zip(ids, metas, strict=True) if flt.matches(meta)])
            assert 0 < len(keep) < 60
            hits = s.search(q, 5, filter=flt)  # type: ignore[call-arg]
            assert [int(r[0]) for r in hits.ids] == [w[0] for w in brute(keep, vecs[keep - 1], q, 5)]
            assert set(hits.ids[hits.ids > 0].tolist()) <= set(keep.tolist())
        # a vector-only upsert keeps the stored metadata
        s.upsert(np.array([1], np.int64), vecs[1:2])
        assert s.get_meta(np.array([1])) == {1: metas[0]}
    finally:
        s.close()


def test_milvus_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    if not _has("pymilvus"):
        pytest.skip("pymilvus not installed")
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "config.toml").write_text("[milvus]\ntimeout = 1.0\nretries = 1\nbackoff = 0.1\n")
    with pytest.raises(StoreError, match=r"cannot reach Milvus server http://127\.0\.0\.1:\d+.*Nothing was changed"):
        make_store(f"milvus:http://127.0.0.1:{port}", tmp_path / "store", DIM)
    assert not (tmp_path / "store" / "milvus.json").exists()


def test_milvus_lite_rules(tmp_path: Path) -> None:
    if not _has("pymilvus"):
        pytest.skip("pymilvus not installed")
    from picscope.store.milvus import MilvusOptions, MilvusStore

    with pytest.raises(ConfigError, match="Lite supports"):
        MilvusStore("x.db", tmp_path / "s", DIM, MilvusOptions(index_type="HNSW"))
    with pytest.raises(ConfigError, match=r"\.db"):
        MilvusStore("x.sqlite", tmp_path / "s", DIM)
    s = MilvusStore("x.db", tmp_path / "s", DIM, MilvusOptions(index_type="IVF_FLAT", nlist=4, nprobe=4))
    s.upsert(np.array([1, 2], np.int64), unit(np.random.default_rng(9), 2))
    s.close()
    with pytest.raises(StoreError, match=r"32-d vectors; this library needs 16-d"):
        MilvusStore("x.db", tmp_path / "s", 16)  # the collection holds 32-d vectors
    shutil.rmtree(tmp_path / "s")


def test_milvus_lite_file_held_by_another_process(tmp_path: Path) -> None:
    if not _has("pymilvus"):
        pytest.skip("pymilvus not installed")
    import subprocess
    import sys

    from picscope.store.milvus import MilvusStore

    folder = tmp_path / "store"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from picscope.store.milvus import MilvusStore; "
            f"s = MilvusStore('held.db', Path({str(folder)!r}), {DIM}); print('ready', flush=True); "
            "sys.stdin.read(); s.close()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="in use by another process"):
            MilvusStore("held.db", folder, DIM)
    finally:
        holder.communicate("", timeout=30)
    s = MilvusStore("held.db", folder, DIM)  # free again once the other process closed it
    try:
        assert len(s) == 0
    finally:
        s.close()
