"""The verifier's training data from Flickr8k train and dev: tower features, mined negatives, dev candidates.

Photo rows are train photos then dev photos; caption row r belongs to photo r // 5. Hard negatives come from
the shipped `bundled` dual encoder (the photos it ranks high for a train caption) and from MiniLM
caption–caption similarity (photos whose captions read alike), both over train photos only. Dev candidates
are the dual encoder's top 20 over the 1,000 dev photos, which is what stage 3 re-ranks in the product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from picscope.training.data import flickr8k
from picscope.training.features import image_features
from picscope.training.grid import image_grids, token_states
from picscope.training.verifier import TrainData, fit_pca, project_cells

TOP_DEV = 20


def _top(sim: np.ndarray, k: int) -> np.ndarray:
    idx = np.argpartition(-sim, k, axis=1)[:, :k]
    order = np.take_along_axis(sim, idx, 1).argsort(1)[:, ::-1]
    return np.take_along_axis(idx, order, 1)


def sentence_vectors(states: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """MiniLM sentence embeddings (mean of token states, unit length) from the cached token states."""
    sums = np.add.reduceat(states.astype(np.float32), offsets[:-1], axis=0)
    out = sums / np.diff(offsets)[:, None]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _encoder_vectors(tr_paths: list, dv_paths: list, sentences: np.ndarray, words: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    from picscope.encoders import make_encoder

    model = make_encoder("bundled").model  # type: ignore[attr-defined]
    parts = []
    for paths in (tr_paths, dv_paths):
        f = image_features(paths)
        if model.mem.flip_tta:
            parts.append(model.image_vectors(f["pooled"], f["logits"], f["pooled_flip"], f["logits_flip"]))
        else:
            parts.append(model.image_vectors(f["pooled"], f["logits"], None, None))
    return np.concatenate(parts).astype(np.float32), model.text_vectors(sentences, words).astype(np.float32)


def load(mine_top: int = 40, dim: int = 256, log: Callable[[str], None] = print) -> TrainData:
    tr, dv = flickr8k("train"), flickr8k("dev")
    paths = tr.paths + dv.paths
    captions = [c for cs in tr.captions + dv.captions for c in cs]
    log(f"tower features for {len(paths)} photos and {len(captions)} captions (cached after the first run)")
    grids = image_grids(paths)
    tok = token_states(captions)
    sentences = sentence_vectors(tok["states"], tok["offsets"])
    words = np.array([len(c.split()) for c in captions])
    n_tr = len(tr.paths)
    log("cell PCA")
    pca_mean, pca = fit_pca(grids, np.arange(n_tr), dim)
    cells = project_cells(grids, pca_mean, pca)
    log("dual-encoder vectors and mined negatives")
    img, txt = _encoder_vectors(tr.paths, dv.paths, sentences, words)
    n_cap_tr = 5 * n_tr
    hard = np.zeros((len(captions), mine_top), np.int64)
    text_hard = np.zeros((len(captions), mine_top), np.int64)
    for s in range(0, n_cap_tr, 2000):
        e = slice(s, min(s + 2000, n_cap_tr))
        hard[e] = _top(txt[e] @ img[:n_tr].T, mine_top)
        cc = (sentences[e] @ sentences[:n_cap_tr].T).reshape(-1, n_tr, 5).max(axis=2)
        text_hard[e] = _top(cc, mine_top)
    dev_caps = np.arange(n_cap_tr, len(captions))
    sim = txt[dev_caps] @ img[n_tr:].T
    cand = _top(sim, TOP_DEV)
    return TrainData(
        cells=cells, pca_mean=pca_mean, pca=pca, states=tok["states"], offsets=tok["offsets"],
        train_photos=np.arange(n_tr), dev_photos=np.arange(n_tr, len(paths)),
        hard=hard, text_hard=text_hard,
        dev_cands=cand + n_tr, dev_scores=np.take_along_axis(sim, cand, 1).astype(np.float32),
        dev_captions=dev_caps, dev_gold=dev_caps // 5,
    )
