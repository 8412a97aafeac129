"""Training the `bundled` captioner (torch, one thread): a small transformer decoder over the 7×7 cells.

Data: Flickr8k train photos' cached cells (`training.grid.image_grids`) and their 5 captions each; early
stopping on the teacher-forced loss of the first half of dev (photos 0–499), so the second half stays untouched
for the evaluation. The network mirrors `picscope.models.caption_decoder.Decoder` weight for weight; the
shipped file is `caption_decoder.pack` of the best epoch's weights.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from picscope.models.caption_decoder import BOS, EOS, PAD, SPECIALS, UNK, DecoderConfig, pack, tokenize

DEV_STOP = 500  # dev photos 0..499 pick the epoch; 500..999 are never looked at during training


@dataclass(frozen=True)
class CaptionerRecipe:
    model: DecoderConfig = field(default_factory=DecoderConfig)
    min_count: int = 5
    epochs: int = 5
    batch_captions: int = 128  # of similar length
    input_dim: int = 256  # whitened principal components of the cells the training sees (folded into w_in)
    lr: float = 1e-3
    warmup_steps: int = 300
    weight_decay: float = 0.01
    dropout: float = 0.1
    label_smoothing: float = 0.1
    seed: int = 0
    bf16: bool = True  # autocast the matrix products (float32 weights); ~20% faster on CPUs with AMX
    max_minutes: float = 40.0
    log_every: int = 50  # stop after the epoch that passes this


def build_vocab(captions: list[list[str]], min_count: int) -> list[str]:
    counts: Counter[str] = Counter(w for caps in captions for c in caps for w in tokenize(c))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *words]


def encode_captions(captions: list[list[str]], vocab: list[str], max_len: int) -> np.ndarray:
    """(images, 5, max_len + 1) int64: <bos> words <eos> <pad>…, words cut at max_len − 1."""
    index = {w: i for i, w in enumerate(vocab)}
    per = max(len(c) for c in captions)
    out = np.full((len(captions), per, max_len + 1), PAD, np.int64)
    for i, caps in enumerate(captions):
        for j, c in enumerate(caps):
            ids = [index.get(w, UNK) for w in tokenize(c)][: max_len - 1]
            seq = [BOS, *ids, EOS]
            out[i, j, : len(seq)] = seq
    return out


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the train extra is missing
        from picscope.errors import PicscopeError

        raise PicscopeError(f"training the captioner needs torch: pip install 'picscope[train]' ({exc})") from exc
    return torch


def _shapes(cfg: DecoderConfig, vocab: int) -> dict[str, tuple[int, ...]]:
    d = cfg.d
    s: dict[str, tuple[int, ...]] = {
        "w_in": (d, cfg.cell_dim), "b_in": (d,), "ln_in.g": (d,), "ln_in.b": (d,), "cell_pos": (cfg.cells, d),
        "embed": (vocab, d), "pos": (cfg.max_len, d), "ln_f.g": (d,), "ln_f.b": (d,), "out_b": (vocab,),
    }
    for i in range(cfg.layers):
        p = f"l{i}."
        s.update({p + "ln1.g": (d,), p + "ln1.b": (d,), p + "sa_qkv": (3 * d, d), p + "sa_qkv_b": (3 * d,),
                  p + "sa_out": (d, d), p + "sa_out_b": (d,), p + "ln2.g": (d,), p + "ln2.b": (d,),
                  p + "ca_q": (d, d), p + "ca_q_b": (d,), p + "ca_kv": (2 * d, d), p + "ca_kv_b": (2 * d,),
                  p + "ca_out": (d, d), p + "ca_out_b": (d,), p + "ln3.g": (d,), p + "ln3.b": (d,),
                  p + "ff1": (cfg.ffn, d), p + "ff1_b": (cfg.ffn,), p + "ff2": (d, cfg.ffn), p + "ff2_b": (d,)})
    return s


def _attention(torch: Any, cfg: DecoderConfig, q: Any, k: Any, v: Any, mask: Any | None) -> Any:
    """Multi-head scaled dot-product attention: (m, tq, d) queries over (m, tk, d) keys/values."""
    m, tq, _ = q.shape
    h, dh = cfg.heads, cfg.d // cfg.heads
    q = q.view(m, tq, h, dh).transpose(1, 2)
    k = k.view(m, k.shape[1], h, dh).transpose(1, 2)
    v = v.view(m, v.shape[1], h, dh).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(m, tq, cfg.d)


def _init_params(torch: Any, shapes: dict[str, tuple[int, ...]], cfg: DecoderConfig, seed: int) -> Any:
    """The network's parameters, initialised from `seed` (layer-norm gains 1, biases 0, scaled normal weights)."""
    gen = torch.Generator().manual_seed(seed)
    params = torch.nn.ParameterDict()
    for name, shape in shapes.items():
        leaf = name.split(".")[-1]
        if leaf == "g":
            t = torch.ones(shape)
        elif len(shape) == 1 or leaf == "b":
            t = torch.zeros(shape)
        elif name in ("embed", "pos", "cell_pos"):
            t = torch.randn(shape, generator=gen) * (cfg.d ** -0.5 if name == "embed" else 0.02)
        else:
            t = torch.randn(shape, generator=gen) * (shape[1] ** -0.5)
        params[name.replace(".", "__")] = torch.nn.Parameter(t)
    return params


