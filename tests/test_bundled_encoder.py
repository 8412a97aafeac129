"""The trained `bundled` encoder: shipped weights, checksum, determinism, quality on real photos, training loop."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from picscope.demo import sample_images
from picscope.encoders import default_encoder_spec, make_encoder
from picscope.encoders.bundled import CHECKSUMS, FILES, VERSION, WEIGHTS_DIR, BundledEncoder, weights_present
from picscope.encoders.bundled_model import BundledModel, MemoryConfig, pack_heads, pack_memory, unpack_heads
from picscope.errors import EncoderError

METRICS = WEIGHTS_DIR / f"{VERSION}-metrics.json"


def test_weights_ship_and_verify() -> None:
    assert weights_present()
    assert default_encoder_spec() == "bundled"
    enc = make_encoder("bundled")
    sums = dict(reversed(line.split()) for line in (WEIGHTS_DIR / CHECKSUMS).read_text().splitlines())
    pin = hashlib.sha256((sums[FILES[0]] + sums[FILES[1]]).encode()).hexdigest()
    assert enc.name == f"bundled-v2@{pin[:12]}"  # a change to either file is a different encoder
    metrics = json.loads(METRICS.read_text())
    members = len(metrics["members"])
    assert members >= 2
    assert enc.dim == members * 256 + 384 + 1000 + 2 == metrics["dim"]
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    for key in ("t2i_r@1", "t2i_r@5", "t2i_r@10", "i2t_r@1"):
        assert f"{metrics['dev'][key]:.1f}" in card  # the card states the measured numbers
    assert f"{metrics['labels_baseline_dev']['t2i_r@1']:.1f}" in card
    for name, digest in sums.items():
        assert digest in card or name in card


def test_shipped_metrics_meet_the_acceptance_targets_and_beat_the_baseline() -> None:
    metrics = json.loads(METRICS.read_text())
    dev, base = metrics["dev"], metrics["labels_baseline_dev"]
    assert dev["t2i_r@1"] >= 25 and dev["t2i_r@5"] >= 55 and dev["t2i_r@10"] >= 68
    for k in (1, 5, 10):
        assert dev[f"t2i_r@{k}"] > 2 * base[f"t2i_r@{k}"]


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

    metrics = json.loads(METRICS.read_text())["dev"]
    got = evaluate_encoder("bundled", "dev")
    for key in ("t2i_r@1", "t2i_r@5", "t2i_r@10"):
        assert abs(got[key] - metrics[key]) <= 1.0, key


def _tiny_members(rng: np.random.Generator, n: int, d_img: int = 12, d_txt: int = 8, dim: int = 4) -> list[dict]:
    members = []
    for _ in range(n):
        w = {"use_logits": np.array([0], np.int32)}
        for prefix, d in (("img", d_img), ("txt", d_txt)):
            w[f"{prefix}_mu"] = np.zeros(d, np.float32)
            w[f"{prefix}_sd"] = np.ones(d, np.float32)
            w[f"{prefix}.fc1.weight"] = rng.standard_normal((6, d)).astype(np.float32)
            w[f"{prefix}.fc1.bias"] = np.zeros(6, np.float32)
            w[f"{prefix}.fc2.weight"] = rng.standard_normal((dim, 6)).astype(np.float32)
            w[f"{prefix}.fc2.bias"] = np.zeros(dim, np.float32)
            w[f"{prefix}.skip.weight"] = rng.standard_normal((dim, d)).astype(np.float32)
        members.append(w)
    return members


def test_hubness_coordinate_subtracts_each_images_bank_similarity() -> None:
    """One inner product of the folded vectors is exactly `similarity − beta·max(r − r0, 0)`, up to the norms."""
    rng = np.random.default_rng(0)
    members = _tiny_members(rng, 3)
    values = rng.standard_normal((40, 8)).astype(np.float32)
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    keys = [rng.standard_normal((40, 4)).astype(np.float32) for _ in members]
    plain_cfg = MemoryConfig(k=5, labels=0.0, hub_k=7, hub_beta=0.0, flip_tta=False)
    off = BundledModel(members, keys, values, plain_cfg)
    pooled = rng.standard_normal((20, 12)).astype(np.float32)
    texts = rng.standard_normal((9, 8)).astype(np.float32)
    main_i = off.image_vectors(pooled, pooled[:, :0], None, None)
    r = off.hub_scores(main_i)
    r0 = float(np.median(r))
    cfg = MemoryConfig(**{**plain_cfg.__dict__, "hub_beta": 0.5, "hub_center": r0})
    model = off.variant(cfg)
    assert model.dim == off.dim + 2 == 3 * 4 + 8 + 2
    zi, zt = model.image_vectors(pooled, pooled[:, :0], None, None), model.text_vectors(texts)
    np.testing.assert_allclose(np.linalg.norm(zi, axis=1), 1.0, atol=1e-5)
    bank_sims = main_i @ off.text_vectors(values).T
    np.testing.assert_allclose(r, np.sort(bank_sims, axis=1)[:, -7:].mean(axis=1), atol=1e-5)
    expected = off.text_vectors(texts) @ main_i.T - 0.5 * np.maximum(r - r0, 0)[None, :]
    got = zt @ zi.T
    # exactly, once the two vectors' norms (text: constant; image: 1 + its small bias²) are undone
    scale = 1.0 + cfg.lam
    bias = -scale * 0.5 * np.maximum(r - r0, 0) / cfg.hub_coord
    norms = np.sqrt(scale + cfg.hub_coord**2) * np.sqrt(scale + bias**2)[None, :]
    np.testing.assert_allclose(got * norms / scale, expected, atol=1e-5)
    plain = off.text_vectors(texts) @ main_i.T
    assert (np.argsort(-got, axis=1) != np.argsort(-plain, axis=1)).any()  # it does re-rank


def test_heads_pack_roundtrip_and_v1_layout_loads() -> None:
    rng = np.random.default_rng(1)
    members = _tiny_members(rng, 2, d_img=13)
    for bits, tol in ((8, 1 / 254), (4, 1 / 14)):  # at most half a quantisation step of each row's max
        packed = pack_heads(members, bits)
        back = unpack_heads(packed)
        assert len(back) == 2
        for a, b in zip(members, back, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert a[k].shape == b[k].shape  # odd column counts (13) survive 4-bit packing too
                row_max = np.abs(a[k]).max(axis=-1, keepdims=True) if a[k].ndim == 2 else 0.0
                assert np.all(np.abs(a[k] - b[k]) <= row_max * tol + 1e-6)
        if bits == 4:
            assert packed["h0.img.fc1.weight.q4"].nbytes * 2 >= members[0]["img.fc1.weight"].size
            assert packed["h0.img.fc1.weight.q4"].nbytes < members[0]["img.fc1.weight"].size
    with pytest.raises(ValueError, match="8 or 4 bits"):
        pack_heads(members, 2)
    v1 = {k: v.astype(np.float16) if v.ndim == 2 else v for k, v in members[0].items()}
    (only,) = unpack_heads(v1)
    np.testing.assert_allclose(only["img.fc1.weight"], members[0]["img.fc1.weight"], atol=1e-2)
    keys = [rng.standard_normal((10, 4)).astype(np.float32)]
    values = rng.standard_normal((10, 8)).astype(np.float32)
    memory = pack_memory(keys, values, MemoryConfig())
    legacy = {"keys_q": memory["keys0_q"], "keys_scale": memory["keys0_scale"], "values_q": memory["values_q"],
              "values_scale": memory["values_scale"],
              "config": np.frombuffer(b'{"k": 3, "temperature": 0.05, "lam": 0.5, "flip_tta": false, '
                                      b'"labels": 0.0, "labels_temperature": 0.05}', np.uint8)}
    model = BundledModel.from_arrays(v1, legacy)
    assert not model.mem.hub and model.dim == 4 + 8  # v1 files: no hubness coordinate
