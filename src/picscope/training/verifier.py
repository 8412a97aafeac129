"""Training of the `bundled` image–text matching verifier (needs the `train` extra: torch).

The model (inference in `picscope.models.verifier`, numpy only) scores how well a text matches an image from
the frozen towers' fine-grained outputs: EfficientNet-Lite0's 7×7 head cells and MiniLM's token states.

- Cells are projected 1280 → d by a PCA fitted on train cells (fixed, so every photo's cells are computed once)
  and normalised; the mean cell is a 50th cell.
- Each token is mapped into the same space by a small MLP with a linear skip and normalised.
- Late interaction: each token attends to the cells by softmax(λ·cos) and scores the attended cosine; token
  scores are pooled with learned, text-dependent weights (`s_li`).
- Matching head: for each token, [token, attended cell mix, their product] → MLP → a token score, pooled with
  the same weights (`s_x`). The score is `s_li · scale + s_x`.

Training: Flickr8k train captions in groups (the gold photo, photos the bundled dual encoder ranks high for the
caption, photos whose captions MiniLM finds close, random ones), softmax cross-entropy over each group, plus an
in-batch contrastive loss on `s_li` alone (it trains the attention first). Early stopping and the fusion weight
use dev's 5th captions only; dev captions 1–4 are for reporting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MAX_TOKENS = 32


@dataclass
class VerifierConfig:
    dim: int = 256
    hidden: int = 768
    head_hidden: int = 128
    lam: float = 10.0  # softmax sharpness of token→cell attention (on cosines)
    group: int = 16
    hard: int = 9  # dual-encoder hard negatives per group
    text_hard: int = 4  # MiniLM caption-neighbour negatives per group
    mine_top: int = 40  # hard negatives are drawn from this many top-ranked wrong photos
    batch: int = 48  # captions per step
    epochs: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.01
    dropout: float = 0.1
    seed: int = 0
    threads: int = 1


@dataclass
class TrainData:
    """Everything training reads. Rows of `grids` are photos; captions of photo i are rows 5i..5i+4."""

    cells: np.ndarray  # (n_photos, 49, d) float32: the head cells after the PCA below
    pca_mean: np.ndarray  # (1280,)
    pca: np.ndarray  # (d, 1280)
    states: np.ndarray  # (tokens, 384) float16
    offsets: np.ndarray  # (n_captions + 1,)
    train_photos: np.ndarray  # photo rows used for training
    dev_photos: np.ndarray  # photo rows of dev
    hard: np.ndarray  # (n_captions, mine_top) photo rows the dual encoder ranks high (train captions only used)
    text_hard: np.ndarray  # (n_captions, mine_top) photo rows with MiniLM-close captions
    dev_cands: np.ndarray  # (n_dev_captions, 20) dual-encoder top 20 over dev photos (photo rows)
    dev_scores: np.ndarray  # (n_dev_captions, 20) their dual-encoder scores
    dev_captions: np.ndarray  # (n_dev_captions,) caption rows
    dev_gold: np.ndarray  # (n_dev_captions,) photo row


@dataclass
class VerifierResult:
    weights: dict[str, np.ndarray]
    config: VerifierConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def build_model(torch: Any, cfg: VerifierConfig) -> Any:
    nn = torch.nn
    f = torch.nn.functional

    class Verifier(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.t1 = nn.Linear(384, cfg.hidden)
            self.t2 = nn.Linear(cfg.hidden, cfg.dim)
            self.tskip = nn.Linear(384, cfg.dim, bias=False)
            self.tw = nn.Linear(384, 1)
            self.h1 = nn.Linear(3 * cfg.dim, cfg.head_hidden)
            self.h2 = nn.Linear(cfg.head_hidden, 1)
            self.scale = nn.Parameter(torch.tensor(10.0))
            self.drop = nn.Dropout(cfg.dropout)

        def cells(self, c: Any) -> Any:  # (n, 49, d) PCA cells -> (n, 50, d) unit rows
            c = torch.cat([c, c.mean(dim=1, keepdim=True)], dim=1)
            return f.normalize(c, dim=-1)

        def tokens(self, h: Any, mask: Any) -> tuple[Any, Any]:  # (m, T, 384) -> (m, T, d) unit, (m, T) weights
            q = self.t2(self.drop(f.gelu(self.t1(h)))) + self.tskip(h)
            w = f.softplus(self.tw(h)).squeeze(-1) * mask
            return f.normalize(q, dim=-1), w / w.sum(dim=1, keepdim=True).clamp_min(1e-6)

        def li_scores(self, q: Any, w: Any, c: Any) -> Any:
            """Late interaction only: q (m, T, d), w (m, T), c (G, 50, d) shared by all texts -> (m, G)."""
            sim = torch.einsum("mtd,gcd->mgtc", q, c)
            att = torch.softmax(cfg.lam * sim, dim=-1)
            return ((att * sim).sum(-1) * w[:, None, :]).sum(-1)

        def pair_scores(self, q: Any, w: Any, c: Any) -> tuple[Any, Any]:
            """q (m, T, d), w (m, T), c (m, G, 50, d) -> (s_li, s_x) each (m, G)."""
            sim = torch.einsum("mtd,mgcd->mgtc", q, c)
            att = torch.softmax(cfg.lam * sim, dim=-1)
            s_tok = (att * sim).sum(-1)  # (m, G, T)
            s_li = (s_tok * w[:, None, :]).sum(-1)
            mix = torch.einsum("mgtc,mgcd->mgtd", att, c)
            qq = q[:, None].expand_as(mix)
            x = self.h2(self.drop(f.gelu(self.h1(torch.cat([qq, mix, qq * mix], dim=-1))))).squeeze(-1)
            s_x = (x * w[:, None, :]).sum(-1)
            return s_li, s_x

        def score(self, q: Any, w: Any, c: Any) -> Any:
            s_li, s_x = self.pair_scores(q, w, c)
            return s_li * self.scale + s_x

    return Verifier()


def export_weights(model: Any, pca_mean: np.ndarray, pca: np.ndarray) -> dict[str, np.ndarray]:
    out = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    return {**out, "pca_mean": pca_mean.astype(np.float32), "pca": pca.astype(np.float32)}


def fit_pca(grids: np.ndarray, photos: np.ndarray, dim: int, seed: int = 0, sample: int = 60_000
            ) -> tuple[np.ndarray, np.ndarray]:
    """(mean (1280,), components (dim, 1280)) of the head cells of `photos` (a random sample of cells)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(photos) * 49, size=min(sample, len(photos) * 49), replace=False)
    x = np.stack([np.asarray(grids[photos[i // 49], i % 49], np.float32) for i in np.sort(pick)])
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:dim].astype(np.float32)


def project_cells(grids: np.ndarray, mean: np.ndarray, pca: np.ndarray, chunk: int = 500) -> np.ndarray:
    """(n, 49, 1280) -> (n, 49, d) float32."""
    out = np.zeros((len(grids), grids.shape[1], len(pca)), np.float32)
    for s in range(0, len(grids), chunk):
        out[s : s + chunk] = (np.asarray(grids[s : s + chunk], np.float32) - mean) @ pca.T
    return out


def _pad_tokens(data: TrainData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    length = int(min(MAX_TOKENS, np.diff(data.offsets)[rows].max()))
    h = np.zeros((len(rows), length, data.states.shape[1]), np.float32)
    m = np.zeros((len(rows), length), np.float32)
    for i, r in enumerate(rows):
        a, b = int(data.offsets[r]), int(data.offsets[r + 1])
        b = min(b, a + MAX_TOKENS)
        h[i, : b - a] = data.states[a:b]
        m[i, : b - a] = 1
    return h, m


def _groups(data: TrainData, caps: np.ndarray, cfg: VerifierConfig, rng: np.random.Generator) -> np.ndarray:
    """(len(caps), group) photo rows: column 0 is the gold photo."""
    train = data.train_photos
    out = np.zeros((len(caps), cfg.group), np.int64)
    for i, r in enumerate(caps):
        gold = int(r) // 5
        picked = [gold]
        hard = [int(p) for p in data.hard[r] if p != gold]
        text_hard = [int(p) for p in data.text_hard[r] if p != gold]
        for pool, n in ((hard, cfg.hard), (text_hard, cfg.text_hard)):
            choice = rng.permutation(len(pool))
            for j in choice:
                if n <= 0:
                    break
                if pool[j] not in picked:
                    picked.append(pool[j])
                    n -= 1
        while len(picked) < cfg.group:
            p = int(train[rng.integers(len(train))])
            if p not in picked:
                picked.append(p)
        out[i] = picked[: cfg.group]
    return out


def dev_scores(model: Any, torch: Any, data: TrainData, caps: np.ndarray) -> np.ndarray:
    """(len(caps), 20) verifier scores of each dev caption's dual-encoder top 20."""
    index = {int(r): i for i, r in enumerate(data.dev_captions)}
    out = np.zeros((len(caps), data.dev_cands.shape[1]), np.float32)
    model.eval()
    with torch.no_grad():
        photos = np.unique(data.dev_cands[[index[int(r)] for r in caps]])
        cell_of = {int(p): i for i, p in enumerate(photos)}
        cells = model.cells(torch.from_numpy(data.cells[photos]))
        for s in range(0, len(caps), 64):
            rows = caps[s : s + 64]
            h, m = _pad_tokens(data, rows)
            q, w = model.tokens(torch.from_numpy(h), torch.from_numpy(m))
            cand = data.dev_cands[[index[int(r)] for r in rows]]
            c = cells[torch.from_numpy(np.vectorize(cell_of.get)(cand))]
            out[s : s + len(rows)] = model.score(q, w, c).numpy()
    model.train()
    return out


def fused_recall(enc: np.ndarray, ver: np.ndarray, hit: np.ndarray, weight: float) -> dict[str, float]:
    """Recall@1/5/10 of z(encoder) + weight · z(verifier) over each row's candidates; `hit` marks the gold one."""
    def z(a: np.ndarray) -> np.ndarray:
        return (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-6)

    s = z(enc) + weight * z(ver)
    rank = (s > (s * hit).sum(1, keepdims=True)).sum(1)  # wrong candidates scoring above the gold one
    has = hit.any(1)
    return {f"R@{k}": float(100 * np.mean(has & (rank < k))) for k in (1, 5, 10)}


def evaluate(model: Any, torch: Any, data: TrainData, caps: np.ndarray,
             weights: tuple[float, ...]) -> dict[float, dict[str, float]]:
    index = np.array([int(np.nonzero(data.dev_captions == r)[0][0]) for r in caps])
    ver = dev_scores(model, torch, data, caps)
    hit = data.dev_cands[index] == data.dev_gold[index, None]
    return {w: fused_recall(data.dev_scores[index], ver, hit, w) for w in weights}


def step_losses(torch: Any, model: Any, data: TrainData, rows: np.ndarray, groups: np.ndarray) -> tuple[Any, Any]:
    """The two losses of one step: softmax over each caption's group (gold first), and in-batch contrastive on the
    late-interaction score (every caption against every caption's gold photo)."""
    flat = np.unique(groups)
    where = np.searchsorted(flat, groups)
    cells = model.cells(torch.from_numpy(data.cells[flat]))
    h, m = _pad_tokens(data, rows)
    q, w = model.tokens(torch.from_numpy(h), torch.from_numpy(m))
    logits = model.score(q, w, cells[torch.from_numpy(where)])
    loss_group = torch.nn.functional.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long))
    s_li = model.li_scores(q, w, cells[torch.from_numpy(where[:, 0])])
    loss_batch = torch.nn.functional.cross_entropy(s_li * model.scale, torch.arange(len(rows)))
    return loss_group, loss_batch


def train_verifier(data: TrainData, cfg: VerifierConfig, log: Callable[[str], None] = print,
                   max_minutes: float | None = None,
                   epoch_log: Callable[[int, dict[str, np.ndarray]], None] | None = None) -> VerifierResult:
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(torch, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    caps = np.concatenate([np.arange(5 * p, 5 * p + 5) for p in data.train_photos])
    steps_per_epoch = len(caps) // cfg.batch
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    tune = data.dev_captions[data.dev_captions % 5 == 4]  # the 5th caption of each dev photo
    t0 = time.perf_counter()
    result = VerifierResult({}, cfg)
    best = -1.0
    step = 0
    for epoch in range(cfg.epochs):
        order = rng.permutation(caps)
        for s in range(steps_per_epoch):
            rows = order[s * cfg.batch : (s + 1) * cfg.batch]
            loss_group, loss_batch = step_losses(torch, model, data, rows, _groups(data, rows, cfg, rng))
            loss = loss_group + 0.5 * loss_batch
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                log(f"epoch {epoch} step {step}/{total} loss {loss_group.item():.3f}/{loss_batch.item():.3f} "
                    f"{time.perf_counter() - t0:.0f}s")
            if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
                break
        scores = evaluate(model, torch, data, tune, (0.5, 0.75, 1.0, 1.5))
        wbest = max(scores, key=lambda w: scores[w]["R@1"] + 0.5 * scores[w]["R@5"])
        row = {"epoch": epoch, "weight": wbest, **scores[wbest], "seconds": time.perf_counter() - t0}
        result.history.append(row)
        log(f"dev (5th captions) {row}")
        if epoch_log is not None:
            epoch_log(epoch, export_weights(model, data.pca_mean, data.pca))
        if scores[wbest]["R@1"] + 0.5 * scores[wbest]["R@5"] > best:
            best = scores[wbest]["R@1"] + 0.5 * scores[wbest]["R@5"]
            result.weights, result.best = export_weights(model, data.pca_mean, data.pca), row
        if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
            log("time budget reached")
            break
    result.seconds = time.perf_counter() - t0
    return result


def config_dict(cfg: VerifierConfig) -> dict[str, Any]:
    return asdict(cfg)


def calibrate(scores: np.ndarray, hit: np.ndarray) -> tuple[float, float]:
    """Logistic fit P(match) = σ(a·score + b) of gold vs. wrong candidates: Newton steps on standardised scores,
    each step halved until the log-likelihood improves (no dependency)."""
    raw = scores.ravel().astype(np.float64)
    y = hit.ravel().astype(np.float64)
    mu, sd = float(raw.mean()), float(raw.std()) or 1.0
    x = (raw - mu) / sd
    theta = np.zeros(2)

    def nll(t: np.ndarray) -> float:
        z = t[0] * x + t[1]
        return float(np.sum(np.logaddexp(0.0, z) - y * z))

    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(theta[0] * x + theta[1], -40, 40)))
        g = np.array([np.sum((p - y) * x), np.sum(p - y)])
        w = p * (1 - p)
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale, before = 1.0, nll(theta)
        while scale > 1e-4 and nll(theta - scale * step) > before:
            scale /= 2
        theta = theta - scale * step
        if np.abs(scale * step).max() < 1e-9:
            break
    a = theta[0] / sd
    return float(a), float(theta[1] - a * mu)


def save_verifier(weights: dict[str, np.ndarray], meta: dict[str, Any], folder: Any, version: str) -> None:
    """`<version>.npz` (float16 weights, the scalar `scale` kept as float32) and `<version>.json` (recipe, fusion
    weight, calibration, dev metrics, the weights' SHA-256)."""
    import hashlib
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{version}.npz"
    arrays: dict[str, Any] = {k: (v if v.ndim == 0 else v.astype(np.float16)) for k, v in weights.items()}
    np.savez_compressed(path, **arrays)
    meta = {**meta, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (folder / f"{version}.json").write_text(json.dumps(meta, indent=1) + "\n")


VERSION = "verifier-v1"


def report(model: Any, torch: Any, data: TrainData, weight: float) -> dict[str, dict[str, float]]:
    """Dev captions 1–4 (never used for a choice): encoder alone, verifier alone, fused at `weight`, and the
    re-rank ceiling (gold photo among the candidates)."""
    rows = data.dev_captions[data.dev_captions % 5 != 4]
    scores = evaluate(model, torch, data, rows, (0.0, weight, 1e6))
    index = rows - data.dev_captions[0]
    ceiling = float(100 * np.mean((data.dev_cands[index] == data.dev_gold[index, None]).any(1)))
    return {"encoder": scores[0.0], "verifier alone": scores[1e6], "fused": scores[weight],
            "ceiling": {"R@20": ceiling}}


def run_recipe(cfg: VerifierConfig, out_folder: Any, log: Callable[[str], None] = print,
               max_minutes: float | None = None) -> dict[str, Any]:
    """Prepare the data, train, choose the fusion weight on dev's 5th captions, calibrate P(match) there, report
    on captions 1–4, and write `<out_folder>/verifier-v1.{npz,json}`."""
    import torch

    from picscope.training import verifier_data

    data = verifier_data.load(cfg.mine_top, cfg.dim, log)
    result = train_verifier(data, cfg, log, max_minutes)
    model = build_model(torch, cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in result.weights.items() if not k.startswith("pca")})
    weight = float(result.best["weight"])
    tune = data.dev_captions[data.dev_captions % 5 == 4]
    index = tune - data.dev_captions[0]
    a, b = calibrate(dev_scores(model, torch, data, tune), data.dev_cands[index] == data.dev_gold[index, None])
    metrics = report(model, torch, data, weight)
    meta = {"version": VERSION, "lam": cfg.lam, "calibration": [a, b], "fusion_weight": weight,
            "recipe": config_dict(cfg), "dev_report": metrics, "history": result.history,
            "train_seconds": round(result.seconds)}
    save_verifier(result.weights, meta, out_folder, VERSION)
    return meta
