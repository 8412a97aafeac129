"""Score fusion helpers: standardisation and log-odds, so that different signals can be added with weights."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

P_CLIP = 0.02


def zscore(values: Sequence[float]) -> np.ndarray:
    """Standardise within the candidate list (a constant list maps to zeros)."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return a
    sd = float(a.std())
    return (a - a.mean()) / sd if sd > 1e-9 else np.zeros_like(a)


def logit(p: float) -> float:
    p = min(1.0 - P_CLIP, max(P_CLIP, float(p)))
    return math.log(p / (1.0 - p))


def expected_log_odds(p_yes: Sequence[float], expected: Sequence[bool]) -> float:
    """Mean log-odds that each proposition has its expected answer (a removal expects "no")."""
    if not p_yes:
        return 0.0
    return float(np.mean([logit(p if e else 1.0 - p) for p, e in zip(p_yes, expected, strict=True)]))
