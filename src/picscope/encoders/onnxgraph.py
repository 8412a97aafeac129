"""A few lines over `onnx.helper` to write inference graphs from numpy weights (no torch, no exporter)."""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 17


class Graph:
    """Accumulates nodes and initialisers; `op(...)` returns the name of its (first) output."""

    def __init__(self) -> None:
        try:
            import onnx  # noqa: F401
        except ImportError as exc:  # pragma: no cover - a base dependency
            from picscope.errors import EncoderError

            raise EncoderError(f"building the ONNX model needs the `onnx` package: {exc}") from exc
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: np.ndarray | float | list[int], hint: str = "c") -> str:
        from onnx import numpy_helper

        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        outs = [name or self._name(op_type.lower())] + [self._name(op_type.lower()) for _ in range(outputs - 1)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0]

    def model(self, inputs: list[Any], outputs: list[Any], graph_name: str) -> bytes:
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="picscope")
        model.ir_version = 8  # readable by every ONNX Runtime we support (>= 1.17)
        checker.check_model(model)
        return bytes(model.SerializeToString())
