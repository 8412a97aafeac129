"""`modelcache.save_arrays` / `load_arrays`: one packed file a later process maps once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from picscope.encoders.modelcache import load_arrays, save_arrays

ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "empty": np.zeros((0, 5), np.int8),
    "f16": np.array([1.5, -2.25], np.float16),
    "i64": np.arange(7, dtype=np.int64) * 10**12,
    "i8": np.array([[-128, 127]], np.int8),
}


def test_every_array_comes_back_equal_aligned_and_read_only(tmp_path: Path) -> None:
    save_arrays(tmp_path / "entry", ARRAYS, {"source": "x", "n": 2})
    assert sorted(p.name for p in (tmp_path / "entry").iterdir()) == ["arrays.bin", "meta.json"]
    loaded = load_arrays(tmp_path / "entry")
    assert loaded is not None and loaded[1] == {"source": "x", "n": 2}
    for name, want in ARRAYS.items():
        got = loaded[0][name]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable and (got.size == 0 or got.ctypes.data % 64 == 0)


def test_a_truncated_or_missing_pack_reads_as_absent(tmp_path: Path) -> None:
    save_arrays(tmp_path / "entry", ARRAYS, {})
    with open(tmp_path / "entry" / "arrays.bin", "r+b") as fh:
        fh.truncate(64)
    assert load_arrays(tmp_path / "entry") is None
    (tmp_path / "entry" / "arrays.bin").unlink()
    assert load_arrays(tmp_path / "entry") is None
    assert load_arrays(tmp_path / "nothing") is None


def test_a_folder_of_the_earlier_layout_is_still_read(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    names = {}
    for i, (name, arr) in enumerate(ARRAYS.items()):
        np.save(folder / f"{i}.npy", arr)
        names[name] = f"{i}.npy"
    (folder / "meta.json").write_text(json.dumps({"arrays": names, "meta": {"v": 1}}))
    loaded = load_arrays(folder)
    assert loaded is not None and loaded[1] == {"v": 1}
    for name, want in ARRAYS.items():
        np.testing.assert_array_equal(loaded[0][name], want)
