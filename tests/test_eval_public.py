"""Public-benchmark converters, each on a few records written in the exact published format (generated images)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from picscope.eval import public
from picscope.eval.dataset import DatasetError, load_dataset
from tests.helpers import noise_image


def _img(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(seed).save(path)


def test_karpathy_flickr30k_and_coco(tmp_path: Path) -> None:
    root = tmp_path / "flickr30k-images"
    images = []
    for i, split in enumerate(["test", "test", "train"]):
        _img(root / f"{i}.jpg", i)
        images.append(
            {
                "filename": f"{i}.jpg",
                "split": split,
                "sentences": [
                    {"raw": f"A dog number {i} .", "tokens": ["a"]},
                    {"raw": f"Caption two of {i}", "tokens": []},
                ],
            }
        )
    ann = tmp_path / "dataset_flickr30k.json"
    ann.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    ds = load_dataset(public.karpathy(ann, root, tmp_path / "f30k"))
    assert len(ds.gallery) == 2 and len(ds.queries) == 4
    assert ds.queries[0].text == "A dog number 0 ." and ds.queries[0].relevant == ("images/0.jpg",)
    # COCO: filepath + filename, restval is not test
    coco = tmp_path / "coco"
    _img(coco / "val2014" / "COCO_val2014_1.jpg", 5)
    ann2 = tmp_path / "dataset_coco.json"
    ann2.write_text(
        json.dumps(
            {
                "images": [
                    {
                        "filepath": "val2014",
                        "filename": "COCO_val2014_1.jpg",
                        "split": "test",
                        "cocoid": 1,
                        "sentences": [{"raw": "a bus"}],
                    },
                    {
                        "filepath": "val2014",
                        "filename": "COCO_val2014_2.jpg",
                        "split": "restval",
                        "cocoid": 2,
                        "sentences": [],
                    },
                ]
            }
        )
    )
    ds2 = load_dataset(public.karpathy(ann2, coco, tmp_path / "coco5k"))
    assert ds2.gallery == ["images/val2014/COCO_val2014_1.jpg"]
    with pytest.raises(DatasetError, match="missing"):
        (coco / "val2014" / "COCO_val2014_1.jpg").unlink()
        public.karpathy(ann2, coco, tmp_path / "again")


def test_hf_csv_reads_columns_by_header(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _img(root / "a.jpg", 1)
    _img(root / "b.jpg", 2)
    csv_path = tmp_path / "test_1k_flickr.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sentids", "raw", "split", "filename", "img_id"])  # order read from the header
        w.writerow(["[1, 2]", json.dumps(["cap a1", "cap a2"]), "test", "a.jpg", "0"])
        w.writerow(["[3]", json.dumps(["cap b1"]), "test", "b.jpg", "1"])
    ds = load_dataset(public.hf_retrieval_csv(csv_path, root, tmp_path / "out"))
    assert [q.text for q in ds.queries] == ["cap a1", "cap a2", "cap b1"]
    assert ds.queries[2].relevant == ("images/b.jpg",)


def test_cirr(tmp_path: Path) -> None:
    root = tmp_path / "img_raw"
    split = {}
    for i in range(3):
        name = f"dev-{i}-0-img0"
        _img(root / "dev" / f"{name}.png", i)
        split[name] = f"./dev/{name}.png"
    (tmp_path / "split.rc2.val.json").write_text(json.dumps(split))
    caps = [
        {
            "pairid": 7,
            "reference": "dev-0-0-img0",
            "target_hard": "dev-2-0-img0",
            "target_soft": {},
            "caption": "make it blue",
            "img_set": {"id": 1, "members": list(split), "reference_rank": 0, "target_rank": 2},
        },
        {
            "pairid": 8,
            "reference": "dev-1-0-img0",
            "target_hard": "dev-1-0-img0",
            "target_soft": {},
            "caption": "",
            "img_set": {"id": 2, "members": [], "reference_rank": 0, "target_rank": 0},
        },
    ]
    (tmp_path / "cap.rc2.val.json").write_text(json.dumps(caps))
    ds = load_dataset(
        public.cirr(tmp_path / "cap.rc2.val.json", tmp_path / "split.rc2.val.json", root, tmp_path / "out")
    )
    q = ds.queries[0]
    assert (q.id, q.text, q.reference, q.relevant) == (
        "7",
        "make it blue",
        "images/dev-0-0-img0.png",
        ("images/dev-2-0-img0.png",),
    )
    assert ds.queries[1].text == "the same image"


def test_circo_val_and_test_without_ground_truth(tmp_path: Path) -> None:
    coco = tmp_path / "COCO2017_unlabeled"
    infos = []
    for i in (1, 2, 3):
        name = f"{i:012d}.jpg"
        _img(coco / "unlabeled2017" / name, i)
        infos.append({"id": i, "file_name": name})
    (coco / "annotations").mkdir()
    (coco / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps({"images": infos}))
    val = [
        {
            "id": 0,
            "reference_img_id": 1,
            "target_img_id": 2,
            "relative_caption": "has two dogs",
            "shared_concept": "dog",
            "gt_img_ids": [2, 3],
        }
    ]
    (tmp_path / "val.json").write_text(json.dumps(val))
    ds = load_dataset(public.circo(tmp_path / "val.json", coco, tmp_path / "out"))
    assert ds.queries[0].relevant == ("images/000000000002.jpg", "images/000000000003.jpg")
    assert ds.queries[0].reference == "images/000000000001.jpg"
    test = [{"id": 0, "reference_img_id": 1, "relative_caption": "x", "shared_concept": "y"}]
    (tmp_path / "test.json").write_text(json.dumps(test))
    with pytest.raises(DatasetError, match="only val can be scored"):
        public.circo(tmp_path / "test.json", coco, tmp_path / "out2")


def test_fashioniq(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for i, asin in enumerate(["B001", "B002"]):
        _img(root / f"{asin}.png", i)
    (tmp_path / "split.dress.val.json").write_text(json.dumps(["B001", "B002"]))
    (tmp_path / "cap.dress.val.json").write_text(
        json.dumps([{"target": "B002", "candidate": "B001", "captions": ["is shorter", "has no sleeves."]}])
    )
    ds = load_dataset(
        public.fashioniq(tmp_path / "cap.dress.val.json", tmp_path / "split.dress.val.json", root, tmp_path / "out")
    )
    assert ds.queries[0].text == "is shorter and has no sleeves"
    assert ds.queries[0].reference == "images/B001.png" and ds.queries[0].relevant == ("images/B002.png",)


def test_visdial_chatir(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    space = []
    for i in range(2):
        rel = f"unlabeled2017/{i:012d}.jpg"
        _img(coco / rel, i)
        space.append(rel)
    (tmp_path / "Search_Space_val_50k.json").write_text(json.dumps(space))
    dialog = [{"img": space[1], "dialog": ["a man on a horse", "is it sunny? yes", "how many? one"]}]
    (tmp_path / "VisDial_v1.0_queries_val.json").write_text(json.dumps(dialog))
    ds = load_dataset(
        public.visdial(
            tmp_path / "VisDial_v1.0_queries_val.json", tmp_path / "Search_Space_val_50k.json", coco, tmp_path / "out"
        )
    )
    q = ds.queries[0]
    assert q.text == "a man on a horse" and q.turns == ("is it sunny? yes", "how many? one")
    assert q.relevant == (f"images/{space[1]}",)
