"""The `bundled` captioner's network in numpy: a small transformer decoder over EfficientNet-Lite0's 7×7 cells.

Architecture (mirrored exactly by `picscope.training.captioner.CaptionNet`, which trains it with torch):
memory = LayerNorm(cells · W_in + b_in) + cell position; the decoder has `layers` pre-LayerNorm blocks of
causal self-attention, cross-attention (words attend to the 49 cells) and a ReLU feed-forward, then a final
LayerNorm and output logits tied to the word embeddings. Decoding is incremental (a key/value cache per layer)
and beam search runs over many images at once.

Text: lowercase words (`tokenize`), a vocabulary of the train captions' words seen at least 5 times plus
<pad>, <bos>, <eos>, <unk>. Weights are stored as float16, with the large matrices as int8 per output row
(`pack` / `unpack`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|'[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lowercase words; punctuation dropped, "'s" and "n't" kept as words ("dog 's" and "dog's" agree)."""
    return _WORD.findall(text.lower())


def detokenize(words: list[str]) -> str:
    return " ".join(words).replace(" '", "'")


@dataclass(frozen=True)
class DecoderConfig:
    d: int = 256
    heads: int = 4
    layers: int = 2
    ffn: int = 512
    max_len: int = 24  # positions: <bos> + up to 23 words
    cells: int = 49
    cell_dim: int = 1280

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> DecoderConfig:
        return cls(**json.loads(raw))


# the matrices stored as int8 per output row (the rest is float16)
_QUANTIZED = ("w_in", "embed", "sa_qkv", "sa_out", "ca_q", "ca_kv", "ca_out", "ff1", "ff2")


def _quantized(name: str) -> bool:
    return name.split(".")[-1] in _QUANTIZED


def pack(weights: dict[str, np.ndarray], vocab: list[str], cfg: DecoderConfig) -> dict[str, np.ndarray]:
    """Float32 weights → the shipped arrays: int8 rows + float32 scales for the large matrices, float16 for the
    rest, the vocabulary and the config. Matrices are stored (out, in), so a row is one output unit."""
    out: dict[str, np.ndarray] = {"vocab": np.array(vocab), "config": np.array(cfg.to_json())}
    for name, w in weights.items():
        w = np.asarray(w, np.float32)
        if _quantized(name):
            scale = np.abs(w).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            out[f"{name}.q"] = np.round(w / scale[:, None]).astype(np.int8)
            out[f"{name}.s"] = scale.astype(np.float32)
        else:
            out[name] = w.astype(np.float16)
    return out


