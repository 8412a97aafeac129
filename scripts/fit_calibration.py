"""Refit the score → relevance calibration (`src/picscope/encoders/calibration.json`) on Flickr8k dev.

For each encoder: embed the 1,000 dev images and their 5,000 captions through the real image and text paths
(the scores a library search returns), take every caption–image pair (matching = relevant, the other 999
images = not relevant, the two classes weighted equally), and fit P(relevant) = 1 / (1 + exp(-(a·score + b)))
by weighted logistic regression (Newton). Captions #0–#2 fit the curve; captions #3–#4 are held out for the
reliability table printed at the end. Writes the coefficients with `--write`.

    python scripts/fit_calibration.py --encoder bundled --encoder labels --write
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from picscope.encoders import make_encoder
from picscope.imageio import load_image
from picscope.training.data import flickr8k

OUT = Path(__file__).resolve().parents[1] / "src" / "picscope" / "encoders" / "calibration.json"


def embed(spec: str, limit: int | None) -> tuple[str, np.ndarray, np.ndarray, list[list[str]]]:
    enc = make_encoder(spec)
    data = flickr8k("dev")
    paths, captions = data.paths[:limit], data.captions[:limit]
    vecs = []
    for start in range(0, len(paths), 32):
        imgs = [load_image(str(p), target_size=enc.image_size) for p in paths[start : start + 32]]
        vecs.append(enc.embed_images(imgs))
    zi = np.concatenate(vecs)
    zt = np.stack([enc.embed_texts(list(caps)) for caps in zip(*captions, strict=True)])  # (5, n, d)
    return enc.name, zi, zt, captions


def pairs(zi: np.ndarray, zt: np.ndarray, which: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of every (caption, image) pair for the caption indices `which`."""
    scores, labels = [], []
    n = len(zi)
    for j in which:
        sim = zt[j] @ zi.T  # (n captions, n images)
        scores.append(sim.ravel())
        labels.append(np.eye(n, dtype=bool).ravel())
    return np.concatenate(scores).astype(np.float64), np.concatenate(labels)


def fit_platt(s: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    w = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())  # classes weighted equally
    a, b = 10.0, -5.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a * s + b)))
        g = p - y
        grad = np.array([np.sum(w * g * s), np.sum(w * g)])
        h = w * p * (1 - p)
        hess = np.array([[np.sum(h * s * s), np.sum(h * s)], [np.sum(h * s), np.sum(h)]]) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a), float(b)


def reliability(s: np.ndarray, y: np.ndarray, a: float, b: float) -> list[tuple[str, int, int, float, float]]:
    """Bins of predicted relevance: (bin, pairs, relevant pairs, mean predicted, observed rate, classes balanced)."""
    p = 1.0 / (1.0 + np.exp(-(a * s + b)))
    w = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    rows = []
    edges = np.linspace(0, 1, 11)
    for lo, hi in itertools.pairwise(edges):
        m = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if not m.any():
            continue
        observed = float(np.sum(w[m] * y[m]) / np.sum(w[m]))
        rows.append((f"{lo:.1f}–{hi:.1f}", int(m.sum()), int(y[m].sum()), float(p[m].mean()), observed))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", action="append", help="encoder spec (repeatable; default: bundled)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N dev images (quick check)")
    ap.add_argument("--write", action="store_true", help=f"write the coefficients to {OUT}")
    args = ap.parse_args()
    table = json.loads(OUT.read_text()) if OUT.exists() else {"encoders": {}}
    for spec in args.encoder or ["bundled"]:
        t0 = time.perf_counter()
        name, zi, zt, _ = embed(spec, args.limit)
        s_fit, y_fit = pairs(zi, zt, [0, 1, 2])
        s_out, y_out = pairs(zi, zt, [3, 4])
        a, b = fit_platt(s_fit, y_fit)
        pos, neg = s_out[y_out], s_out[~y_out]
        print(f"\n## {spec} ({name}): a = {a:.4f}, b = {b:.4f}; {len(zi)} images, {time.perf_counter() - t0:.0f} s")
        print(f"held-out captions #3–#4: matching pairs score median {np.median(pos):.3f} "
              f"(p10 {np.percentile(pos, 10):.3f}, p90 {np.percentile(pos, 90):.3f}); non-matching median "
              f"{np.median(neg):.3f} (p99 {np.percentile(neg, 99):.3f})")
        for p in (0.5, 0.9):
            thr = (np.log(p / (1 - p)) - b) / a
            print(f"relevance ≥ {p}: score ≥ {thr:.3f}; keeps {np.mean(pos >= thr):.1%} of matching pairs and "
                  f"{np.mean(neg >= thr):.2%} of non-matching ones")
        print("\n| predicted relevance | pairs | matching | mean predicted | observed (classes balanced) |")
        print("|---|---|---|---|---|")
        for row in reliability(s_out, y_out, a, b):
            print(f"| {row[0]} | {row[1]:,} | {row[2]:,} | {row[3]:.3f} | {row[4]:.3f} |")
        table["encoders"][name] = {"a": round(a, 6), "b": round(b, 6), "spec": spec,
                                   "fitted_on": f"Flickr8k dev, {len(zi)} images, captions #0-#2, classes balanced"}
    if args.write:
        table["about"] = ("P(relevant) = 1 / (1 + exp(-(a*score + b))), per encoder name; refit with "
                          "scripts/fit_calibration.py --write")
        OUT.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
