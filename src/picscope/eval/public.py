"""Converters from public benchmarks, in their published formats, to our dataset folder (images symlinked).

Each checks the layout and says exactly what is missing. Names follow ImageScope's task set (papers.md B.7):
Flickr30K 1K / MSCOCO 5K (Karpathy json or the HF CSV variant), CIRR, CIRCO, FashionIQ, VisDial under the ChatIR
protocol. Results on these need the real images, which are not on the build machines.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from picscope.eval.dataset import DatasetError, Query, link_image, write_dataset


def _read_json(path: Path) -> object:
    if not path.exists():
        raise DatasetError(f"missing annotation file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc


_A = TypeVar("_A")
_B = TypeVar("_B")


def _read_pair(first: Path, first_type: type[_A], second: Path, second_type: type[_B],
               problem: str) -> tuple[_A, _B]:
    """Two annotation files of one benchmark, each checked to be a JSON list or object; `problem` otherwise."""
    a, b = _read_json(first), _read_json(second)
    if not isinstance(a, first_type) or not isinstance(b, second_type):
        raise DatasetError(problem)
    return a, b


def _link_gallery(pairs: Iterable[tuple[Path, str]], out: Path) -> None:
    """Link (source file, key) pairs; refuse with a clear message when images are missing."""
    pairs = list(pairs)
    missing = [str(src) for src, _ in pairs if not src.exists()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(pairs)} images are missing; first: {missing[:3]}")
    for src, key in pairs:
        link_image(src, out / key)


def karpathy(annotations: Path, images_root: Path, out: Path, split: str = "test") -> Path:
    """Flickr30K (`dataset_flickr30k.json`) or MSCOCO (`dataset_coco.json`) Karpathy split → text→image queries."""
    data = _read_json(annotations)
    if not isinstance(data, dict) or "images" not in data:
        raise DatasetError(f"{annotations}: expected a Karpathy split file with an 'images' list")
    pairs, queries = [], []
    for img in data["images"]:
        if img.get("split") != split:
            continue
        rel = f"{img['filepath']}/{img['filename']}" if img.get("filepath") else img["filename"]
        key = f"images/{rel}"
        pairs.append((images_root / rel, key))
        for i, sent in enumerate(img.get("sentences", [])):
            queries.append(Query(f"{Path(rel).stem}#{i}", sent["raw"].strip(), (key,)))
    if not pairs:
        raise DatasetError(f"{annotations}: no images with split == {split!r}")
    _link_gallery(pairs, out)
    return write_dataset(out, queries)


def hf_retrieval_csv(csv_path: Path, images_root: Path, out: Path) -> Path:
    """The HF CSV variant (e.g. nlphuji flickr_1k_test / mscoco_5k_test): one row per image; columns by header."""
    if not csv_path.exists():
        raise DatasetError(f"missing {csv_path}")
    with csv_path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    cols = list(rows[0])
    file_col = next((c for c in cols if c.lower() in ("filename", "file_name", "image", "img", "image_path")), None)
    cap_cols = [c for c in cols if c.lower() in ("raw", "captions", "caption", "sentences")] or [
        c for c in cols if c.lower().startswith("caption")
    ]
    if file_col is None or not cap_cols:
        raise DatasetError(f"{csv_path}: need an image file column and caption column(s); header is {cols}")
    pairs, queries = [], []
    for row in rows:
        rel = row[file_col]
        key = f"images/{rel}"
        pairs.append((images_root / rel, key))
        caps: list[str] = []
        for c in cap_cols:
            value = row[c].strip()
            if value.startswith("["):
                caps.extend(str(x) for x in json.loads(value))
            elif value:
                caps.append(value)
        queries += [Query(f"{Path(rel).stem}#{i}", cap, (key,)) for i, cap in enumerate(caps)]
    _link_gallery(pairs, out)
    return write_dataset(out, queries)


def cirr(captions: Path, image_split: Path, images_root: Path, out: Path) -> Path:
    """CIRR `cap.rc2.<split>.json` + `split.rc2.<split>.json` (name → ./relative/path.png); gallery = the split."""
    caps, split = _read_pair(captions, list, image_split, dict,
                             "CIRR: captions must be a list and the image split a name → path object")
    keys = {name: f"images/{name}{Path(rel).suffix or '.png'}" for name, rel in split.items()}
    _link_gallery(((images_root / rel.lstrip("./"), keys[name]) for name, rel in split.items()), out)
    queries = []
    for c in caps:
        if c["reference"] not in keys or c.get("target_hard") not in keys:
            raise DatasetError(f"CIRR pair {c.get('pairid')}: reference or target not in the image split")
        text = c["caption"].strip() or "the same image"
        queries.append(Query(str(c["pairid"]), text, (keys[c["target_hard"]],), reference=keys[c["reference"]]))
    return write_dataset(out, queries)


def circo(annotations: Path, coco_root: Path, out: Path) -> Path:
    """CIRCO `annotations/val.json`; images from COCO 2017 unlabeled (`unlabeled2017/` + its image_info json)."""
    anns, info = _read_pair(annotations, list, coco_root / "annotations" / "image_info_unlabeled2017.json", dict,
                            "CIRCO: annotations must be a list; image_info must have an 'images' list")
    names = {int(im["id"]): im["file_name"] for im in info["images"]}
    needed = {int(a["reference_img_id"]) for a in anns}
    for a in anns:
        needed.update(int(g) for g in a.get("gt_img_ids", []))
    gallery_ids = sorted(names)  # the whole unlabeled set is the gallery
    _link_gallery(((coco_root / "unlabeled2017" / names[i], f"images/{names[i]}") for i in gallery_ids), out)
    missing = needed - set(names)
    if missing:
        raise DatasetError(f"CIRCO: {len(missing)} image ids are not in image_info_unlabeled2017.json")
    queries = []
    for a in anns:
        if "gt_img_ids" not in a:
            raise DatasetError("CIRCO test annotations have no ground truth: only val can be scored locally")
        queries.append(
            Query(
                str(a["id"]),
                a["relative_caption"].strip(),
                tuple(f"images/{names[int(g)]}" for g in a["gt_img_ids"]),
                reference=f"images/{names[int(a['reference_img_id'])]}",
            )
        )
    return write_dataset(out, queries)


def fashioniq(captions: Path, image_split: Path, images_root: Path, out: Path, ext: str = ".png") -> Path:
    """FashionIQ `cap.<cat>.val.json` + `split.<cat>.val.json`; instruction = captions[0] + ' and ' + captions[1]."""
    caps, split = _read_pair(captions, list, image_split, list,
                             "FashionIQ: captions and image split must both be lists")
    keys = {asin: f"images/{asin}{ext}" for asin in split}
    _link_gallery(((images_root / f"{asin}{ext}", key) for asin, key in keys.items()), out)
    queries = []
    for i, c in enumerate(caps):
        text = " and ".join(s.strip().rstrip(".") for s in c["captions"][:2])
        if c["candidate"] not in keys or c["target"] not in keys:
            raise DatasetError(f"FashionIQ item {i}: candidate or target not in the image split")
        queries.append(Query(f"{i}", text, (keys[c["target"]],), reference=keys[c["candidate"]]))
    return write_dataset(out, queries)


def visdial(dialogues: Path, search_space: Path, coco_root: Path, out: Path) -> Path:
    """ChatIR protocol: `VisDial_v1.0_queries_val.json` dialogues + `Search_Space_val_50k.json` (image paths)."""
    dialogs, space = _read_pair(dialogues, list, search_space, list,
                                "VisDial/ChatIR: dialogues and search space must be lists")
    _link_gallery(((coco_root / rel, f"images/{rel}") for rel in space), out)
    keys = {rel: f"images/{rel}" for rel in space}
    queries = []
    for i, d in enumerate(dialogs):
        if d["img"] not in keys:
            raise DatasetError(f"dialogue {i}: target {d['img']} is not in the search space")
        turns = [t.strip() for t in d["dialog"]]
        queries.append(Query(f"{i}", turns[0], (keys[d["img"]],), turns=tuple(turns[1:])))
    return write_dataset(out, queries)
