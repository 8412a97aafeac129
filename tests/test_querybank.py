"""Query-bank normalisation: the normaliser's maths, the same numbers from a compact store's codes, the pinned
file, the search order it gives (and its switch), and the dev figure it was shipped for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from picscope.encoders import make_encoder
from picscope.encoders.querybank import QueryBank, fit_querybank, load_querybank
from picscope.errors import EncoderError
from picscope.library import QUERYBANK_POOL, Library


def _logsumexp_z(bank_vectors: np.ndarray, images: np.ndarray, beta: float) -> np.ndarray:
    s = beta * (bank_vectors.astype(np.float64) @ images.astype(np.float64).T)
    return np.log(np.exp(s).sum(axis=0)) / beta


def test_the_normaliser_is_the_soft_maximum_over_the_bank() -> None:
    rng = np.random.default_rng(0)
    bank_vectors = rng.normal(size=(300, 40)).astype(np.float32)
    bank_vectors /= np.linalg.norm(bank_vectors, axis=1, keepdims=True)
    images = rng.normal(size=(25, 40)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    full = fit_querybank(bank_vectors, rank=40, beta=20.0, name="t")
    np.testing.assert_allclose(full.normalizers(images), _logsumexp_z(bank_vectors, images, 20.0), atol=1e-4)
    low = fit_querybank(bank_vectors, rank=8, beta=20.0, name="t8")  # a truncated factorisation: close, not equal
    assert 1e-4 < np.abs(low.normalizers(images) - full.normalizers(images)).max() < 0.5
    # a hub (close to many bank queries) gets the larger normaliser
    hub = bank_vectors[:50].mean(axis=0)
    hub /= np.linalg.norm(hub)
    z = full.normalizers(np.stack([hub, images[0]]))
    assert z[0] > z[1]
    assert full.normalizers(np.zeros((0, 40), np.float32)).shape == (0,)
    with pytest.raises(ValueError, match="40-d"):
        full.normalizers(np.zeros((2, 7), np.float32))


def test_the_shipped_bank_is_pinned(tmp_path: Path) -> None:
    enc = make_encoder("bundled")
    bank = enc.querybank  # type: ignore[attr-defined]
    assert isinstance(bank, QueryBank) and bank.dim == enc.dim and bank.a.shape[1] == bank.w.shape[0] == 128
    path, pinned = enc._bank_file  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / path.name
    bad.write_bytes(bytes(data))
    with pytest.raises(EncoderError, match="corrupt"):
        load_querybank(bad, pinned)
    bad.write_bytes(b"not a bank")
    with pytest.raises(EncoderError, match="not a query bank"):
        load_querybank(bad)


def test_a_later_process_maps_the_unpacked_bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICSCOPE_CACHE", str(tmp_path / "cache"))
    path, pinned = make_encoder("bundled")._bank_file  # type: ignore[attr-defined]
    first = load_querybank(path, pinned)
    assert list((tmp_path / "cache").glob("*-unpacked/meta.json"))
    again = load_querybank(path, pinned)  # from the cache folder, memory-mapped
    assert not again.a.flags.owndata and not again.a.flags.writeable
    assert again.name == first.name and again.beta == first.beta
    np.testing.assert_array_equal(again.a, first.a)
    np.testing.assert_array_equal(again.w, first.w)


@pytest.fixture(scope="module")
def library(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Library:
    lib = Library.open(tmp_path_factory.mktemp("qb") / "lib")
    lib.index(demo_folder)
    return lib


def test_compact_codes_give_the_full_vectors_normalisers(library: Library) -> None:
    ids = library.store.ids()
    rows, codec = library.store.scored_rows(ids)
    assert codec is not None and rows.shape == (len(ids), codec.code_dim)  # the default library is compact
    bank = library.encoder.querybank
    assert bank is not None
    from_codes = bank.normalizers_of_rows(rows, codec)
    from_vectors = bank.normalizers(library.store.get(ids))
    assert np.abs(from_codes - from_vectors).max() < 1e-3


def test_a_text_search_ranks_by_score_minus_normaliser(library: Library) -> None:
    bank = library.encoder.querybank
    assert bank is not None
    query = "a photo of an animal"
    library.config.search.querybank = False
    raw = library.search(query, k=QUERYBANK_POOL, rerank=False)  # the encoder's order, without the verifier
    library.config.search.querybank = True
    try:
        ranked = library.search(query, k=QUERYBANK_POOL, rerank=False)
    finally:
        library.config.search.querybank = True
    assert [r.score for r in raw] == sorted((r.score for r in raw), reverse=True)  # off: score order
    assert {r.id for r in raw} == {r.id for r in ranked}
    assert {r.id: r.score for r in raw} == {r.id: r.score for r in ranked}  # scores stay cosine similarities
    z = dict(zip([r.id for r in ranked],
                 bank.normalizers(library.store.get(np.array([r.id for r in ranked]))).tolist(), strict=True))
    corrected = [r.score - z[r.id] for r in ranked]
    assert corrected == sorted(corrected, reverse=True)
    assert [r.id for r in raw] != [r.id for r in ranked]  # on the demo photos the order does change
    # an image query (not text-like) keeps plain score order
    image_hits = library.search_vector(library.store.get(np.array([ranked[0].id]))[0], k=10)
    assert [h.score for h in image_hits] == sorted((h.score for h in image_hits), reverse=True)


def test_min_score_still_filters_after_the_reorder(library: Library) -> None:
    hits = library.search("a photo of an animal", k=20, min_score=0.15, rerank=False)
    assert hits and all(h.score >= 0.15 for h in hits)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


@pytest.mark.slow
def test_the_bank_lifts_dev_recall(shared_data: Path) -> None:
    """The figure the bank shipped with: Flickr8k dev captions 1–4, encoder alone vs with the bank."""
    from picscope.training.querybank import dev_report, dev_vectors

    vectors = dev_vectors(log=lambda _: None)
    base = dev_report(vectors, None)
    with_bank = dev_report(vectors, make_encoder("bundled").querybank)  # type: ignore[attr-defined]
    assert with_bank["R@1"] >= base["R@1"] + 1.5 and with_bank["R@5"] >= base["R@5"] + 1.0


def test_a_deep_request_gets_normalisers_for_all_it_asks_up_to_the_cap(library: Library,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 1 asks for 100 candidates and an evaluation for the whole gallery: each gets bank scores for all it
    asked for, up to `QUERYBANK_MAX`; beyond the cap the hits keep the cosine order and carry no bank score."""
    import picscope.library as library_module

    vec = library.embed_texts(["a photo of an animal"])[0]
    hits = library.search_vector(vec, 12, querybank=True)
    assert len(hits) == 12 and all(h.bank_score is not None for h in hits)
    monkeypatch.setattr(library_module, "QUERYBANK_POOL", 3)
    monkeypatch.setattr(library_module, "QUERYBANK_MAX", 5)
    hits = library.search_vector(vec, 12, querybank=True)
    banked = [h.bank_score for h in hits[:5]]
    assert None not in banked and banked == sorted(banked, reverse=True)  # type: ignore[type-var]
    assert all(h.bank_score is None for h in hits[5:])
    assert [h.score for h in hits[5:]] == sorted((h.score for h in hits[5:]), reverse=True)
