"""Encoder factory and backends: `labels` on real photos, `hf:` plumbing with a tiny random CLIP saved locally."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from picscope.demo import sample_images
from picscope.encoders import DualEncoder, make_encoder
from picscope.errors import EncoderError


def test_unknown_spec_is_a_clear_error() -> None:
    with pytest.raises(EncoderError, match="unknown encoder spec 'nope'"):
        make_encoder("nope")
    with pytest.raises(EncoderError, match="hf: needs a model"):
        make_encoder("hf")


def test_labels_encoder_is_normalised_and_ranks_described_photos() -> None:
    enc = make_encoder("labels")
    assert isinstance(enc, DualEncoder)
    samples = sample_images()
    names = list(samples)
    imgs = enc.embed_images([samples[n][0] for n in names])
    assert imgs.shape == (len(names), enc.dim) and imgs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-5)
    probes = {"coffee.jpg": "a cup of coffee", "cat.jpg": "a tabby cat", "cameraman.png": "a camera on a tripod"}
    txt = enc.embed_texts(list(probes.values()))
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    best = [names[i] for i in (txt @ imgs.T).argmax(axis=1)]
    assert best == list(probes)


def _tiny_clip(folder: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True)
    chars = list("abcdefghijklmnopqrstuvwxyz ")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    proc = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
    )
    cfg = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    del transformers
    import torch

    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def test_hf_backend_loads_a_local_clip_and_embeds(tmp_path: Path) -> None:
    folder = _tiny_clip(tmp_path / "tiny-clip")
    enc = make_encoder(f"hf:{folder}")
    assert enc.dim == 24 and enc.name == f"hf:{folder}"
    imgs = enc.embed_images([im for im, _ in list(sample_images().values())[:3]])
    txt = enc.embed_texts(["a cat", "a dog on the beach"])
    assert imgs.shape == (3, 24) and txt.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(txt[0], txt[1])
    # batch-size invariance of the plumbing
    one = enc.embed_texts(["a cat"])
    np.testing.assert_allclose(one[0], txt[0], atol=1e-5)


def test_hf_backend_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="cannot load model/processor"):
        make_encoder(f"hf:{tmp_path / 'no-such-model'}")


def test_open_clip_missing_is_a_clear_error() -> None:
    try:
        import open_clip  # noqa: F401
    except Exception:
        with pytest.raises(EncoderError, match="open-clip"):
            make_encoder("open-clip:ViT-B-32/laion2b_s34b_b79k")
    else:  # pragma: no cover - only where open_clip is installed
        pytest.skip("open_clip is installed here")
