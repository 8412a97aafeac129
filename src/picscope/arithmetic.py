"""Query arithmetic, as rclip users know it: `"kitty" --add "roof" --subtract "fence"`.

A term is text or an image (a file path, a library id, or a PIL image), with an optional weight written
`WEIGHT:TERM` (`2:night`, `0.5:fence`). The query vector is

    q = v(query) + Σ w·v(added) − Σ w·v(subtracted),   then normalised,

where every v(·) is the encoder's unit vector. A string term is an image when it names an existing file,
else text; `id:123` names a library image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image

from picscope.errors import ConfigError

if TYPE_CHECKING:
    from picscope.library import Library

_WEIGHTED = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*:(.*)$", re.S)
_LIBRARY_ID = re.compile(r"^id:(\d+)$")

TermValue = Union[str, int, Path, Image.Image]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class QueryTerm:
    """One added or subtracted term: text, or an image (path, library id, PIL image), with a weight.

    `kind="text"` keeps a string as text even when a file has that name (the REST API never reads files).
    """

    value: TermValue
    weight: float = 1.0
    kind: str = "auto"  # auto | text | image

    @property
    def is_image(self) -> bool:
        if isinstance(self.value, Image.Image | int | Path):
            return True
        if self.kind != "auto":
            return self.kind == "image"
        return os.path.isfile(os.path.expanduser(self.value))

    def describe(self) -> dict[str, Any]:
        if isinstance(self.value, Image.Image):
            shown: Any = "image"
        elif isinstance(self.value, int):
            shown = f"id:{self.value}"
        else:
            shown = str(self.value)
        return {"term": shown, "weight": self.weight, "kind": "image" if self.is_image else "text"}


def parse_term(spec: str | QueryTerm | TermValue, *, files: bool = True) -> QueryTerm:
    """`"night"` → text, weight 1; `"2:night"` → weight 2; `"./photo.jpg"` → an image; `"id:12"` → library id 12.

    `files=False`: a string is never read as a file path (text or `id:N` only).
    """
    if isinstance(spec, QueryTerm):
        term = spec
    elif not isinstance(spec, str):
        term = QueryTerm(spec)
    else:
        weight = 1.0
        text = spec
        m = _WEIGHTED.match(spec)
        if m and not (files and os.path.exists(spec)):  # a file may well be called "2:night.jpg"
            weight, text = float(m.group(1)), m.group(2).strip()
        idm = _LIBRARY_ID.match(text.strip())
        value: TermValue = int(idm.group(1)) if idm else text
        term = QueryTerm(value, weight, "auto" if files else "text")
    if isinstance(term.value, str) and not term.value.strip():
        raise ConfigError(f"empty query term {spec!r}: write TEXT, WEIGHT:TEXT, a file path or id:N")
    if not (term.weight > 0 and np.isfinite(term.weight)):
        raise ConfigError(f"query term weight must be a positive number, got {term.weight!r}")
    return term


def parse_terms(specs: Iterable[str | QueryTerm | TermValue] | None, *, files: bool = True) -> list[QueryTerm]:
    return [parse_term(s, files=files) for s in specs or ()]


def term_vector(library: Library, term: QueryTerm) -> tuple[np.ndarray, int | None]:
    """The unit vector of a term, and the library id of an image term that is in the library."""
    if term.is_image:
        value = term.value
        if isinstance(value, Path):
            value = str(value)
        vec, fid = library.resolve_image(value)
        return np.asarray(vec, np.float32), fid
    assert isinstance(term.value, str)
    return np.asarray(library.embed_texts([term.value])[0], np.float32), None


def combine(
    library: Library, base: np.ndarray, add: Sequence[QueryTerm] = (), subtract: Sequence[QueryTerm] = ()
) -> tuple[np.ndarray, list[int]]:
    """`base` plus the weighted added terms minus the subtracted ones, normalised; and the ids of image terms
    that are library images (callers leave them out of the results, as they do the query image)."""
    vec = np.asarray(base, np.float32).copy()
    used: list[int] = []
    for sign, terms in ((1.0, add), (-1.0, subtract)):
        for term in terms:
            v, fid = term_vector(library, term)
            vec += sign * term.weight * v
            if fid is not None and sign > 0:
                used.append(fid)
    norm = float(np.linalg.norm(vec))
    if norm < 1e-6:
        raise ConfigError("the added and subtracted terms cancel the query out; use smaller weights")
    return (vec / norm).astype(np.float32), used
