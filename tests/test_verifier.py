"""The bundled verifier: numpy inference reproduces the training-time (torch) scores, the shipped weights load and
are pinned, and the `bundled` vision backend built on it keeps the VisionModel contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from picscope.errors import EncoderError
from picscope.models.bundled_vision import request_parts, statement
from picscope.models.verifier import WEIGHTS_DIR, TextFeatures, load_from

torch = pytest.importorskip("torch")

from picscope.training.verifier import (  # noqa: E402
    VerifierConfig,
    build_model,
    calibrate,
    export_weights,
    fit_pca,
    project_cells,
    save_verifier,
)


def _torch_scores(model: object, grid: np.ndarray, states: np.ndarray, mean: np.ndarray, pca: np.ndarray
                  ) -> np.ndarray:
    with torch.no_grad():
        cells = model.cells(torch.from_numpy(project_cells(grid, mean, pca)))  # type: ignore[attr-defined]
        h = torch.from_numpy(states[None])
        q, w = model.tokens(h, torch.ones(1, len(states)))  # type: ignore[attr-defined]
        return model.score(q, w, cells[None]).numpy()[0]  # type: ignore[attr-defined]


def test_numpy_inference_reproduces_the_torch_model(tmp_path: Path) -> None:
    cfg = VerifierConfig(dim=32, hidden=48, head_hidden=16)
    torch.manual_seed(3)
    model = build_model(torch, cfg).eval()
    with torch.no_grad():  # non-trivial layer norm and head weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(5, 49, 1280)).astype(np.float32)
    states = rng.normal(size=(9, 384)).astype(np.float32)
    mean, pca = fit_pca(grid, np.arange(5), cfg.dim, sample=245)
    save_verifier(export_weights(model, mean, pca), {"lam": cfg.lam, "calibration": [1.0, 0.0]}, tmp_path, "v-test")
    ver = load_from(tmp_path, "v-test")
    got = ver.score(ver.cells(grid), ver.tokens(states))
    # the shipped weights are float16: compare against torch running the same rounded weights
    rounded = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in ver.w.items() if not k.startswith("pca")}
    model.load_state_dict(rounded)
    expected = _torch_scores(model, grid, states, ver.w["pca_mean"], ver.w["pca"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.ptp(got) > 1e-3  # the images are told apart


def test_weights_are_pinned_by_their_checksum(tmp_path: Path) -> None:
    cfg = VerifierConfig(dim=8, hidden=8, head_hidden=4)
    weights = export_weights(build_model(torch, cfg), np.zeros(1280), np.zeros((8, 1280)))
    save_verifier(weights, {"lam": cfg.lam}, tmp_path, "v-test")
    assert load_from(tmp_path, "v-test").name.startswith("v-test@")
    meta = json.loads((tmp_path / "v-test.json").read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / "v-test.json").write_text(json.dumps(meta))
    with pytest.raises(EncoderError, match="checksum"):
        load_from(tmp_path, "v-test")
    with pytest.raises(EncoderError, match="cannot load"):
        load_from(tmp_path / "missing", "v-test")


def test_calibration_recovers_a_logistic_relation() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    y = rng.random(4000) < 1 / (1 + np.exp(-(2.0 * x - 1.0)))
    a, b = calibrate(x, y)
    assert abs(a - 2.0) < 0.25 and abs(b + 1.0) < 0.2


def test_questions_become_the_statements_the_verifier_reads() -> None:
    assert statement("Is there a dog running in the snow?") == "a dog running in the snow"
    assert statement("Are there two dogs?") == "two dogs"
    assert statement("Is the scene in the snow?") == "in the snow"
    assert statement("Is the dog running?") == "the dog running"
    assert statement("Is it raining?") == "raining"
    assert request_parts("a man on a bike\nAnswers to follow-up questions (all still apply):\n- helmet? yes") == [
        "a man on a bike", "helmet? yes"]


def test_text_features_sum_to_one() -> None:
    f = TextFeatures(np.ones((3, 4), np.float32), np.array([0.2, 0.3, 0.5], np.float32))
    assert abs(float(f.w.sum()) - 1) < 1e-6


@pytest.mark.skipif(not (WEIGHTS_DIR / "verifier-v1.npz").exists(), reason="verifier weights not built")
def test_shipped_verifier_loads_and_is_pinned() -> None:
    ver = load_from(WEIGHTS_DIR)
    assert ver.name.startswith("verifier-v1@") and ver.meta.get("sha256")


@pytest.mark.data
@pytest.mark.skipif(not (WEIGHTS_DIR / "verifier-v1.npz").exists(), reason="verifier weights not built")
def test_the_bundled_judge_prefers_the_described_photo_on_unseen_dev_photos() -> None:
    """Dev photos 900–999 (never trained on): each caption's own photo against 4 other dev photos, judged by the
    `bundled` vision model from pixels. Chance is 20%; the verifier reaches far more."""
    from picscope.imageio import load_image
    from picscope.models import make_vision_model
    from picscope.paths import data_root
    from picscope.training.data import flickr8k

    if not (data_root() / "flickr8k" / "captions.jsonl").exists():
        pytest.skip(f"Flickr8k not found under {data_root()}")
    dev = flickr8k("dev")
    vision = make_vision_model("bundled")
    rng = np.random.default_rng(0)
    wins = 0
    trials = 20
    for t in range(trials):
        gold = 900 + t * 3
        others = rng.choice([i for i in range(900, 1000) if i != gold], size=4, replace=False)
        photos = [load_image(str(dev.paths[i]), target_size=256) for i in [gold, *others]]
        verdicts = vision.judge(dev.captions[gold][0], photos)
        wins += int(verdicts[0].rank == 1)
        assert "verifier match" in verdicts[0].reason
    assert wins / trials >= 0.6
