"""The codec cache: a new process maps a codec's ready arrays instead of decompressing, expanding and hashing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from picscope.store import codeccache, compact
from picscope.store.compact import VectorCodec
from picscope.training.codec import CodecRecipe, fit_codec


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PICSCOPE_CACHE", str(folder))
    return folder


def _codec(seed: int, name: str = "tiny") -> VectorCodec:
    rng = np.random.default_rng(seed)
    images, texts = rng.normal(size=(600, 96)), rng.normal(size=(400, 96))
    return fit_codec(images, texts, CodecRecipe(scan_dim=8, rescore=50, fine_segments=((16, 8), (16, 4), (32, 2))),
                     name)


def _shipped_form(codec: VectorCodec, path: Path) -> Path:
    codec.save(path, matrix_bits=16, split=True, int8_from=8 + 16)  # float16 and int8 rows, as shipped
    return path


def _same(a: VectorCodec, b: VectorCodec) -> None:
    assert a.name == b.name and a.fine_segments == b.fine_segments and a.scan_dim == b.scan_dim
    assert (a.rescore, a.coarse_norm) == (b.rescore, b.coarse_norm)
    for x, y in ((a.mean, b.mean), (a.encode_matrix, b.encode_matrix), (a.query_matrix, b.query_matrix),
                 (a.fine_scale, b.fine_scale)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_second_open_maps_the_kept_arrays_without_hashing(cache: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = _shipped_form(_codec(1), tmp_path / "c.npz")
    first = VectorCodec.load(path)
    assert isinstance(first.stored, dict)  # read from the file itself
    entries = [p for p in (cache / "codecs").iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "meta.json").exists()

    def no_hash(arrays: object) -> str:
        raise AssertionError("the codec's arrays were hashed again")

    monkeypatch.setattr(compact, "_digest", no_hash)
    second = VectorCodec.load(path)
    _same(first, second)
    assert isinstance(second.stored, codeccache.StoredArrays)
    x = np.random.default_rng(2).normal(size=(3, 96)).astype(np.float32)
    for u, v in zip(first.encode(x), second.encode(x), strict=True):
        np.testing.assert_array_equal(u, v)
    for u, v in zip(first.queries(x), second.queries(x), strict=True):
        np.testing.assert_array_equal(u, v)


def test_a_copy_saved_from_a_mapped_codec_keeps_its_name(cache: Path, tmp_path: Path) -> None:
    path = _shipped_form(_codec(3), tmp_path / "c.npz")
    name = VectorCodec.load(path).name
    mapped = VectorCodec.load(path)
    assert isinstance(mapped.stored, codeccache.StoredArrays)
    mapped.save(tmp_path / "copy.npz", matrix_bits=16, split=True, compress=False)  # a library's copy
    assert VectorCodec.load(tmp_path / "copy.npz").name == name


def test_a_changed_file_is_read_again(cache: Path, tmp_path: Path) -> None:
    path = _shipped_form(_codec(4, "a"), tmp_path / "c.npz")
    old = VectorCodec.load(path)
    VectorCodec.load(path)
    _shipped_form(_codec(5, "b"), path)  # the same path, other numbers
    os.utime(path, ns=(1, 1))  # even with an old time stamp: the size or time differs
    new = VectorCodec.load(path)
    assert new.name != old.name and new.name.startswith("b@")
    merged: dict[str, np.ndarray] = {}
    for part in VectorCodec.files(path):
        merged.update(dict(np.load(part)))
    fresh = VectorCodec.from_arrays(merged, new.name)
    _same(new, fresh)
    assert len([p for p in (cache / "codecs").iterdir() if p.is_dir()]) == 1  # the stale entry was removed


def test_a_damaged_entry_falls_back_to_the_file(cache: Path, tmp_path: Path) -> None:
    path = _shipped_form(_codec(6), tmp_path / "c.npz")
    first = VectorCodec.load(path)
    entry = next(p for p in (cache / "codecs").iterdir() if p.is_dir())
    with open(entry / "arrays.bin", "r+b") as fh:  # cut short, as by a full disk
        fh.truncate(1000)
    again = VectorCodec.load(path)
    _same(first, again)
    assert isinstance(again.stored, dict)
    kept_again = VectorCodec.load(path)  # the damaged entry was replaced
    _same(first, kept_again)
    assert isinstance(kept_again.stored, codeccache.StoredArrays)
    (entry / "meta.json").unlink()
    _same(first, VectorCodec.load(path))


def test_an_unwritable_cache_only_costs_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(codeccache, "_folder", lambda: blocker / "codecs")
    path = _shipped_form(_codec(7), tmp_path / "c.npz")
    _same(VectorCodec.load(path), VectorCodec.load(path))
