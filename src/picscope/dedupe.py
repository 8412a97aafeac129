"""Near-duplicates: a 64-bit difference hash (dHash) and the mean colour per image content, and grouping.

Byte-identical copies share a content hash (so they are always one group); a photo re-saved at another
JPEG quality or size, or near-identical video frames, differ by a few bits of dHash. Two images are
near-duplicates when their dHashes differ in at most `max_distance` of 64 bits (default 6) and their mean
colours by at most `MAX_COLOUR_DIFF` per channel (dHash only sees structure: two flat images of different
colours have the same dHash).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT_MAX_DISTANCE = 6
MAX_COLOUR_DIFF = 8  # per RGB channel, 0-255 (a re-save or resize moves it by 1-2)


def dhash(image: Image.Image) -> int:
    """Difference hash: grey 9×8 thumbnail, one bit per horizontally adjacent pair (left brighter than right)."""
    grey = image.convert("L").resize((9, 8), Image.Resampling.BOX)
    px = np.asarray(grey, np.int16)
    bits = (px[:, :-1] > px[:, 1:]).ravel()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def mean_colour(image: Image.Image) -> int:
    """The mean RGB colour packed in 24 bits (0xRRGGBB)."""
    small = np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BOX), np.float32)
    r, g, b = np.rint(small.reshape(-1, 3).mean(axis=0)).astype(int).tolist()
    return (r << 16) | (g << 8) | b


def perceptual(image: Image.Image) -> tuple[int, int]:
    """(dHash, mean colour) of an image: what is stored per content hash at index time."""
    return dhash(image), mean_colour(image)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def colour_diff(a: int, b: int) -> int:
    return max(abs(((a >> s) & 0xFF) - ((b >> s) & 0xFF)) for s in (16, 8, 0))


@dataclass(frozen=True)
class Fingerprint:
    """What dedupe compares: the content hash (exact copies), dHash and mean colour (near copies; None = unknown)."""

    content_hash: str | None
    dhash: int | None
    colour: int | None = None

    def same_as(self, other: Fingerprint, max_distance: int) -> bool:
        if self.content_hash is not None and self.content_hash == other.content_hash:
            return True
        if self.dhash is None or other.dhash is None or self.colour is None or other.colour is None:
            return False
        return hamming(self.dhash, other.dhash) <= max_distance and colour_diff(self.colour, other.colour) <= \
            MAX_COLOUR_DIFF


def collapse(fingerprints: Sequence[Fingerprint], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[list[int]]:
    """Greedy collapse of a ranking: each item joins the first earlier kept item it duplicates.

    Returns groups of indices into `fingerprints`, in rank order; each group's first index is the kept item.
    """
    groups: list[list[int]] = []
    for i, fp in enumerate(fingerprints):
        for group in groups:
            if fingerprints[group[0]].same_as(fp, max_distance):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    counts = np.zeros(x.shape, np.int64)
    for shift in range(0, 64, 8):
        counts += _BYTE_POP[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64)]
    return counts


_BYTE_POP = np.array([bin(i).count("1") for i in range(256)], np.int64)


def groups_of(fingerprints: Sequence[Fingerprint], max_distance: int = DEFAULT_MAX_DISTANCE,
              block: int = 2048) -> list[list[int]]:
    """All groups of 2+ duplicates in a collection (union-find over exact and near pairs), largest first."""
    n = len(fingerprints)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first_by_hash: dict[str, int] = {}
    for i, fp in enumerate(fingerprints):
        if fp.content_hash is not None:
            union(first_by_hash.setdefault(fp.content_hash, i), i)
    known = [i for i, fp in enumerate(fingerprints) if fp.dhash is not None and fp.colour is not None]
    hashes = np.array([fingerprints[i].dhash for i in known], np.uint64)
    colours = np.array([[(fingerprints[i].colour or 0) >> s & 0xFF for s in (16, 8, 0)] for i in known],
                       np.int16).reshape(-1, 3)
    block = max(1, min(block, 1_000_000 // max(len(known), 1)))  # ≤ 1M pairs (~30 MB) at a time
    for start in range(0, len(known), block):
        dist = _popcount64(hashes[start : start + block, None] ^ hashes[None, :])
        cdiff = np.abs(colours[start : start + block, None, :] - colours[None, :, :]).max(axis=2)
        rows, cols = np.nonzero((dist <= max_distance) & (cdiff <= MAX_COLOUR_DIFF))
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if start + r < c:
                union(known[start + r], known[c])
    by_root: dict[int, list[int]] = {}
    for i in range(n):
        by_root.setdefault(find(i), []).append(i)
    return sorted((g for g in by_root.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
