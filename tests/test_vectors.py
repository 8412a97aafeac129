"""`picscope.vectors`: the one home of L2 normalisation and of the composed-query vector."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from picscope.vectors import compose, unit

SRC = Path(__file__).resolve().parents[1] / "src" / "picscope"


def test_unit_normalises_a_vector_and_each_row() -> None:
    v = unit(np.array([3.0, 4.0]))
    assert v.dtype == np.float32
    assert np.allclose(v, [0.6, 0.8])
    rows = unit(np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]], np.float64))
    assert rows.dtype == np.float32 and rows.shape == (3, 2)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    assert np.allclose(rows[1], [0.0, 1.0])


def test_unit_keeps_a_zero_vector_zero() -> None:
    out = unit(np.zeros((2, 4), np.float32))
    assert np.all(out == 0) and not np.isnan(out).any()


def test_compose_is_the_normalised_sum_of_text_and_reference() -> None:
    rng = np.random.default_rng(0)
    t, r = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    got = compose(t, r)
    want = (t + r) / np.linalg.norm(t + r)
    assert got.dtype == np.float32
    assert np.allclose(got, want, atol=1e-6)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-6
    # composing with itself gives the same direction back
    assert np.allclose(compose(t, t), t, atol=1e-6)


def test_normalisation_is_written_in_one_place() -> None:
    """No module outside `vectors.py` divides by an L2 norm it computes itself (training scripts aside, and
    arithmetic.py, which only measures the norm to refuse terms that cancel the query out)."""
    allowed = {"vectors.py", "arithmetic.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "training" or rel.name in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"np\.linalg\.norm\(", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
