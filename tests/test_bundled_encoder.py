"""The trained `bundled` encoder: shipped weights, checksum, determinism, quality on real photos, training loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from picscope.demo import sample_images
from picscope.encoders import default_encoder_spec, make_encoder
from picscope.encoders.bundled import CHECKSUMS, FILES, WEIGHTS_DIR, BundledEncoder, weights_present
from picscope.errors import EncoderError


def test_weights_ship_and_verify() -> None:
    assert weights_present()
    assert default_encoder_spec() == "bundled"
    enc = make_encoder("bundled")
    sums = dict(reversed(line.split()) for line in (WEIGHTS_DIR / CHECKSUMS).read_text().splitlines())
    assert enc.name == f"bundled-v1@{sums[FILES[0]][:12]}"
    assert enc.dim == 256 + 384 + 1000
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    metrics = json.loads((WEIGHTS_DIR / "bundled-v1-metrics.json").read_text())
    assert f"{metrics['dev']['t2i_r@1']:.1f}" in card  # the card states the measured numbers


def test_corrupt_or_missing_weights_give_clear_errors(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, folder)
    data = bytearray((folder / FILES[0]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / FILES[0]).write_bytes(bytes(data))
    with pytest.raises(EncoderError, match="corrupt"):
        BundledEncoder(str(folder))
    (folder / FILES[1]).unlink()
    with pytest.raises(EncoderError, match="missing"):
        BundledEncoder(str(folder))


def test_embeddings_normalised_deterministic_and_batch_invariant() -> None:
    enc = make_encoder("bundled")
    images = [im for im, _ in list(sample_images().values())[:5]]
    batch = enc.embed_images(images)
    singles = np.concatenate([enc.embed_images([im]) for im in images])
    assert batch.shape == (5, enc.dim) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    np.testing.assert_allclose(enc.embed_images(images), batch, atol=1e-6)
    texts = ["a dog runs on the beach", "two children play football", "a man climbs a rock"]
    t1 = enc.embed_texts(texts)
    t2 = np.concatenate([enc.embed_texts([t]) for t in texts])
    np.testing.assert_allclose(np.linalg.norm(t1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(t1, t2, atol=1e-5)
    assert not np.allclose(t1[0], t1[1])


def test_describes_real_photos_better_than_the_label_baseline() -> None:
    samples = sample_images()
    images = [im for im, _ in samples.values()]
    texts = [d for _, d in samples.values()]

    def correct(spec: str) -> int:
        enc = make_encoder(spec)
        top = (enc.embed_texts(texts) @ enc.embed_images(images).T).argmax(axis=1)
        return int((top == np.arange(len(images))).sum())

    bundled, labels = correct("bundled"), correct("labels")
    assert bundled > len(images) / 2  # most descriptions find their photo first
    assert bundled > labels


def test_training_loop_learns_on_synthetic_features() -> None:
    from picscope.training.train import Features, TrainConfig, evaluate, train

    rng = np.random.default_rng(0)
    n = 64
    latent = rng.standard_normal((n, 16)).astype(np.float32)
    mix_img = rng.standard_normal((16, 40)).astype(np.float32)
    mix_txt = rng.standard_normal((16, 24)).astype(np.float32)

    def feats(lat: np.ndarray) -> Features:
        pooled = lat @ mix_img + 0.1 * rng.standard_normal((len(lat), 40)).astype(np.float32)
        logits = rng.standard_normal((len(lat), 10)).astype(np.float32)
        text = np.repeat(lat, 5, axis=0) @ mix_txt + 0.1 * rng.standard_normal((len(lat) * 5, 24)).astype(np.float32)
        return Features(pooled, logits, pooled, logits, text)

    train_f, dev_f = feats(latent), feats(latent[:32])
    cfg = TrainConfig(dim=16, hidden=32, epochs=30, batch_size=32, lr=3e-3, patience=30, dropout=0.0)
    result = train(train_f, dev_f, cfg, log=lambda _m: None)
    assert result.weights["img.fc2.weight"].shape == (16, 32)
    assert result.dev["t2i_r@1"] > 50  # far above chance (1/32 ≈ 3%)
    assert evaluate(result.weights, dev_f) == result.dev


@pytest.mark.slow
def test_eval_command_reproduces_the_model_card(shared_data: Path) -> None:
    from picscope.training.evaluate import evaluate_encoder

    metrics = json.loads((WEIGHTS_DIR / "bundled-v1-metrics.json").read_text())["dev"]
    got = evaluate_encoder("bundled", "dev")
    for key in ("t2i_r@1", "t2i_r@5", "t2i_r@10"):
        assert abs(got[key] - metrics[key]) <= 1.0, key
