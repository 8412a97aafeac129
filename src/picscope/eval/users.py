"""Simulated users for interactive evaluation. Each marks the shown images of one round.

- `oracle`: marks exactly the shown images in the ground truth relevant, and the others not relevant.
- `noisy`: like the oracle, but misses a relevant image with probability `miss` and marks a non-relevant one
  relevant with probability `wrong` (seeded).
- `budgeted`: like the oracle, but marks at most `budget` images per round (relevant ones first, then
  non-relevant), as a busy person would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Marks:
    relevant: list[str]
    not_relevant: list[str]


class OracleUser:
    name = "oracle"

    def mark(self, shown: Sequence[str], truth: set[str]) -> Marks:
        return Marks([s for s in shown if s in truth], [s for s in shown if s not in truth])


class NoisyUser:
    name = "noisy"

    def __init__(self, miss: float = 0.3, wrong: float = 0.05, seed: int = 0) -> None:
        self.miss, self.wrong = miss, wrong
        self.rng = random.Random(seed)

    def mark(self, shown: Sequence[str], truth: set[str]) -> Marks:
        rel: list[str] = []
        nonrel: list[str] = []
        for s in shown:
            if s in truth:
                (nonrel if self.rng.random() < self.miss else rel).append(s)
            else:
                (rel if self.rng.random() < self.wrong else nonrel).append(s)
        return Marks(rel, nonrel)


class BudgetedUser:
    name = "budgeted"

    def __init__(self, budget: int = 2) -> None:
        self.budget = budget

    def mark(self, shown: Sequence[str], truth: set[str]) -> Marks:
        rel = [s for s in shown if s in truth][: self.budget]
        nonrel = [s for s in shown if s not in truth][: max(0, self.budget - len(rel))]
        return Marks(rel, nonrel)


def make_user(name: str, seed: int = 0) -> OracleUser | NoisyUser | BudgetedUser:
    if name == "oracle":
        return OracleUser()
    if name == "noisy":
        return NoisyUser(seed=seed)
    if name == "budgeted":
        return BudgetedUser()
    raise ValueError(f"unknown simulated user {name!r}: oracle, noisy or budgeted")
