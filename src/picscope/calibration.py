"""Scores people can read: raw cosine → P(relevant), a logistic (Platt) fit per encoder.

`relevance = 1 / (1 + exp(-(a · score + b)))`. The two coefficients per encoder name live in
`encoders/calibration.json`; `scripts/fit_calibration.py` refits them on Flickr8k dev (matching vs
non-matching caption–image pairs, the two classes weighted equally) and prints a reliability table.
An encoder without an entry has no calibration: asking for a relevance threshold is then an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from picscope.errors import ConfigError

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    encoder: str
    a: float
    b: float

    def relevance(self, score: float) -> float:
        z = self.a * float(score) + self.b
        return 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0

    def relevances(self, scores: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(scores, np.float64) + self.b)))

    def score_for(self, relevance: float) -> float:
        """The raw score whose relevance is `relevance` (the score threshold for `--min-relevance`)."""
        if not 0.0 < relevance < 1.0:
            raise ConfigError(f"a relevance threshold is a probability strictly between 0 and 1, got {relevance}")
        return (math.log(relevance / (1.0 - relevance)) - self.b) / self.a


@cache
def _table() -> dict[str, Any]:
    try:
        # next to the encoders' code (importlib.resources would load tempfile and random: ~3 ms of a search)
        text = (Path(__file__).parent / "encoders" / CALIBRATION_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    data: dict[str, Any] = json.loads(text)
    return data.get("encoders", {})


def calibration_for(encoder_name: str | None) -> Calibration | None:
    """The shipped calibration of an encoder (by its name, e.g. `bundled-v2`), or None."""
    if not encoder_name:
        return None
    entry = _table().get(encoder_name)
    if entry is None:
        return None
    return Calibration(encoder_name, float(entry["a"]), float(entry["b"]))


def known_encoders() -> list[str]:
    return sorted(_table())
