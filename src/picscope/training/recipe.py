"""The full recipe behind the `bundled` encoder: features → heads → caption memory → evaluation → files.

    picscope train-encoder            # ~3 min on 2 cores from scratch (features cached afterwards: ~1 min)

The shipped model is three parts, all in numpy at inference time:
1. projection heads (frozen EfficientNet-Lite0 pooled features + class log-probabilities → 256-d;
   frozen MiniLM → 256-d), trained with symmetric multi-positive InfoNCE;
2. a caption memory: for each Flickr8k *train* image, its head embedding (key) and the mean MiniLM embedding
   of its five captions (value). An image's second component is the softmax-weighted mean of the values of its
   k nearest keys: a "pseudo-caption" in MiniLM space, compared with the query's own MiniLM embedding;
3. the zero-shot ImageNet-label space of the `labels` encoder, with a small weight: the heads only know
   Flickr8k's world (people, dogs, outdoor scenes); this keeps everyday objects ("a cup of coffee") findable;
4. horizontal-flip test-time augmentation of the image side.
Image vector = [head_img ; sqrt(lam)·pseudo_caption ; sqrt(g)·sqrt(p_img)] / norm and text vector =
[head_txt ; sqrt(lam)·minilm ; sqrt(g)·sqrt(p_txt)] / norm, so one inner product is
(cos_head + lam·cos_memory + g·bhattacharyya_labels) / (1 + lam + g), and any vector store can search it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from picscope.training.data import flickr8k
from picscope.training.features import image_features, text_features
from picscope.training.metrics import image_to_text, text_to_image
from picscope.training.train import (
    Features,
    TrainConfig,
    apply_head,
    image_input,
    labels_baseline,
    train,
)

HEAD_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "skip.weight")


@dataclass(frozen=True)
class MemoryConfig:
    k: int = 30
    temperature: float = 0.05
    lam: float = 0.5
    flip_tta: bool = True
    labels: float = 0.1  # weight of the zero-shot ImageNet-label component (keeps everyday objects findable)
    labels_temperature: float = 0.05


def load_features(split: str, progress: Callable[[str], None] = print) -> Features:
    data = flickr8k(split)
    progress(f"{split}: image features for {len(data.paths)} photos (cached after the first run)")
    img = image_features(data.paths)
    progress(f"{split}: MiniLM features for {sum(map(len, data.captions))} captions")
    txt = text_features([c for caps in data.captions for c in caps])
    return Features(img["pooled"], img["logits"], img["pooled_flip"], img["logits_flip"], txt)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-12) / 127.0
    return np.round(x / scale).astype(np.int8), scale.astype(np.float32)


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale


class BundledModel:
    """Numpy inference for the heads + caption memory (what `BundledEncoder` runs)."""

    def __init__(self, heads: dict[str, np.ndarray], memory: dict[str, np.ndarray]) -> None:
        self.w = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in heads.items()}
        self.use_logits = bool(self.w["use_logits"][0])
        self.keys = dequantize_rows(memory["keys_q"], memory["keys_scale"])
        self.values = dequantize_rows(memory["values_q"], memory["values_scale"])
        cfg = json.loads(bytes(memory["config"]).decode())
        self.mem = MemoryConfig(**cfg)
        self.head_dim = int(self.w["img.fc2.weight"].shape[0])
        self.text_dim = int(self.values.shape[1])
        self.dim = self.head_dim + self.text_dim + (1000 if self.mem.labels > 0 else 0)
        self._label_emb: np.ndarray | None = None

    def label_embeddings(self) -> np.ndarray:
        if self._label_emb is None:
            from picscope.encoders.labels import LabelSpaceEncoder

            self._label_emb = LabelSpaceEncoder().label_embeddings()
        return self._label_emb

    def _pseudo_caption(self, z: np.ndarray, sims: np.ndarray) -> np.ndarray:
        k = min(self.mem.k, len(self.keys) - 1)
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        st = np.take_along_axis(sims, top, 1)
        w = np.exp((st - st.max(axis=1, keepdims=True)) / self.mem.temperature)
        w /= w.sum(axis=1, keepdims=True)
        v = np.einsum("nk,nkd->nd", w, self.values[top])
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def head_image(self, pooled: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return apply_head(self.w, "img", image_input(pooled, logits, self.use_logits))

    def image_vectors(
        self, pooled: np.ndarray, logits: np.ndarray, pooled_flip: np.ndarray | None, logits_flip: np.ndarray | None
    ) -> np.ndarray:
        z = self.head_image(pooled, logits)
        if self.mem.flip_tta and pooled_flip is not None and logits_flip is not None:
            z = z + self.head_image(pooled_flip, logits_flip)
            z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            logits = (logits + logits_flip) / 2
        sims = z @ self.keys.T
        parts = [z, np.sqrt(self.mem.lam) * self._pseudo_caption(z, sims)]
        if self.mem.labels > 0:
            parts.append(np.sqrt(self.mem.labels) * np.sqrt(_softmax(logits)))
        return _normalised(parts)

    def text_vectors(self, minilm: np.ndarray) -> np.ndarray:
        parts = [apply_head(self.w, "txt", minilm), np.sqrt(self.mem.lam) * minilm]
        if self.mem.labels > 0:
            sims = minilm @ self.label_embeddings().T
            parts.append(np.sqrt(self.mem.labels) * np.sqrt(_softmax(sims / self.mem.labels_temperature)))
        return _normalised(parts)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _normalised(parts: list[np.ndarray]) -> np.ndarray:
    out = np.concatenate(parts, axis=1)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def build_memory(heads: dict[str, np.ndarray], train_f: Features, cfg: MemoryConfig) -> dict[str, np.ndarray]:
    z = apply_head(heads, "img", image_input(train_f.pooled, train_f.logits, bool(heads["use_logits"][0])))
    if cfg.flip_tta:
        zf = apply_head(heads, "img", image_input(train_f.pooled_flip, train_f.logits_flip, True))
        z = z + zf
        z /= np.linalg.norm(z, axis=1, keepdims=True)
    values = train_f.text.reshape(len(z), 5, -1).mean(axis=1)
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    kq, ks = quantize_rows(z)
    vq, vs = quantize_rows(values)
    config = np.frombuffer(json.dumps(cfg.__dict__).encode(), dtype=np.uint8)
    return {"keys_q": kq, "keys_scale": ks, "values_q": vq, "values_scale": vs, "config": config}


def evaluate_model(model: BundledModel, f: Features) -> dict[str, float]:
    zi = model.image_vectors(f.pooled, f.logits, f.pooled_flip, f.logits_flip)
    zt = model.text_vectors(f.text)
    owner = np.repeat(np.arange(len(zi)), 5)
    sim = zt @ zi.T
    return {**text_to_image(sim, owner), **image_to_text(sim, owner)}


def shrink_heads(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fp16 for the big matrices (a few MB), fp32 for the normalisation statistics."""
    out: dict[str, np.ndarray] = {}
    for k, v in weights.items():
        out[k] = v.astype(np.float16) if v.ndim == 2 else v
    return out


