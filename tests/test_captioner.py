"""The `bundled` captioner: numpy inference equals the torch network, beam search, the API, the scorers, dev scores."""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from picscope.models.caption_decoder import BOS, EOS, Decoder, DecoderConfig, detokenize, pack, tokenize, unpack
from picscope.models.captioner import WEIGHTS_DIR, WEIGHTS_NAME, BundledCaptioner, CaptionerError, load_captioner

SHIPPED = WEIGHTS_DIR / WEIGHTS_NAME


def _cells(n: int, seed: int = 0) -> np.ndarray:
    """Cells shaped and scaled like EfficientNet-Lite0's head output (ReLU6: sparse, in [0, 6])."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(0.6, 0.8, (n, 49, 1280)) * (rng.random((n, 49, 1280)) < 0.5)
    return np.minimum(x, 6).astype(np.float32)


def _shipped_arrays() -> dict[str, np.ndarray]:
    with np.load(SHIPPED) as z:
        return {k: z[k] for k in z.files}


# --- text -----------------------------------------------------------------------------------------------------

def test_tokenize_lowercases_drops_punctuation_and_keeps_possessives() -> None:
    assert tokenize("A dog 's ball , on the Grass .") == ["a", "dog", "'s", "ball", "on", "the", "grass"]
    assert tokenize("The dog's ball!") == ["the", "dog's", "ball"]
    assert detokenize(["a", "dog", "'s", "ball"]) == "a dog's ball"


# --- numpy inference = the torch network it was trained as ------------------------------------------------------

def _torch_logprobs(weights: dict[str, np.ndarray], vocab: int, cfg: DecoderConfig, cells: np.ndarray,
                    tokens: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch", reason="the torch reference needs the train extra")
    from picscope.training.captioner import make_net

    net = make_net(cfg, vocab)
    net.load_arrays(weights)
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(cells), torch.from_numpy(tokens), torch.arange(len(tokens)))
        return torch.log_softmax(logits, -1).numpy()


def test_numpy_decoder_reproduces_the_shipped_torch_network() -> None:
    weights, vocab, cfg = unpack(_shipped_arrays())
    cells = _cells(3)
    index = {w: i for i, w in enumerate(vocab)}
    captions = ["a dog runs through the snow", "two children play on the beach", "a man in a red shirt climbs a rock"]
    tokens = np.zeros((3, 9), np.int64)
    for row, c in enumerate(captions):
        ids = [BOS, *(index[w] for w in tokenize(c))][:9]
        tokens[row, : len(ids)] = ids
    expected = _torch_logprobs(weights, len(vocab), cfg, cells, tokens)
    got = Decoder(weights, vocab, cfg).score(cells, tokens)  # the incremental path beam search uses
    assert got.shape == (3, 9, len(vocab))
    np.testing.assert_allclose(got, expected, atol=2e-4)
    # and the model is trained: the true next words are far likelier than chance
    truth = [got[r, t, tokens[r, t + 1]] for r in range(3) for t in range(5)]
    assert np.mean(truth) > math.log(50 / len(vocab))


def test_numpy_decoder_reproduces_a_random_torch_network_of_another_shape() -> None:
    pytest.importorskip("torch", reason="the torch reference needs the train extra")
    from picscope.training.captioner import make_net

    cfg = DecoderConfig(d=64, heads=2, layers=3, ffn=96, max_len=12)
    net = make_net(cfg, 40, seed=3)
    weights = net.arrays()
    for name in weights:  # non-trivial norms and biases
        if name.endswith((".g", ".b", "_b", "b_in", "out_b")):
            weights[name] = weights[name] + np.random.default_rng(len(name)).normal(0, 0.3, weights[name].shape)
    tokens = np.random.default_rng(1).integers(1, 40, (2, 12))
    tokens[:, 0] = BOS
    cells = _cells(2, seed=2)
    expected = _torch_logprobs(weights, 40, cfg, cells, tokens)
    np.testing.assert_allclose(Decoder(weights, [str(i) for i in range(40)], cfg).score(cells, tokens), expected,
                               atol=2e-4)


def test_packing_keeps_the_weights_within_int8_rounding() -> None:
    rng = np.random.default_rng(0)
    cfg = DecoderConfig(d=8, heads=2, layers=1, ffn=16, max_len=4)
    weights = {"l0.ff1": rng.normal(0, 1, (16, 8)).astype(np.float32), "ln_f.g": rng.normal(1, 0.1, 8).astype(
        np.float32)}
    packed = pack(weights, ["<pad>", "<bos>", "<eos>", "<unk>", "dog"], cfg)
    assert packed["l0.ff1.q"].dtype == np.int8 and packed["ln_f.g"].dtype == np.float16
    back, vocab, cfg2 = unpack(packed)
    assert vocab[-1] == "dog" and cfg2 == cfg
    step = np.abs(weights["l0.ff1"]).max(axis=1, keepdims=True) / 127
    assert (np.abs(back["l0.ff1"] - weights["l0.ff1"]) <= step / 2 + 1e-7).all()


def test_training_end_to_end_writes_weights_the_captioner_loads(tmp_path: Path) -> None:
    """A tiny run of the real recipe (whitening, length batches, early stopping, folding, packing, saving)."""
    pytest.importorskip("torch", reason="training needs the train extra")
    from dataclasses import replace

    from picscope.training.captioner import CaptionerRecipe, save_weights, train_captioner

    words = ["dog", "cat", "runs", "sits", "snow", "grass"]
    captions = [[f"a {words[i % 2]} {words[2 + i % 2]} on the {words[4 + i % 2]}"] * 5 for i in range(24)]
    cells = _cells(24, seed=1)
    recipe = replace(CaptionerRecipe(), model=DecoderConfig(d=32, heads=2, layers=1, ffn=64, max_len=10),
                     epochs=2, input_dim=16, batch_captions=40, warmup_steps=2, min_count=1, log_every=1000)
    logs: list[str] = []
    arrays, summary = train_captioner(cells[:20], captions[:20], cells[20:], captions[20:], recipe,
                                      log=logs.append)
    assert summary["best_epoch"] in (1, 2) and len(summary["history"]) == 2
    assert summary["vocab"] == 4 + len({w for c in captions for w in tokenize(c[0])})
    assert any("epoch 2" in line for line in logs)
    digest = save_weights(arrays, tmp_path / WEIGHTS_NAME)
    cap = BundledCaptioner(tmp_path / WEIGHTS_NAME)
    assert cap.name == f"captioner-v1@{digest[:12]}"
    out = cap.caption_grids(cells[20:22])  # raw cells: the whitening is folded into the first layer
    assert len(out) == 2 and all(set(tokenize(c)) <= set(cap.decoder.vocab) for c in out)


# --- beam search -----------------------------------------------------------------------------------------------

def test_beam_of_one_is_greedy_decoding() -> None:
    weights, vocab, cfg = unpack(_shipped_arrays())
    dec = Decoder(weights, vocab, cfg)
    cells = _cells(2, seed=5)
    beam1 = dec.beam_search(cells, beam=1, max_words=12)
    for row in range(2):
        memory = [(k[row : row + 1], v[row : row + 1]) for k, v in dec.encode(cells)]
        tok, cache, words = np.array([BOS]), None, []
        for t in range(13):
            logp, cache = dec.step(tok, t, memory, cache)
            logp[0, [0, 1, 3]] = -np.inf
            if t == 0:
                logp[0, EOS] = -np.inf
            if t == 12:
                break
            nxt = int(np.argmax(logp[0]))
            if nxt == EOS:
                break
            words.append(nxt)
            tok = np.array([nxt])
        assert beam1[row] == words


def test_beam_search_handles_batches_and_one_photo_alike() -> None:
    dec = load_captioner().decoder
    cells = _cells(3, seed=7)
    together = dec.beam_search(cells, beam=3)
    alone = [dec.beam_search(cells[i : i + 1], beam=3)[0] for i in range(3)]
    assert together == alone
    assert all(1 <= len(ids) <= 20 for ids in together)


@pytest.mark.data
def test_captions_of_real_dev_photos_look_like_captions(shared_data: Path) -> None:
    from picscope.imageio import load_image
    from picscope.training.data import flickr8k

    dev = flickr8k("dev", shared_data)
    rows = [0, 100, 200, 300, 400, 500]
    captions = load_captioner().caption_images([load_image(str(dev.paths[i])) for i in rows])
    vocab = set(load_captioner().decoder.vocab)
    overlaps = 0
    for row, caption in zip(rows, captions, strict=True):
        words = tokenize(caption)
        assert 4 <= len(words) <= 20, caption
        assert words[0] in {"a", "an", "the", "two", "three", "several", "many", "some", "people", "children",
                            "group"}, caption
        assert words[-1] not in {"a", "an", "the", "and", "of", "in", "on", "with", "is", "are"}, caption
        assert all(w in vocab for w in words) and "<unk>" not in words, caption
        assert not any(a == b for a, b in itertools.pairwise(words)), caption  # no stutter
        content = {w for w in words if len(w) > 3}
        human = {w for c in dev.captions[row] for w in tokenize(c)}
        overlaps += bool(content & human)
    assert overlaps >= 4, captions  # most captions name something the people who saw the photo named


# --- the API ---------------------------------------------------------------------------------------------------

def test_captioner_is_lazy_pinned_and_cached() -> None:
    cap = BundledCaptioner()
    assert cap._decoder is None  # nothing read yet
    digest = SHIPPED.with_suffix(".sha256").read_text().split()[0]
    assert cap.name == f"captioner-v1@{digest[:12]}"
    assert load_captioner() is load_captioner()
    assert cap.caption_grids(np.zeros((0, 49, 1280), np.float16)) == []
    assert cap.caption_images([]) == []
    out = cap.caption_grids(_cells(2).astype(np.float16))
    assert len(out) == 2 and all(isinstance(c, str) and c for c in out)


def test_photos_of_any_mode_and_size_get_captions() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (120, 300), np.uint8), "L"),
              Image.fromarray(rng.integers(0, 255, (500, 240, 4), np.uint8), "RGBA"),
              Image.new("P", (64, 64))]
    out = load_captioner().caption_images(photos)
    assert len(out) == 3 and all(c.strip() for c in out)


def test_wrong_grid_shape_is_a_clear_error() -> None:
    with pytest.raises(CaptionerError, match=r"grids must have shape \(n, 49, 1280\), not \(2, 7, 7, 1280\)"):
        load_captioner().caption_grids(np.zeros((2, 7, 7, 1280), np.float32))


def test_corrupt_or_missing_weights_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / WEIGHTS_NAME
    shutil.copy(SHIPPED, bad)
    shutil.copy(SHIPPED.with_suffix(".sha256"), bad.with_suffix(".sha256"))
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CaptionerError, match="is corrupt"):
        BundledCaptioner(bad).caption_grids(_cells(1))
    bad.with_suffix(".sha256").unlink()
    with pytest.raises(CaptionerError, match="sha256 is missing"):
        BundledCaptioner(bad)
    with pytest.raises(CaptionerError, match="is missing"):
        BundledCaptioner(tmp_path / "nothing.npz")


def test_commands_reject_bad_options_with_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from picscope.cli import main

    assert main(["eval-captioner", "--beam", "0"]) == 2
    assert "--beam" in capsys.readouterr().err
    assert main(["train-captioner", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and "Traceback" not in err


# --- the scorers, on hand-computed cases ------------------------------------------------------------------------

def test_bleu_on_hand_computed_cases() -> None:
    pytest.importorskip("pycocoevalcap", reason="the caption scorers need the train extra")
    from picscope.eval.captionscore import caption_scores

    # 7 words vs 6: precisions 6/7, 4/6, 3/5, 2/4; no brevity penalty
    s = caption_scores(["A dog runs on the green grass."], [["a dog runs on the grass"]])
    assert s["bleu1"] == pytest.approx(6 / 7, abs=1e-6)
    assert s["bleu4"] == pytest.approx((6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25, abs=1e-6)
    # every n-gram matches but 4 words vs 6: brevity penalty exp(1 − 6/4)
    s = caption_scores(["a dog runs on"], [["a dog runs on the grass"]])
    assert s["bleu4"] == pytest.approx(math.exp(-0.5), abs=1e-6)


def test_cider_d_on_hand_computed_cases() -> None:
    pytest.importorskip("pycocoevalcap", reason="the caption scorers need the train extra")
    from picscope.eval.captionscore import caption_scores

    refs = [["a dog", "A dog."], ["a cat", "a cat"]]
    # "a" is in both photos' references (idf 0); "dog", "cat", "a dog", "a cat" have idf ln 2. A candidate equal
    # to its references has cosine 1 for n = 1, 2 and no 3-, 4-grams: 10 × (1 + 1 + 0 + 0) / 4 = 5
    assert caption_scores(["a dog", "a cat"], refs)["cider"] == pytest.approx(5.0, abs=1e-9)
    # "dog": cosine 1 for unigrams, no bigrams, one word short: 10 × exp(−1/72) / 4; mean with the 5 above
    assert caption_scores(["dog", "a cat"], refs)["cider"] == pytest.approx((2.5 * math.exp(-1 / 72) + 5) / 2,
                                                                          abs=1e-9)


def test_consensus_picks_the_caption_most_like_the_others() -> None:
    pytest.importorskip("pycocoevalcap", reason="the caption scorers need the train extra")
    from picscope.eval.captionscore import consensus_indices

    # the odd caption out is never chosen; "a man rides a bike" is in both other bike captions; of a duplicated
    # caption the first copy wins; "a dog runs" is shared by "a brown dog runs"
    groups = [["a dog in the snow", "a man rides a bike", "a man rides a bike down a hill", "a man rides a red bike"],
              ["a cat on a sofa", "two girls play on the beach", "two girls play on the beach", "girls on a beach"],
              ["a black dog", "a brown dog runs", "a dog runs", "a man"]]
    assert consensus_indices(groups) == [1, 1, 2]


# --- dev scores (slow: the whole dev split) ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.data
def test_captioner_beats_the_nearest_neighbour_baseline_on_dev(shared_data: Path) -> None:
    pytest.importorskip("pycocoevalcap", reason="the caption scorers need the train extra")
    from picscope.training.caption_eval import evaluate_captioner

    report = evaluate_captioner(speed_photos=8)
    for part in ("all", "held_out"):
        model, base = report["scores"][part]["model"], report["scores"][part]["baseline"]
        assert model["bleu4"] > base["bleu4"], (part, model, base)
        assert model["cider"] > base["cider"], (part, model, base)
