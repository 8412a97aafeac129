"""Caption quality: corpus BLEU-1…4 and CIDEr-D against several human captions per photo.

The scorers are `pycocoevalcap`'s `Bleu` and `Cider` classes (the MS-COCO caption evaluation code, pure
Python; `Cider` is CIDEr-D: clipped n-gram counts, a Gaussian length penalty with σ = 6, × 10, document
frequencies from the reference captions of the evaluated set). Its PTBTokenizer needs Java, so every caption is
tokenised here instead: lowercase words, punctuation dropped (`caption_decoder.tokenize`), the same for the
candidates and the references.
"""

from __future__ import annotations

from collections.abc import Sequence

from picscope.errors import PicscopeError
from picscope.models.caption_decoder import tokenize


def normalise(text: str) -> str:
    return " ".join(tokenize(text))


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"bleu1".."bleu4", "cider", "words"} for one candidate per photo against that photo's references."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} photos")
    if not candidates:
        raise ValueError("no captions to score")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as exc:
        raise PicscopeError(f"caption scores need pycocoevalcap: pip install 'picscope[train]' ({exc})") from exc
    res = {i: [normalise(c)] for i, c in enumerate(candidates)}
    gts = {i: [normalise(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    words = sum(len(c[0].split()) for c in res.values()) / len(res)
    return {**{f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}, "cider": float(cider), "words": words}


def consensus_indices(groups: Sequence[Sequence[str]]) -> list[int]:
    """For each group of captions (one photo's), the index of the one with the highest CIDEr-D against the
    others of its group: the usual consensus choice among a photo's captions (Devlin et al., 2015). Pass many
    groups at once: CIDEr's document frequencies come from all of them (one group alone gives every n-gram the
    others share an idf of 0)."""
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError as exc:
        raise PicscopeError(f"caption scores need pycocoevalcap: pip install 'picscope[train]' ({exc})") from exc
    res: dict[int, list[str]] = {}
    gts: dict[int, list[str]] = {}
    owner: list[tuple[int, int]] = []
    for g, caps in enumerate(groups):
        norm = [normalise(c) for c in caps]
        for j, c in enumerate(norm):
            res[len(owner)] = [c]
            gts[len(owner)] = [o for k, o in enumerate(norm) if k != j] or [c]
            owner.append((g, j))
    _, per = Cider().compute_score(gts, res)
    best: dict[int, tuple[float, int]] = {}
    for (g, j), s in zip(owner, per, strict=True):
        if g not in best or s > best[g][0]:
            best[g] = (float(s), j)
    return [best[g][1] for g in range(len(groups))]