def unpack(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str], DecoderConfig]:
    """The shipped arrays → float32 weights (as the numpy decoder and `CaptionNet.load_arrays` use them)."""
    weights: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if key in ("vocab", "config") or key.endswith(".s"):
            continue
        if key.endswith(".q"):
            name = key[:-2]
            weights[name] = value.astype(np.float32) * arrays[f"{name}.s"][:, None]
        else:
            weights[key] = value.astype(np.float32)
    return weights, [str(v) for v in arrays["vocab"]], DecoderConfig.from_json(str(arrays["config"]))


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class Decoder:
    """Inference for one set of float32 weights (see `unpack`)."""

    def __init__(self, weights: dict[str, np.ndarray], vocab: list[str], cfg: DecoderConfig) -> None:
        self.w = weights
        self.vocab = vocab
        self.cfg = cfg
        self.dh = cfg.d // cfg.heads
        # words beam search never emits
        self._banned = np.zeros(len(vocab), bool)
        self._banned[[PAD, BOS, UNK]] = True

    # memory: the 49 cells, projected once per image; each layer's cross-attention keys and values
    def encode(self, grids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        w, cfg = self.w, self.cfg
        x = np.asarray(grids, np.float32)
        if x.ndim != 3 or x.shape[1:] != (cfg.cells, cfg.cell_dim):
            raise ValueError(f"grids must be (n, {cfg.cells}, {cfg.cell_dim}), not {x.shape}")
        mem = _layer_norm(x @ w["w_in"].T + w["b_in"], w["ln_in.g"], w["ln_in.b"]) + w["cell_pos"]
        out = []
        for i in range(cfg.layers):
            kv = mem @ w[f"l{i}.ca_kv"].T + w[f"l{i}.ca_kv_b"]  # (n, cells, 2d)
            k, v = np.split(kv, 2, axis=-1)
            out.append((self._heads(k), self._heads(v)))
        return out

    def _heads(self, x: np.ndarray) -> np.ndarray:
        """(m, t, d) → (m, heads, t, dh)."""
        m, t, _ = x.shape
        return x.reshape(m, t, self.cfg.heads, self.dh).transpose(0, 2, 1, 3)

    def _attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """q (m, heads, 1, dh), k/v (m, heads, t, dh) → (m, d)."""
        s = np.einsum("mhd,mhtd->mht", q[:, :, 0], k) / math.sqrt(self.dh)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        return np.einsum("mht,mhtd->mhd", s, v).reshape(len(q), -1)

    def _attend_cells(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, width: int) -> np.ndarray:
        """Cross-attention for m = n × width sequences, `width` consecutive ones per image: q (m, d), k/v (n,
        heads, cells, dh) → (m, d). All sequences of an image share its cells' keys and values (no copies)."""
        n = len(k)
        q = q.reshape(n, width, self.cfg.heads, self.dh).transpose(0, 2, 1, 3)  # (n, heads, width, dh)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(self.dh)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        return (s @ v).transpose(0, 2, 1, 3).reshape(n * width, -1)

    def step(self, tokens: np.ndarray, pos: int, memory: list[tuple[np.ndarray, np.ndarray]],
             cache: list[tuple[np.ndarray, np.ndarray]] | None) -> tuple[np.ndarray, list[tuple[np.ndarray,
                                                                                                np.ndarray]]]:
        """One word for m = n × width sequences (`width` consecutive ones per image of `memory`): `tokens` (m,) at
        position `pos`. Returns log-probabilities (m, vocab) of the next word and the extended self-attention
        cache."""
        width = len(tokens) // len(memory[0][0])
        w, cfg = self.w, self.cfg
        x = w["embed"][tokens] * math.sqrt(cfg.d) + w["pos"][pos]
        new_cache = []
        for i in range(cfg.layers):
            p = f"l{i}."
            h = _layer_norm(x, w[p + "ln1.g"], w[p + "ln1.b"])
            qkv = h @ w[p + "sa_qkv"].T + w[p + "sa_qkv_b"]
            q, k, v = (a.reshape(len(x), cfg.heads, 1, self.dh) for a in np.split(qkv, 3, -1))
            if cache is not None:
                k = np.concatenate([cache[i][0], k], axis=2)
                v = np.concatenate([cache[i][1], v], axis=2)
            new_cache.append((k, v))
            x = x + self._attend(q, k, v) @ w[p + "sa_out"].T + w[p + "sa_out_b"]
            h = _layer_norm(x, w[p + "ln2.g"], w[p + "ln2.b"])
            q = h @ w[p + "ca_q"].T + w[p + "ca_q_b"]
            mk, mv = memory[i]
            x = x + self._attend_cells(q, mk, mv, width) @ w[p + "ca_out"].T + w[p + "ca_out_b"]
            h = _layer_norm(x, w[p + "ln3.g"], w[p + "ln3.b"])
            x = x + np.maximum(h @ w[p + "ff1"].T + w[p + "ff1_b"], 0) @ w[p + "ff2"].T + w[p + "ff2_b"]
        h = _layer_norm(x, w["ln_f.g"], w["ln_f.b"])
        return _log_softmax(h @ w["embed"].T + w["out_b"]), new_cache

    def score(self, grids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Teacher-forced log-probabilities (n, t, vocab) of each next word given `tokens` (n, t) (starting with
        <bos>), computed through the same incremental path as beam search."""
        memory = self.encode(grids)
        cache = None
        out = []
        for t in range(tokens.shape[1]):
            logp, cache = self.step(tokens[:, t], t, memory, cache)
            out.append(logp)
        return np.stack(out, axis=1)

    def beam_search(self, grids: np.ndarray, beam: int = 3, max_words: int = 20) -> list[list[int]]:
        """Word ids of the best caption per image: beam search over all images at once; a hypothesis ends when
        <eos> is among its beam's best `beam` continuations; the winner has the highest mean log-probability
        per word (<eos> included). An image leaves the batch once it has `beam` finished hypotheses; all stop at
        `max_words`. Runs on one BLAS thread: its matrix products are small, and two threads on a busy 2-core
        machine made it ~10× slower (measured)."""
        from picscope.encoders.numerics import single_threaded_blas

        with single_threaded_blas():
            return self._beam_search(grids, beam, max_words)

    def _beam_search(self, grids: np.ndarray, beam: int, max_words: int) -> list[list[int]]:
        n = len(grids)
        if n == 0:
            return []
        max_words = min(max_words, self.cfg.max_len - 1)
        memory = self.encode(grids)
        vocab = len(self.vocab)
        active = np.arange(n)  # images still decoding, in batch order; `width` hypotheses each
        tokens = np.full(n, BOS)
        scores = np.zeros(n, np.float64)
        seqs: list[list[int]] = [[] for _ in range(n)]
        best = np.full(n, -np.inf)
        best_seq: list[list[int]] = [[] for _ in range(n)]
        done = np.zeros(n, int)
        cache = None
        width = 1
        for t in range(max_words + 1):
            logp, cache = self.step(tokens, t, memory, cache)
            self._mask(logp, t, max_words)
            top, top_scores = _best_extensions(scores, logp, len(active), width * vocab, 2 * beam)
            parent, word = top // vocab, top % vocab
            kept, new_tokens, new_scores, new_seqs, parents = [], [], [], [], []
            for a, i in enumerate(active):
                alive: list[tuple[int, float, list[int], int]] = []
                for j in range(2 * beam):
                    s = float(top_scores[a, j])
                    if not np.isfinite(s):
                        break
                    row = a * width + int(parent[a, j])
                    seq = [*seqs[row], int(word[a, j])]
                    if word[a, j] == EOS:
                        if j < beam:
                            done[i] += 1
                            if s / len(seq) > best[i]:
                                best[i], best_seq[i] = s / len(seq), seq[:-1]
                    elif len(alive) < beam:
                        alive.append((int(word[a, j]), s, seq, row))
                if done[i] >= beam or not alive:
                    continue  # this image is finished: it leaves the batch
                while len(alive) < beam:  # keep `beam` slots per image: a dead copy that can never win
                    alive.append((EOS, -np.inf, [], alive[0][3]))
                kept.append(a)
                for tok, s, seq, row in alive:
                    new_tokens.append(tok)
                    new_scores.append(s)
                    new_seqs.append(seq)
                    parents.append(row)
            if not kept or t == max_words:
                break
            idx = np.array(parents)
            cache = [(k[idx], v[idx]) for k, v in cache]
            memory = [(k[kept], v[kept]) for k, v in memory] if len(kept) < len(active) else memory
            active = active[kept]
            tokens = np.array(new_tokens)
            scores = np.array(new_scores, np.float64)
            seqs = new_seqs
            width = beam
        return best_seq

    def _mask(self, logp: np.ndarray, t: int, max_words: int) -> None:
        """Words never generated, no <eos> first (at least one word), only <eos> at the last position."""
        logp[:, self._banned] = -np.inf
        if t == 0:
            logp[:, EOS] = -np.inf
        if t == max_words:
            keep = logp[:, EOS].copy()
            logp[:] = -np.inf
            logp[:, EOS] = keep

    def words(self, ids: list[int]) -> str:
        return detokenize([self.vocab[i] for i in ids])


def _best_extensions(scores: np.ndarray, logp: np.ndarray, images: int, per_image: int, count: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the `count` best (hypothesis, word) extensions, best first: flat indices and their scores."""
    cand = (scores[:, None] + logp).reshape(images, per_image)
    top = np.argpartition(-cand, count - 1, axis=1)[:, :count]
    top_scores = np.take_along_axis(cand, top, 1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
