"""Build the `bundled` encoder's query bank (`picscope train-querybank`) and measure it on Flickr8k dev.

The bank: the encoder's text vectors of `size` captions drawn (seeded) from Flickr8k *train*, factorised to rank
`rank` (see `picscope.encoders.querybank`). Dev photos and captions are only measured: captions 1–4 of each photo
are the report set, the 5th the tuning set (how β and the bank size were chosen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from picscope.encoders.querybank import QueryBank, fit_querybank


@dataclass(frozen=True)
class BankRecipe:
    size: int = 5000
    rank: int = 128
    beta: float = 20.0
    seed: int = 0


@dataclass(frozen=True)
class DevVectors:
    """The bundled encoder's vectors: train captions (the bank's source), dev photos, dev captions (5 per photo)."""

    train_texts: np.ndarray
    dev_images: np.ndarray
    dev_texts: np.ndarray


def dev_vectors(log: Callable[[str], None] = print) -> DevVectors:
    """Real vectors through the encoder's own heads, from the cached tower features (computed once)."""
    from picscope.training.data import flickr8k
    from picscope.training.grid import token_states
    from picscope.training.verifier_data import _encoder_vectors, sentence_vectors

    tr, dv = flickr8k("train"), flickr8k("dev")
    captions = [c for cs in tr.captions + dv.captions for c in cs]
    log(f"tower features for {len(tr.paths) + len(dv.paths)} photos and {len(captions)} captions (cached)")
    tok = token_states(captions)
    sentences = sentence_vectors(tok["states"], tok["offsets"])
    words = np.array([len(c.split()) for c in captions])
    images, texts = _encoder_vectors(tr.paths, dv.paths, sentences, words)
    n_tr = 5 * len(tr.paths)
    return DevVectors(texts[:n_tr], images[len(tr.paths):], texts[n_tr:])


def build(vectors: DevVectors, recipe: BankRecipe, name: str = "bundled-v2-querybank") -> QueryBank:
    rng = np.random.default_rng(recipe.seed)
    pick = np.sort(rng.choice(len(vectors.train_texts), min(recipe.size, len(vectors.train_texts)), replace=False))
    return fit_querybank(vectors.train_texts[pick], recipe.rank, recipe.beta, name)


def recall(scores: np.ndarray, rows: np.ndarray, gold: np.ndarray, k: int) -> float:
    top = np.argsort(-scores[rows], axis=1)[:, :k]
    return float(100 * (top == gold[rows, None]).any(axis=1).mean())


def dev_report(vectors: DevVectors, bank: QueryBank | None) -> dict[str, float]:
    """R@1/5/10 on dev captions 1–4 (and R@1 on the 5th, the tuning set), with or without the bank."""
    scores = vectors.dev_texts @ vectors.dev_images.T
    if bank is not None:
        scores = scores - bank.normalizers(vectors.dev_images)[None, :]
    n = len(vectors.dev_texts)
    gold = np.arange(n) // 5
    report, tune = np.flatnonzero(np.arange(n) % 5 != 4), np.flatnonzero(np.arange(n) % 5 == 4)
    return {"R@1": recall(scores, report, gold, 1), "R@5": recall(scores, report, gold, 5),
            "R@10": recall(scores, report, gold, 10), "tune R@1": recall(scores, tune, gold, 1)}


def train_querybank(out: Path, recipe: BankRecipe = BankRecipe(), log: Callable[[str], None] = print
                    ) -> tuple[QueryBank, dict[str, dict[str, float]]]:
    """Build, save to `out` and measure the bank; returns it with dev figures without and with it."""
    vectors = dev_vectors(log)
    bank = build(vectors, recipe)
    bank.save(out)
    return bank, {"encoder": dev_report(vectors, None), "encoder + query bank": dev_report(vectors, bank)}
