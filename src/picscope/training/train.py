"""Contrastive training of small projection heads on frozen tower features (LiT-style, towers frozen).

Symmetric InfoNCE with a learned temperature; all five captions of each image (multi-positive) or one random
caption, and a random horizontal flip per image per step; early stopping on Flickr8k dev text→image recall.
Deterministic for a given seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from picscope.encoders.bundled_model import apply_head, image_input
from picscope.training.metrics import image_to_text, text_to_image


@dataclass
class TrainConfig:
    dim: int = 256
    hidden: int = 1024
    use_logits: bool = True
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    dropout: float = 0.2
    patience: int = 8
    flip_prob: float = 0.5
    all_captions: bool = True  # all 5 captions of each image in every step (multi-positive image→text loss)
    seed: int = 0


@dataclass
class Features:
    pooled: np.ndarray  # (n, 1280)
    logits: np.ndarray  # (n, 1000)
    pooled_flip: np.ndarray
    logits_flip: np.ndarray
    text: np.ndarray  # (n * 5, 384), captions of image i at rows 5i..5i+4
    words: np.ndarray | None = None  # (n * 5,) word count of each caption


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    config: TrainConfig
    best_epoch: int
    dev: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _head(torch: Any, d_in: int, cfg: TrainConfig) -> Any:
    nn = torch.nn

    class Head(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(d_in, cfg.hidden)
            self.fc2 = nn.Linear(cfg.hidden, cfg.dim)
            self.skip = nn.Linear(d_in, cfg.dim, bias=False)
            self.drop = nn.Dropout(cfg.dropout)

        def forward(self, x: Any) -> Any:
            h = self.fc2(self.drop(torch.nn.functional.gelu(self.fc1(x)))) + self.skip(x)
            return torch.nn.functional.normalize(h, dim=-1)

    return Head()


@dataclass
class _Inputs:
    """Training and dev inputs as tensors, standardised by the training set's mean and deviation."""

    mu_i: np.ndarray
    sd_i: np.ndarray
    mu_t: np.ndarray
    sd_t: np.ndarray
    ti: Any  # (n, d_img) images
    ti_flip: Any  # (n, d_img) the same images flipped
    tt: Any  # (n, 5, d_txt) the captions of each image
    dev_i: Any
    dev_t: Any
    dev_owner: np.ndarray  # the dev image of each dev caption


@dataclass
class _Heads:
    """The two projection heads and the learned temperature (as a log scale)."""

    img: Any
    txt: Any
    logit_scale: Any

    def parameters(self) -> list[Any]:
        return [*self.img.parameters(), *self.txt.parameters(), self.logit_scale]

    def mode(self, training: bool) -> None:
        self.img.train(training)
        self.txt.train(training)


def train(
    train_f: Features,
    dev_f: Features,
    cfg: TrainConfig,
    log: Callable[[str], None] = print,
) -> TrainResult:
    torch = _import_torch()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = _standardise(torch, train_f, dev_f, cfg)
    heads = _Heads(_head(torch, data.ti.shape[1], cfg), _head(torch, train_f.text.shape[1], cfg),
                   torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07)))))
    best, history = _fit(torch, heads, data, cfg, rng, log)
    weights = _weights(data, cfg, best)
    dev = evaluate(weights, dev_f)
    return TrainResult(weights, cfg, int(best["epoch"]), dev, history, time.perf_counter() - started)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        from picscope.errors import EncoderError

        raise EncoderError(f"training needs torch: pip install 'picscope[train]' ({exc})") from exc
    return torch


def _standardise(torch: Any, train_f: Features, dev_f: Features, cfg: TrainConfig) -> _Inputs:
    xi = image_input(train_f.pooled, train_f.logits, cfg.use_logits)
    xi_flip = image_input(train_f.pooled_flip, train_f.logits_flip, cfg.use_logits)
    mu_i, sd_i = xi.mean(0), xi.std(0) + 1e-6
    mu_t, sd_t = train_f.text.mean(0), train_f.text.std(0) + 1e-6
    dev_xi = image_input(dev_f.pooled, dev_f.logits, cfg.use_logits)
    return _Inputs(
        mu_i, sd_i, mu_t, sd_t,
        ti=torch.from_numpy((xi - mu_i) / sd_i),
        ti_flip=torch.from_numpy((xi_flip - mu_i) / sd_i),
        tt=torch.from_numpy((train_f.text - mu_t) / sd_t).reshape(len(xi), 5, -1),
        dev_i=torch.from_numpy((dev_xi - mu_i) / sd_i),
        dev_t=torch.from_numpy((dev_f.text - mu_t) / sd_t),
        dev_owner=np.repeat(np.arange(len(dev_f.pooled)), 5),
    )


