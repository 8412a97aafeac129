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


def train(
    train_f: Features,
    dev_f: Features,
    cfg: TrainConfig,
    log: Callable[[str], None] = print,
) -> TrainResult:
    try:
        import torch
    except ImportError as exc:
        from picscope.errors import EncoderError

        raise EncoderError(f"training needs torch: pip install 'picscope[train]' ({exc})") from exc

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    xi = image_input(train_f.pooled, train_f.logits, cfg.use_logits)
    xi_flip = image_input(train_f.pooled_flip, train_f.logits_flip, cfg.use_logits)
    mu_i, sd_i = xi.mean(0), xi.std(0) + 1e-6
    mu_t, sd_t = train_f.text.mean(0), train_f.text.std(0) + 1e-6
    norm_i = lambda a: (a - mu_i) / sd_i  # noqa: E731
    norm_t = lambda a: (a - mu_t) / sd_t  # noqa: E731
    ti = torch.from_numpy(norm_i(xi))
    ti_flip = torch.from_numpy(norm_i(xi_flip))
    tt = torch.from_numpy(norm_t(train_f.text)).reshape(len(xi), 5, -1)
    dev_i = torch.from_numpy(norm_i(image_input(dev_f.pooled, dev_f.logits, cfg.use_logits)))
    dev_t = torch.from_numpy(norm_t(dev_f.text))
    dev_owner = np.repeat(np.arange(len(dev_f.pooled)), 5)

    img_head = _head(torch, xi.shape[1], cfg)
    txt_head = _head(torch, train_f.text.shape[1], cfg)
    logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    params = [*img_head.parameters(), *txt_head.parameters(), logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = int(np.ceil(len(xi) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
    )
    best: dict[str, Any] = {"score": -1.0}
    history: list[dict[str, float]] = []
    bad_epochs = 0
    for epoch in range(1, cfg.epochs + 1):
        img_head.train()
        txt_head.train()
        order = rng.permutation(len(xi))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 8:
                continue
            flip = torch.from_numpy(rng.random(len(idx)) < cfg.flip_prob)[:, None]
            x = torch.where(flip, ti_flip[idx], ti[idx])
            scale = logit_scale.clamp(max=np.log(100)).exp()
            zi = img_head(x)
            if cfg.all_captions:
                zt = txt_head(tt[idx].reshape(-1, tt.shape[-1]))  # (5B, d): captions of image j at 5j..5j+4
                logits = scale * zt @ zi.T  # (5B, B)
                owner = torch.arange(len(idx)).repeat_interleave(5)
                target = torch.nn.functional.one_hot(owner, len(idx)).float().T / 5.0  # (B, 5B)
                loss_t2i = torch.nn.functional.cross_entropy(logits, owner)
                loss_i2t = -(target * torch.log_softmax(logits.T, dim=1)).sum(1).mean()
                loss = (loss_t2i + loss_i2t) / 2
            else:
                zt = txt_head(tt[idx, torch.from_numpy(rng.integers(0, 5, len(idx)))])
                logits = scale * zi @ zt.T
                labels = torch.arange(len(idx))
                loss = (
                    torch.nn.functional.cross_entropy(logits, labels)
                    + torch.nn.functional.cross_entropy(logits.T, labels)
                ) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        img_head.eval()
        txt_head.eval()
        with torch.no_grad():
            sim = (txt_head(dev_t) @ img_head(dev_i).T).numpy()
        m = text_to_image(sim, dev_owner)
        score = m["t2i_r@1"] + m["t2i_r@5"] + m["t2i_r@10"]
        history.append({"epoch": epoch, "loss": float(loss.detach()), **m})
        log(
            f"epoch {epoch:3d}  loss {float(loss.detach()):.3f}  dev R@1 {m['t2i_r@1']:.1f}  R@5 {m['t2i_r@5']:.1f}  "
            f"R@10 {m['t2i_r@10']:.1f}  T {1 / float(logit_scale.detach().exp()):.3f}"
        )
        if score > best["score"]:
            best = {
                "score": score,
                "epoch": epoch,
                "img": {k: v.detach().clone() for k, v in img_head.state_dict().items()},
                "txt": {k: v.detach().clone() for k, v in txt_head.state_dict().items()},
            }
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                log(f"early stop: no dev improvement for {cfg.patience} epochs")
                break
    weights: dict[str, np.ndarray] = {
        "img_mu": mu_i.astype(np.float32),
        "img_sd": sd_i.astype(np.float32),
        "txt_mu": mu_t.astype(np.float32),
        "txt_sd": sd_t.astype(np.float32),
        "use_logits": np.array([1 if cfg.use_logits else 0], np.int32),
    }
    for prefix, state in (("img", best["img"]), ("txt", best["txt"])):
        for k, v in state.items():
            weights[f"{prefix}.{k}"] = v.numpy().astype(np.float32)
    dev = evaluate(weights, dev_f)
    return TrainResult(weights, cfg, int(best["epoch"]), dev, history, time.perf_counter() - started)


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