def make_net(cfg: DecoderConfig, vocab: int, dropout: float = 0.0, seed: int = 0, in_dim: int | None = None) -> Any:
    """The torch network (a `torch.nn.Module`), randomly initialised. `in_dim`: the width of the cells it is fed
    (training feeds whitened principal components, folded into `w_in` on export; default: the raw cells)."""
    shapes = _shapes(cfg, vocab)
    shapes["w_in"] = (cfg.d, in_dim or cfg.cell_dim)
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class CaptionNet(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.cfg, self.dropout = cfg, dropout
            self.params = _init_params(torch, shapes, cfg, seed)

        def p(self, name: str) -> Any:
            return self.params[name.replace(".", "__")]

        def memory(self, grids: Any) -> Any:
            x = F.linear(grids, self.p("w_in"), self.p("b_in"))
            mem = F.layer_norm(x, (cfg.d,), self.p("ln_in.g"), self.p("ln_in.b"), 1e-5) + self.p("cell_pos")
            return F.dropout(mem, self.dropout, self.training)

        def _attend(self, q: Any, k: Any, v: Any, mask: Any | None) -> Any:
            return _attention(torch, cfg, q, k, v, mask)

        def forward(self, grids: Any, tokens: Any, rows: Any) -> Any:
            """Logits (m, t, vocab) for `tokens` (m, t); `rows` (m,) the image (row of `grids`) of each one."""
            mem = self.memory(grids)
            t = tokens.shape[1]
            drop = lambda z: F.dropout(z, self.dropout, self.training)  # noqa: E731
            x = drop(self.p("embed")[tokens] * math.sqrt(cfg.d) + self.p("pos")[:t])
            causal = torch.ones(t, t, dtype=torch.bool).triu(1)
            for i in range(cfg.layers):
                x = self.layer(f"l{i}.", x, mem, rows, causal, drop)
            h = F.layer_norm(x, (cfg.d,), self.p("ln_f.g"), self.p("ln_f.b"), 1e-5)
            return F.linear(h, self.p("embed"), self.p("out_b"))

        def layer(self, pre: str, x: Any, mem: Any, rows: Any, causal: Any, drop: Any) -> Any:
            """One decoder layer: causal self-attention, cross-attention over the cells, feed-forward."""
            p = self.p
            h = F.layer_norm(x, (cfg.d,), p(pre + "ln1.g"), p(pre + "ln1.b"), 1e-5)
            q, k, v = F.linear(h, p(pre + "sa_qkv"), p(pre + "sa_qkv_b")).chunk(3, dim=-1)
            x = x + drop(F.linear(self._attend(q, k, v, causal), p(pre + "sa_out"), p(pre + "sa_out_b")))
            h = F.layer_norm(x, (cfg.d,), p(pre + "ln2.g"), p(pre + "ln2.b"), 1e-5)
            q = F.linear(h, p(pre + "ca_q"), p(pre + "ca_q_b"))
            mk, mv = F.linear(mem, p(pre + "ca_kv"), p(pre + "ca_kv_b")).chunk(2, dim=-1)
            x = x + drop(F.linear(self._attend(q, mk[rows], mv[rows], None), p(pre + "ca_out"), p(pre + "ca_out_b")))
            h = F.layer_norm(x, (cfg.d,), p(pre + "ln3.g"), p(pre + "ln3.b"), 1e-5)
            f = F.relu(F.linear(h, p(pre + "ff1"), p(pre + "ff1_b")))
            return x + drop(F.linear(drop(f), p(pre + "ff2"), p(pre + "ff2_b")))

        def arrays(self) -> dict[str, np.ndarray]:
            return {k.replace("__", "."): v.detach().cpu().numpy().astype(np.float32) for k, v in self.params.items()}

        def load_arrays(self, weights: dict[str, np.ndarray]) -> None:
            with torch.no_grad():
                for k, v in weights.items():
                    self.p(k).copy_(torch.from_numpy(np.asarray(v, np.float32)))

    return CaptionNet()


def fit_whitening(grids: np.ndarray, dim: int, sample: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean (cell_dim,) and a projection (cell_dim, dim) onto the top `dim` principal components of the cells,
    each scaled to unit variance. Training runs on these (5× less work for the input layer); export folds the
    projection into `w_in`, so inference takes raw cells."""
    from picscope.encoders.numerics import single_threaded_blas

    rng = np.random.default_rng(seed)
    n, cells, _ = grids.shape
    pick = np.sort(rng.choice(n * cells, size=min(sample, n * cells), replace=False))
    x = np.stack([np.asarray(grids[i // cells, i % cells], np.float32) for i in pick]).astype(np.float64)
    mean = x.mean(axis=0)
    x -= mean
    with single_threaded_blas():  # two OpenBLAS threads made eigh ~7× slower on the busy 2-core machine
        vals, vecs = np.linalg.eigh(x.T @ x / len(x))
    top = np.argsort(vals)[::-1][:dim]
    proj = vecs[:, top] / np.sqrt(np.maximum(vals[top], 1e-6))
    return mean.astype(np.float32), proj.astype(np.float32)


def reduce_cells(grids: np.ndarray, mean: np.ndarray, proj: np.ndarray, chunk: int = 500) -> np.ndarray:
    out = np.empty((len(grids), grids.shape[1], proj.shape[1]), np.float32)
    for i in range(0, len(grids), chunk):
        out[i : i + chunk] = (np.asarray(grids[i : i + chunk], np.float32) - mean) @ proj
    return out


def fold_whitening(weights: dict[str, np.ndarray], mean: np.ndarray, proj: np.ndarray) -> dict[str, np.ndarray]:
    """w_in·((x − mean)·proj) + b_in  =  (w_in·projᵀ)·x + (b_in − w_in·projᵀ·mean)."""
    out = dict(weights)
    w = weights["w_in"].astype(np.float64) @ proj.T.astype(np.float64)
    out["w_in"] = w.astype(np.float32)
    out["b_in"] = (weights["b_in"] - w @ mean).astype(np.float32)
    return out


def length_batches(seqs: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """(image, caption) index pairs in batches of captions of similar length (little padding), shuffled."""
    lengths = (seqs != PAD).sum(axis=2).reshape(-1)
    pairs = np.argsort(lengths + rng.random(len(lengths)), kind="stable")  # ties in random order
    batches = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    rng.shuffle(batches)
    return batches


def _loss(torch: Any, net: Any, cells: np.ndarray, seqs: np.ndarray, pairs: np.ndarray, smoothing: float) -> Any:
    """Mean cross-entropy over the words of the captions `pairs` (flat image × caption indices)."""
    per = seqs.shape[1]
    images, rows = np.unique(pairs // per, return_inverse=True)
    flat = seqs.reshape(-1, seqs.shape[2])[pairs]
    flat = torch.from_numpy(flat[:, : int((flat != PAD).sum(1).max())])
    logits = net(torch.from_numpy(cells[images]), flat[:, :-1], torch.from_numpy(rows))
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat[:, 1:].reshape(-1),
                                             ignore_index=PAD, label_smoothing=smoothing)


def dev_loss(net: Any, cells: np.ndarray, seqs: np.ndarray, batch: int = 250) -> float:
    """Teacher-forced cross-entropy per word (no smoothing) over all captions of these images."""
    torch = _torch()
    net.eval()
    total, words = 0.0, 0
    order = np.arange(seqs.shape[0] * seqs.shape[1])
    with torch.no_grad():
        for i in range(0, len(order), batch):
            pairs = order[i : i + batch]
            n = int((seqs.reshape(-1, seqs.shape[2])[pairs][:, 1:] != PAD).sum())
            total += float(_loss(torch, net, cells, seqs, pairs, 0.0)) * n
            words += n
    return total / words


def _optimizer(torch: Any, net: Any, recipe: CaptionerRecipe) -> Any:
    """AdamW with weight decay on the matrices (not on positions, norms or biases)."""
    decayed = {k for k, p in net.params.items() if p.ndim == 2 and k not in ("pos", "cell_pos")}
    return torch.optim.AdamW([{"params": [net.params[k] for k in sorted(decayed)], "weight_decay": recipe.weight_decay},
                              {"params": [p for k, p in net.params.items() if k not in decayed], "weight_decay": 0.0}],
                             lr=recipe.lr, betas=(0.9, 0.98))


def _lr_at(recipe: CaptionerRecipe, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 0 at the last step."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    frac = (step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _train_epoch(torch: Any, net: Any, opt: Any, cells: np.ndarray, seqs: np.ndarray, recipe: CaptionerRecipe,
                 rng: np.random.Generator, clock: tuple[int, int, float], log: Callable[[str], None],
                 advance: Callable[[int], None] | None) -> tuple[float, int]:
    """One pass over the captions; `clock` = (step, total steps, start time). (mean train loss, step after)."""
    step, total, start = clock
    net.train()
    running, count = 0.0, 0
    for pairs in length_batches(seqs, recipe.batch_captions, rng):
        for group in opt.param_groups:
            group["lr"] = _lr_at(recipe, step, total)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            loss = _loss(torch, net, cells, seqs, pairs, recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        running += float(loss.detach())
        count += 1
        step += 1
        if advance:
            advance(1)
        if step % recipe.log_every == 0:
            log(f"step {step}/{total}: loss {running / count:.3f}, {(time.monotonic() - start) / 60:.1f} min")
    return running / max(count, 1), step


def train_captioner(
    train_grids: np.ndarray, train_captions: list[list[str]], stop_grids: np.ndarray, stop_captions: list[list[str]],
    recipe: CaptionerRecipe, *, log: Callable[[str], None] = print,
    bar: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train; returns the packed arrays of the best epoch (by the stop set's loss) and a training summary."""
    torch = _torch()
    torch.set_num_threads(1)
    torch.manual_seed(recipe.seed)
    cfg = recipe.model
    start = time.monotonic()
    vocab = build_vocab(train_captions, recipe.min_count)
    seqs = encode_captions(train_captions, vocab, cfg.max_len)
    stop_seqs = encode_captions(stop_captions, vocab, cfg.max_len)
    log(f"vocabulary: {len(vocab)} words (count ≥ {recipe.min_count}); {len(train_grids)} photos, "
        f"{seqs.shape[0] * seqs.shape[1]} captions")
    mean, proj = fit_whitening(train_grids, recipe.input_dim, seed=recipe.seed)
    cells, stop_cells = reduce_cells(train_grids, mean, proj), reduce_cells(stop_grids, mean, proj)
    log(f"cells whitened to {recipe.input_dim} components in {time.monotonic() - start:.0f} s")
    net = make_net(cfg, len(vocab), recipe.dropout, recipe.seed, in_dim=recipe.input_dim)
    opt = _optimizer(torch, net, recipe)
    rng = np.random.default_rng(recipe.seed)
    steps_per_epoch = math.ceil(seqs.shape[0] * seqs.shape[1] / recipe.batch_captions)
    total = steps_per_epoch * recipe.epochs
    best: tuple[float, int, dict[str, np.ndarray]] | None = None
    history = []
    step = 0
    for epoch in range(recipe.epochs):
        advance = bar(f"epoch {epoch + 1}/{recipe.epochs}", steps_per_epoch) if bar else None
        train_loss, step = _train_epoch(torch, net, opt, cells, seqs, recipe, rng, (step, total, start), log, advance)
        stop = dev_loss(net, stop_cells, stop_seqs)
        minutes = (time.monotonic() - start) / 60
        history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 4), "dev_stop_loss": round(stop, 4),
                        "minutes": round(minutes, 2)})
        log(f"epoch {epoch + 1}: train loss {train_loss:.3f} (smoothed), dev[0:{DEV_STOP}] loss {stop:.3f} "
            f"per word, {minutes:.1f} min")
        if best is None or stop < best[0]:
            best = (stop, epoch + 1, net.arrays())
        if minutes > recipe.max_minutes:
            log(f"stopping: {minutes:.1f} min passed the {recipe.max_minutes:.0f} min budget")
            break
    assert best is not None
    weights = fold_whitening(best[2], mean, proj)
    summary = {"vocab": len(vocab), "best_epoch": best[1], "dev_stop_loss": round(best[0], 4), "history": history,
               "minutes": round((time.monotonic() - start) / 60, 2),
               "params": int(sum(v.size for v in weights.values()))}
    return pack(weights, vocab, cfg), summary


def save_weights(arrays: dict[str, np.ndarray], path: Path) -> str:
    """Write the packed arrays (npz, compressed) and their SHA-256 file beside; returns the digest."""
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".sha256").write_text(f"{digest}  {path.name}\n")
    return digest