def run_recipe(
    out_dir: Path,
    train_cfg: TrainConfig | None = None,
    mem_cfg: MemoryConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train from scratch (features cached), evaluate on dev against the labels baseline, write the files."""
    started = time.perf_counter()
    train_cfg = train_cfg or TrainConfig(hidden=512, dropout=0.5, weight_decay=0.2)
    mem_cfg = mem_cfg or MemoryConfig()
    train_f, dev_f = load_features("train", log), load_features("dev", log)
    from picscope.encoders.labels import LabelSpaceEncoder

    label_emb = LabelSpaceEncoder().label_embeddings()
    log("training projection heads (early stopping on dev)")
    result = train(train_f, dev_f, train_cfg, log=log)
    heads = shrink_heads(result.weights)
    memory = build_memory({k: v.astype(np.float32) for k, v in heads.items()}, train_f, mem_cfg)
    model = BundledModel(heads, memory)
    dev = evaluate_model(model, dev_f)
    baseline = labels_baseline(dev_f, label_emb)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, arrays in (("heads", heads), ("memory", memory)):
        path = out_dir / f"bundled-v1-{name}.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]
        files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out_dir / "bundled-v1.sha256").write_text("".join(f"{h}  {n}\n" for n, h in sorted(files.items())))
    summary = {
        "dev": dev,
        "labels_baseline_dev": baseline,
        "heads_only_dev": result.dev,
        "best_epoch": result.best_epoch,
        "train_config": train_cfg.__dict__,
        "memory_config": mem_cfg.__dict__,
        "seconds": time.perf_counter() - started,
        "files": files,
    }
    (out_dir / "bundled-v1-metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
