"""Compact stored vectors: the codec's algebra, its fit, and libraries in the compact format (new, migrated, read as
before, damaged). The store contract for compact stores is in test_store_backends.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from picscope import Library
from picscope.encoders.bundled import VERSION, WEIGHTS_DIR
from picscope.errors import LibraryError, StoreError
from picscope.store.compact import CODEC_FILE, FULL, VectorCodec
from picscope.training.codec import CodecRecipe, fit_codec, score_full, top_agreement

SHIPPED = WEIGHTS_DIR / f"{VERSION}-codec.npz"
needs_codec = pytest.mark.skipif(not SHIPPED.exists(), reason=f"{SHIPPED.name} is not shipped")


def _low_rank(rng: np.random.Generator, n: int, dim: int, rank: int, basis: np.ndarray) -> np.ndarray:
    x = rng.normal(size=(n, rank)) @ basis + 0.01 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_fit_keeps_rankings_of_low_rank_data_and_reads_back() -> None:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(24, 96))
    images, texts = _low_rank(rng, 3000, 96, 24, basis), _low_rank(rng, 2000, 96, 24, basis)
    codec = fit_codec(images, texts, CodecRecipe(scan_dim=16, fine_dim=16, rescore=200), "synthetic")
    assert (codec.scan_dim, codec.fine_dim, codec.bytes_per_vector) == (16, 16, 16 * 4 + 16)
    np.testing.assert_allclose(codec.encode_matrix @ codec.decode_matrix, np.eye(32), atol=1e-4)  # A D = I
    held_img, held_txt = _low_rank(rng, 1000, 96, 24, basis), _low_rank(rng, 200, 96, 24, basis)
    exact = held_txt @ held_img.T
    approx = score_full(codec, held_txt, held_img)
    assert top_agreement(exact, approx) >= 0.95
    assert top_agreement(exact, score_full(codec, held_txt, held_img, rescore=0)) >= 0.99  # fine part everywhere
    coarse_only = held_txt @ codec.query_matrix[:16].T @ ((held_img - codec.mean) @ codec.encode_matrix[:16].T).T
    assert top_agreement(exact, coarse_only) < top_agreement(exact, approx)  # the re-score is what makes it exact
    # scores stay on the cosine scale (the mean term), not just in the same order
    top = np.argmax(exact, axis=1)
    assert np.abs(approx[np.arange(200), top] - exact[np.arange(200), top]).max() < 0.02
    coarse, fine = codec.encode(held_img[:5])
    assert coarse.dtype == np.float32 and fine.dtype == np.int8
    np.testing.assert_allclose(codec.decode(coarse, fine), held_img[:5], atol=0.03)


def test_codec_file_round_trip_pins_its_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(8, 40))
    codec = fit_codec(_low_rank(rng, 500, 40, 8, basis), _low_rank(rng, 500, 40, 8, basis),
                      CodecRecipe(scan_dim=6, fine_dim=6), "tiny")
    path = tmp_path / "c.npz"
    codec.save(path, matrix_bits=16, split=True)
    assert [p.name for p in VectorCodec.files(path)] == ["c.npz", "c.query.npz"]
    loaded = VectorCodec.load(path)
    assert loaded.name.startswith("tiny@") and len(loaded.name.split("@")[1]) == 12
    x = _low_rank(rng, 3, 40, 8, basis)
    assert np.abs(loaded.encode(x)[0] - codec.encode(x)[0]).max() < 1e-2  # float16 matrices
    # the same numbers written uncompressed (a library's copy) have the same name; other numbers another one
    copy = tmp_path / "copy.npz"
    loaded.save(copy, matrix_bits=16, split=True, compress=False)
    assert VectorCodec.load(copy).name == loaded.name
    other = VectorCodec.from_arrays({**loaded.arrays(16), "rescore": np.array([7], np.int32)})
    other.save(tmp_path / "o.npz", matrix_bits=16, split=True)
    assert VectorCodec.load(tmp_path / "o.npz").name != loaded.name
    with open(tmp_path / "c.query.npz", "r+b") as fh:  # a damaged file is a clear error
        fh.seek(100)
        fh.write(b"garbage" * 20)
    with pytest.raises(StoreError):
        VectorCodec.load(path)


def test_split_files_stay_small_and_older_layouts_read_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    images, texts = _spectrum_data(rng, 3000), _spectrum_data(rng, 2000)
    codec = fit_codec(images, texts, CodecRecipe(scan_dim=8, rescore=300, fine_segments=((16, 8), (16, 4), (32, 2))),
                      "split")
    path = tmp_path / "s.npz"
    written = codec.save(path, matrix_bits=16, split=True, int8_from=8 + 16)
    assert sorted(p.name for p in written) == ["s.encode_q.npz", "s.npz", "s.query.npz", "s.query_q.npz"]
    assert sorted(VectorCodec.files(path)) == sorted(written)
    name = VectorCodec.load(path).name
    # the layout of earlier rounds (int8 rows next to the float rows, two files) is the same codec
    arrays = {}
    for part in written:
        arrays.update(dict(np.load(part)))
        part.unlink()
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if not k.startswith("query")})
    np.savez_compressed(tmp_path / "s.query.npz", **{k: v for k, v in arrays.items() if k.startswith("query")})
    assert [p.name for p in VectorCodec.files(path)] == ["s.npz", "s.query.npz"]
    old = VectorCodec.load(path)
    assert old.name == name
    old.save(path, matrix_bits=16, split=False)  # one file again: the side files go
    assert VectorCodec.files(path) == [path] and VectorCodec.load(path).name == name


@needs_codec
def test_each_shipped_codec_file_is_under_5_mb() -> None:
    files = VectorCodec.files(SHIPPED)
    assert len(files) == 4 and all(f.stat().st_size < 5 * 2**20 for f in files)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_fine_codes_pack_and_unpack_exactly(bits: int) -> None:
    from picscope.store.compact import pack_bits, unpack_bits

    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=(7, 64), dtype=np.uint8)
    packed = pack_bits(codes, bits)
    assert packed.shape == (7, 64 * bits // 8)
    np.testing.assert_array_equal(unpack_bits(packed, bits, 64), codes)


def _spectrum_data(rng: np.random.Generator, n: int, dim: int = 96) -> np.ndarray:
    """Vectors whose variance decays over many directions (as the bundled encoder's do), so that the numbers a codec
    drops still carry some of every ranking."""
    x = rng.normal(size=(n, dim)) * np.geomspace(1.0, 0.01, dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_format_2_spends_the_same_bytes_better_and_round_trips(tmp_path: Path) -> None:
    """Codec format 2 (8/4/2-bit segments) against format 1 (int8) at the same bytes per photo: more numbers kept,
    closer scores, at least the same top-10 agreement; its file keeps the segments and is pinned by its name."""
    rng = np.random.default_rng(5)
    images, texts = _spectrum_data(rng, 4000), _spectrum_data(rng, 3000)
    one = fit_codec(images, texts, CodecRecipe(scan_dim=8, fine_dim=32, rescore=400), "one")
    two = fit_codec(images, texts, CodecRecipe(scan_dim=8, rescore=400, fine_segments=((16, 8), (16, 4), (32, 2))),
                    "two")
    assert (one.format, two.format) == (1, 2)
    assert one.bytes_per_vector == two.bytes_per_vector == 8 * 4 + 32
    assert (one.fine_count, two.fine_count, two.fine_dim) == (32, 64, 32)
    held_img, held_txt = _spectrum_data(rng, 2000), _spectrum_data(rng, 300)
    exact = held_txt @ held_img.T
    err = {c.format: np.abs(score_full(c, held_txt, held_img, rescore=0) - exact).mean() for c in (one, two)}
    assert err[2] < 0.8 * err[1]
    agree = {c.format: top_agreement(exact, score_full(c, held_txt, held_img)) for c in (one, two)}
    assert agree[2] >= agree[1] and agree[2] > 0.9
    _, fine = two.encode(held_img[:4])
    assert fine.dtype == np.int8 and fine.shape == (4, 32)
    z = (held_img[:4] - two.mean) @ two.encode_matrix.T
    assert np.all(np.abs(two.dequantize(fine) - z[:, 8:]) <= two.fine_scale * 1.01 + 1e-6)  # within a step
    path = tmp_path / "two.npz"
    two.save(path, matrix_bits=16, split=True, compress=False)
    loaded = VectorCodec.load(path)
    assert loaded.fine_segments == ((16, 8), (16, 4), (32, 2)) and loaded.name.startswith("two@")
    np.testing.assert_array_equal(loaded.encode(held_img[:4])[1], fine)
    # as shipped: float16 rows, int8 rows for the numbers at 4 bits or fewer; a library's uncompressed copy of it
    # holds the same numbers, so it keeps the name the library recorded
    two.save(tmp_path / "mixed.npz", matrix_bits=16, split=True, int8_from=8 + 16)
    mixed = VectorCodec.load(tmp_path / "mixed.npz")
    assert "encode_q" in mixed.stored and mixed.stored["encode_q"].shape == (48, 96)  # type: ignore[operator,index]
    assert np.abs(mixed.encode_matrix - two.encode_matrix).max() < 0.01 * np.abs(two.encode_matrix).max()
    mixed.save(tmp_path / "copy.npz", matrix_bits=16, split=True, compress=False)
    assert VectorCodec.load(tmp_path / "copy.npz").name == mixed.name
    bad = {**loaded.arrays(16), "fine_segments": np.array([[16, 8], [16, 3], [32, 2]], np.int32)}
    with pytest.raises(StoreError, match="segments"):
        VectorCodec.from_arrays(bad)




@pytest.fixture(scope="module")
def demo_libraries(tmp_path_factory: pytest.TempPathFactory, demo_folder: Path) -> tuple[Path, Path]:
    """The demo photos in a compact library (the default) and in a full-vector one."""
    root = tmp_path_factory.mktemp("compact")
    compact_path, full_path = root / "compact", root / "full"
    with Library.open(compact_path, encoder="bundled") as lib:
        lib.index(demo_folder)
    full_path.mkdir()
    (full_path / "config.toml").write_text('encoder = "bundled"\nvectors = "full"\n')
    with Library.open(full_path) as lib:
        lib.index(demo_folder)
    return compact_path, full_path


QUERIES = ["a tabby cat", "a cup of coffee", "an astronaut", "a rocket on a launch pad", "a horse",
           "coins on a table", "a man with a camera"]


@needs_codec
def test_new_library_is_compact_and_ranks_like_full_vectors(demo_libraries: tuple[Path, Path]) -> None:
    compact_path, full_path = demo_libraries
    with Library.open(compact_path) as c, Library.open(full_path) as f:
        # the codec's fidelity: raw score order (the query bank's re-order makes near-ties of its own, e.g.
        # "a rocket on a launch pad": rocket 0.2954 − Z vs retina 0.3037 − Z, where the codes move scores ~0.01)
        c.config.search.querybank = f.config.search.querybank = False
        st = c.status()
        assert st.vector_format.startswith("bundled-v2-codec@") and st.bytes_per_photo == 1280
        assert f.status().vector_format == FULL and f.status().bytes_per_photo == c.dim * 4  # type: ignore[operator]
        assert st.dim == 2410 and st.vectors == f.status().vectors
        overlaps = []
        for q in QUERIES:
            hc, hf = c.search(q, k=3, rerank=False), f.search(q, k=3, rerank=False)  # the codec: encoder order
            assert hc[0].path == hf[0].path, q
            assert abs(hc[0].score - hf[0].score) < 0.02  # the same cosine scale
            overlaps.append(len({h.path for h in hc} & {h.path for h in hf}) / 3)
        assert np.mean(overlaps) >= 0.85  # (the demo photos are unlike the training data: near-ties may swap)
        # read back: "more like this" from a stored (decoded) vector finds what full vectors find
        some = f.search("a tabby cat", k=1)[0]
        assert [h.path for h in c.similar(some.path, k=3)] == [h.path for h in f.similar(some.path, k=3)]
        # the read-back vector is not the original coordinate by coordinate, but what queries see of it is
        texts = c.embed_texts(QUERIES)
        assert np.abs(texts @ (c.vectors([some.id]) - f.vectors([some.id])).T).max() < 0.03


@needs_codec
def test_old_full_library_is_read_as_before_then_migrated_by_index(
    demo_libraries: tuple[Path, Path], demo_folder: Path, tmp_path: Path
) -> None:
    _, full_path = demo_libraries
    old = tmp_path / "old"
    shutil.copytree(full_path, old)
    (old / "config.toml").write_text('encoder = "bundled"\n')  # today's default: compact
    with Library.open(old) as lib:
        lib.config.search.querybank = False  # the codec's fidelity: the encoder's own score order
        assert lib.vector_format == FULL  # opened and searched as written
        before = [h.path for h in lib.search("a cup of coffee", k=3, rerank=False)]
        assert (old / "store" / "vectors.f32").exists()
        report = lib.index(demo_folder)  # the writer converts, once
        assert report.encoded == 0
        assert lib.vector_format.startswith("bundled-v2-codec@")
        assert [h.path for h in lib.search("a cup of coffee", k=3, rerank=False)] == before
    assert not (old / "store" / "vectors.f32").exists()  # the full vectors are gone
    with Library.open(old) as lib:
        assert lib.status().vectors == lib.status().files > 10


def _format_1_codec(full_path: Path, out: Path) -> Path:
    """A codec in format 1 (64 float32 + 1,024 int8 numbers, as shipped before format 2), written with the int8 code
    path: the shipped matrices' first 1,088 rows, int8 steps from the demo photos' own codes."""
    shipped = VectorCodec.load(SHIPPED)
    with Library.open(full_path) as f:
        vectors = f.vectors(f.store.ids().tolist())
    a, b = shipped.encode_matrix[:1088], shipped.query_matrix[:1088]
    z = (vectors - shipped.mean) @ a.T
    arrays = {"mean": shipped.mean, "encode": a, "query": b, "scan_dim": np.array([64], np.int32),
              "fine_scale": (np.abs(z[:, 64:]).max(axis=0) * 1.5 / 127).astype(np.float32),
              "rescore": np.array([512], np.int32), "coarse_norm": np.array([shipped.coarse_norm], np.float32)}
    codec = VectorCodec.from_arrays(arrays, "bundled-v2-codec")
    assert codec.format == 1 and codec.bytes_per_vector == 1280
    codec.save(out / "bundled-v2-codec.npz", matrix_bits=16, split=True)
    return out / "bundled-v2-codec.npz"


@needs_codec
def test_library_in_codec_format_1_keeps_opening_searching_and_growing(
    demo_libraries: tuple[Path, Path], demo_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library written in the previous compact format (codec format 1) opens with today's code, searches like full
    vectors, and new photos indexed into it are stored in its own format (never mixed)."""
    _, full_path = demo_libraries
    old_codec = _format_1_codec(full_path, tmp_path)
    photos = tmp_path / "photos"
    shutil.copytree(demo_folder, photos)
    held_back = ["cat.jpg", "coffee.jpg"]  # the best match of two of QUERIES
    for name in held_back:
        (photos / name).rename(tmp_path / name)
    with Library.open(tmp_path / "old", encoder="bundled") as lib, monkeypatch.context() as m:
        m.setattr(lib.encoder, "codec_path", old_codec)  # what the encoder shipped then
        lib.index(photos)
        fmt = lib.vector_format
    assert fmt.startswith("bundled-v2-codec@") and fmt != VectorCodec.load(SHIPPED).name
    for name in held_back:
        (tmp_path / name).rename(photos / name)
    with Library.open(tmp_path / "old") as lib, Library.open(full_path) as ref:
        codec = lib.codec()
        assert codec is not None and codec.format == 1 and lib.status().bytes_per_photo == 1280
        report = lib.index(photos)  # the two new photos, in the library's own format
        assert report.added == 2 and lib.vector_format == fmt
        lib.config.search.querybank = ref.config.search.querybank = False  # the codec's fidelity: score order
        for q in QUERIES:
            assert Path(lib.search(q, k=1, rerank=False)[0].path).name == \
                Path(ref.search(q, k=1, rerank=False)[0].path).name, q
        assert Path(lib.search("a tabby cat", k=1)[0].path).name == "cat.jpg"  # and with the defaults


@needs_codec
def test_interrupted_migration_leaves_the_old_format(
    demo_libraries: tuple[Path, Path], demo_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, full_path = demo_libraries
    old = tmp_path / "old"
    shutil.copytree(full_path, old)
    (old / "config.toml").write_text('encoder = "bundled"\n')
    from picscope.store import compact as compact_mod

    def boom(self: object, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise KeyboardInterrupt

    with Library.open(old) as lib, monkeypatch.context() as m:
        m.setattr(compact_mod.CompactStore, "upsert", boom)
        with pytest.raises(KeyboardInterrupt):
            lib.index(demo_folder)
    with Library.open(old) as lib:
        assert lib.vector_format == FULL
        assert lib.search("a tabby cat", k=1)[0].path.endswith("cat.jpg")
        lib.index(demo_folder)  # the next run finishes the job
        assert lib.vector_format != FULL
        assert lib.search("a tabby cat", k=1)[0].path.endswith("cat.jpg")


@needs_codec
def test_missing_or_foreign_codec_file_is_a_clear_error(demo_libraries: tuple[Path, Path], tmp_path: Path) -> None:
    compact_path, _ = demo_libraries
    broken = tmp_path / "broken"
    shutil.copytree(compact_path, broken)
    codec_file = next((broken / "store").glob(f"c-*/{CODEC_FILE}"))
    other = VectorCodec.load(codec_file).arrays(16)
    other["fine_scale"] = other["fine_scale"] * 2  # other numbers under the same file name
    VectorCodec.from_arrays(other).save(codec_file, matrix_bits=16, split=True, compress=False)
    with Library.open(broken) as lib, pytest.raises(LibraryError, match="corrupt"):
        lib.search("a cat")
    codec_file.unlink()
    with Library.open(broken) as lib, pytest.raises(LibraryError, match="missing"):
        lib.search("a cat")


def test_a_reader_follows_a_compact_writer(tmp_path: Path) -> None:
    """The server's view of a library another process indexes: coarse and fine rows appended past the reader's
    mapping are found after `refresh` (what `server/follow.py` calls), searched and read back."""
    from picscope.store.compact import CompactStore, compact
    from picscope.store.exact import ExactStore

    rng = np.random.default_rng(3)
    basis = rng.normal(size=(8, 40))
    codec = fit_codec(_low_rank(rng, 500, 40, 8, basis), _low_rank(rng, 500, 40, 8, basis),
                      CodecRecipe(scan_dim=6, fine_dim=6, rescore=20), "tiny")

    def open_store() -> CompactStore:
        return compact(ExactStore(tmp_path / "c", 6), ExactStore(tmp_path / "f", 6, np.int8), codec)

    writer, reader = open_store(), open_store()
    first = _low_rank(rng, 10, 40, 8, basis)
    writer.upsert(np.arange(1, 11), first)
    assert reader.refresh is not None
    reader.refresh()
    assert len(reader) == 10
    more = _low_rank(rng, 5000, 40, 8, basis)
    writer.upsert(np.arange(11, 5011), more)
    assert reader.refresh() is True
    assert len(reader) == 5010
    hit = reader.search(more[4000], 1).row(0)[0]
    assert hit[0] == 4011
    np.testing.assert_allclose(reader.get(np.array([4011])) @ more[4000], 1.0, atol=0.05)


@needs_codec
def test_ann_library_keeps_lifted_codes_and_ranks_like_exact(
    demo_libraries: tuple[Path, Path], demo_folder: Path, tmp_path: Path
) -> None:
    """A compact library on the HNSW store: its coarse codes carry the lifting number (one norm for the graph),
    and search and read-back give what the exact store gives."""
    pytest.importorskip("faiss")
    compact_path, _ = demo_libraries
    with Library.open(tmp_path / "ann", encoder="bundled", store="ann") as lib, Library.open(compact_path) as ref:
        lib.index(demo_folder)
        codec = lib.codec()
        assert codec is not None and codec.coarse_norm > 0
        inner = lib.store.inner  # type: ignore[attr-defined]
        assert inner.dim == codec.scan_dim + 1
        stored = inner.get(inner.ids())
        np.testing.assert_allclose(np.linalg.norm(stored, axis=1), codec.coarse_norm, rtol=1e-4)
        for q in QUERIES[:4]:
            assert lib.search(q, k=1)[0].path == ref.search(q, k=1)[0].path, q
            assert abs(lib.search(q, k=1)[0].score - ref.search(q, k=1)[0].score) < 1e-4
        some = ref.search("a tabby cat", k=1)[0]
        np.testing.assert_allclose(lib.vectors([some.id]), ref.vectors([some.id]), atol=1e-5)


@pytest.mark.slow  # embeds 200 photos: ~1 min on 2 shared cores, 6 min when they are oversubscribed
@needs_codec
def test_shipped_codec_keeps_the_full_precision_top_10_on_real_photos(shared_data: Path) -> None:
    """200 Flickr8k dev photos and their 1,000 captions through the real encoder paths: the shipped codec's search
    (coarse scan, re-score of the best candidates) keeps the full-precision top 10 and the gold photo's rank.
    (The fast tests check the same on the 17 demo photos through a library.)"""
    from picscope.encoders import make_encoder
    from picscope.imageio import load_image
    from picscope.training.data import flickr8k

    dev = flickr8k("dev", shared_data)
    enc = make_encoder("bundled")
    photos = enc.embed_images([load_image(str(p), target_size=enc.image_size) for p in dev.paths[:200]])
    captions = [c for caps in dev.captions[:200] for c in caps]
    texts = enc.embed_texts(captions)
    gold = np.repeat(np.arange(200), [len(c) for c in dev.captions[:200]])
    codec = VectorCodec.load(SHIPPED)
    assert codec.format == 2 and codec.bytes_per_vector == 1280
    exact = texts @ photos.T
    approx = score_full(codec, texts, photos, rescore=40)  # re-score a fifth of the photos, as 1,024 of 5,000
    assert top_agreement(exact, approx) >= 0.99
    rank_full = (exact > exact[np.arange(len(gold)), gold][:, None]).sum(axis=1)
    rank_codec = (approx > approx[np.arange(len(gold)), gold][:, None]).sum(axis=1)
    assert abs(float((rank_codec == 0).mean() - (rank_full == 0).mean())) <= 0.01  # R@1 within a point
    coarse, fine = codec.encode(photos)
    seen = np.abs(texts @ (codec.decode(coarse, fine) - photos).T)  # read back, as queries see it
    assert seen.max() < 0.05 and seen.mean() < 0.001


def test_fine_segments_parse_and_a_bad_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from picscope.cli import main
    from picscope.training.codec import CodecRecipe, parse_segments

    assert parse_segments("384x8, 896x4,768x2") == ((384, 8), (896, 4), (768, 2))
    assert parse_segments("1024") == ()  # format 1: that many int8 numbers
    recipe = CodecRecipe(scan_dim=64, fine_segments=parse_segments("384x8,896x4,768x2"))
    assert (recipe.fine_numbers, recipe.int8_from) == (2048, 64 + 384)
    for bad in ("10x3", "7x4", "x8", "384x8,abc"):
        with pytest.raises(ValueError, match="NUMBERSxBITS"):
            parse_segments(bad)
    assert main(["train-codec", "--fine", "10x3"]) == 2  # before any data is read
    err = capsys.readouterr().err
    assert "NUMBERSxBITS" in err and "Traceback" not in err


@needs_codec
def test_the_read_back_matrix_is_the_pseudo_inverse_and_is_computed_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICSCOPE_CACHE", str(tmp_path / "cache"))
    codec = VectorCodec.load(SHIPPED)
    d = codec.decode_matrix
    a = codec.encode_matrix.astype(np.float64)
    np.testing.assert_allclose(d, np.linalg.pinv(a), atol=1e-5)
    assert len(list((tmp_path / "cache").glob("decode-*.npy"))) == 1
    monkeypatch.setattr(np.linalg, "solve", lambda *a, **k: pytest.fail("computed again"))
    again = VectorCodec.load(SHIPPED).decode_matrix  # a new process's codec: read from the cache folder
    np.testing.assert_array_equal(again, d)
