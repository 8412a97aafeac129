"""The on-disk dataset format: a folder with `images/` (the gallery: every image below it) and `queries.jsonl`,
one object per line: {"id": str, "text": str, "relevant": [paths relative to the folder], "reference": path or
null, "turns": [str] or null}. `reference` marks composed queries, `turns` dialogue rounds after `text`.
Images may be symlinks (builders link to data that must not be copied)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from picscope.errors import PicscopeError
from picscope.imageio import is_image_name


class DatasetError(PicscopeError):
    pass


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    relevant: tuple[str, ...]
    reference: str | None = None
    turns: tuple[str, ...] | None = None

    def to_json(self) -> str:
        d = asdict(self)
        d["relevant"] = list(self.relevant)
        d["turns"] = list(self.turns) if self.turns is not None else None
        return json.dumps(d, ensure_ascii=False)


@dataclass
class Dataset:
    root: Path
    queries: list[Query]
    gallery: list[str]  # image paths relative to root, e.g. "images/x.jpg"

    @property
    def name(self) -> str:
        return self.root.name

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for g in self.gallery:
            h.update(g.encode("utf-8", "surrogateescape") + b"\0")
        return h.hexdigest()[:16]


def write_dataset(root: Path, queries: Iterable[Query]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    tmp = root / "queries.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(q.to_json() + "\n")
    tmp.replace(root / "queries.jsonl")
    return root


def link_image(src: Path, dst: Path) -> None:
    """Symlink `src` at `dst` (the data stays where it is)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if os.path.realpath(dst) == os.path.realpath(src):
            return
        dst.unlink()
    dst.symlink_to(os.path.abspath(src))


def load_dataset(root: str | Path) -> Dataset:
    root = Path(root)
    qfile = root / "queries.jsonl"
    if not (root / "images").is_dir() or not qfile.exists():
        raise DatasetError(f"{root} is not a dataset folder: it needs images/ and queries.jsonl")
    gallery = sorted(
        str(Path(dirpath, f).relative_to(root))
        for dirpath, _dirs, files in os.walk(root / "images", followlinks=True)
        for f in files
        if is_image_name(f)
    )
    known = set(gallery)
    queries: list[Query] = []
    with qfile.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                q = Query(
                    id=str(obj["id"]),
                    text=str(obj["text"]),
                    relevant=tuple(obj["relevant"]),
                    reference=obj.get("reference"),
                    turns=tuple(obj["turns"]) if obj.get("turns") else None,
                )
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{qfile}:{n}: invalid query line ({exc})") from exc
            missing = [r for r in (*q.relevant, *([q.reference] if q.reference else [])) if r not in known]
            if missing:
                raise DatasetError(f"{qfile}:{n}: query {q.id!r} names images not in the gallery: {missing[:3]}")
            if not q.relevant:
                raise DatasetError(f"{qfile}:{n}: query {q.id!r} has no relevant image")
            queries.append(q)
    return Dataset(root, queries, gallery)