def _fit(
    torch: Any, heads: _Heads, data: _Inputs, cfg: TrainConfig, rng: np.random.Generator, log: Callable[[str], None]
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train epoch by epoch, keep the heads of the best dev epoch, stop after `patience` epochs without gain."""
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = int(np.ceil(len(data.ti) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
    )
    best: dict[str, Any] = {"score": -1.0}
    history: list[dict[str, float]] = []
    bad_epochs = 0
    for epoch in range(1, cfg.epochs + 1):
        loss = _epoch(torch, heads, data, cfg, rng, opt, sched)
        m = _dev_recall(torch, heads, data)
        score = m["t2i_r@1"] + m["t2i_r@5"] + m["t2i_r@10"]
        history.append({"epoch": epoch, "loss": loss, **m})
        log(
            f"epoch {epoch:3d}  loss {loss:.3f}  dev R@1 {m['t2i_r@1']:.1f}  R@5 {m['t2i_r@5']:.1f}  "
            f"R@10 {m['t2i_r@10']:.1f}  T {1 / float(heads.logit_scale.detach().exp()):.3f}"
        )
        if score > best["score"]:
            best = {
                "score": score,
                "epoch": epoch,
                "img": {k: v.detach().clone() for k, v in heads.img.state_dict().items()},
                "txt": {k: v.detach().clone() for k, v in heads.txt.state_dict().items()},
            }
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                log(f"early stop: no dev improvement for {cfg.patience} epochs")
                break
    return best, history


def _epoch(
    torch: Any, heads: _Heads, data: _Inputs, cfg: TrainConfig, rng: np.random.Generator, opt: Any, sched: Any
) -> float:
    """One pass over the training images in random batches; the last batch's loss."""
    heads.mode(training=True)
    order = rng.permutation(len(data.ti))
    loss: Any = None
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        if len(idx) < 8:
            continue
        loss = _batch_loss(torch, heads, data, cfg, rng, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return float(loss.detach())


def _batch_loss(torch: Any, heads: _Heads, data: _Inputs, cfg: TrainConfig, rng: np.random.Generator,
                idx: np.ndarray) -> Any:
    """Symmetric InfoNCE over one batch: all five captions of each image, or one random caption."""
    functional = torch.nn.functional
    flip = torch.from_numpy(rng.random(len(idx)) < cfg.flip_prob)[:, None]
    x = torch.where(flip, data.ti_flip[idx], data.ti[idx])
    scale = heads.logit_scale.clamp(max=np.log(100)).exp()
    zi = heads.img(x)
    tt = data.tt
    if cfg.all_captions:
        zt = heads.txt(tt[idx].reshape(-1, tt.shape[-1]))  # (5B, d): captions of image j at 5j..5j+4
        logits = scale * zt @ zi.T  # (5B, B)
        owner = torch.arange(len(idx)).repeat_interleave(5)
        target = functional.one_hot(owner, len(idx)).float().T / 5.0  # (B, 5B)
        loss_t2i = functional.cross_entropy(logits, owner)
        loss_i2t = -(target * torch.log_softmax(logits.T, dim=1)).sum(1).mean()
        return (loss_t2i + loss_i2t) / 2
    zt = heads.txt(tt[idx, torch.from_numpy(rng.integers(0, 5, len(idx)))])
    logits = scale * zi @ zt.T
    labels = torch.arange(len(idx))
    return (functional.cross_entropy(logits, labels) + functional.cross_entropy(logits.T, labels)) / 2


def _dev_recall(torch: Any, heads: _Heads, data: _Inputs) -> dict[str, float]:
    heads.mode(training=False)
    with torch.no_grad():
        sim = (heads.txt(data.dev_t) @ heads.img(data.dev_i).T).numpy()
    return text_to_image(sim, data.dev_owner)


def _weights(data: _Inputs, cfg: TrainConfig, best: dict[str, Any]) -> dict[str, np.ndarray]:
    """The shipped weights: standardisation, the input flag, and the best epoch's heads as float32 arrays."""
    weights: dict[str, np.ndarray] = {
        "img_mu": data.mu_i.astype(np.float32),
        "img_sd": data.sd_i.astype(np.float32),
        "txt_mu": data.mu_t.astype(np.float32),
        "txt_sd": data.sd_t.astype(np.float32),
        "use_logits": np.array([1 if cfg.use_logits else 0], np.int32),
    }
    for prefix, state in (("img", best["img"]), ("txt", best["txt"])):
        for k, v in state.items():
            weights[f"{prefix}.{k}"] = v.numpy().astype(np.float32)
    return weights


# -- evaluation of one member's heads in numpy (the shipped encoder: picscope.encoders.bundled_model) ------


def embed_images_from_features(w: dict[str, np.ndarray], pooled: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return apply_head(w, "img", image_input(pooled, logits, bool(w["use_logits"][0])))


def evaluate(w: dict[str, np.ndarray], f: Features) -> dict[str, float]:
    zi = embed_images_from_features(w, f.pooled, f.logits)
    zt = apply_head(w, "txt", f.text)
    owner = np.repeat(np.arange(len(zi)), 5)
    sim = zt @ zi.T
    return {**text_to_image(sim, owner), **image_to_text(sim, owner)}


def labels_baseline(f: Features, label_emb: np.ndarray, temperature: float = 0.05) -> dict[str, float]:
    """The zero-shot `labels` encoder evaluated from the same cached features."""

    def softmax(a: np.ndarray) -> np.ndarray:
        a = a - a.max(axis=1, keepdims=True)
        e = np.exp(a)
        return e / e.sum(axis=1, keepdims=True)

    zi = np.sqrt(softmax(f.logits.astype(np.float64)))
    zt = np.sqrt(softmax((f.text @ label_emb.T).astype(np.float64) / temperature))
    owner = np.repeat(np.arange(len(zi)), 5)
    sim = (zt @ zi.T).astype(np.float32)
    return {**text_to_image(sim, owner), **image_to_text(sim, owner)}
