"""OnnxBuilder: collects ONNX nodes, initializers, inputs and outputs with unique names."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..dtypes import TensorType, to_numpy_dtype

ONNX_DTYPES = {
    "f16": TensorProto.FLOAT16,
    "f32": TensorProto.FLOAT,
    "f64": TensorProto.DOUBLE,
    "s8": TensorProto.INT8,
    "s16": TensorProto.INT16,
    "s32": TensorProto.INT32,
    "s64": TensorProto.INT64,
    "u8": TensorProto.UINT8,
    "u16": TensorProto.UINT16,
    "u32": TensorProto.UINT32,
    "u64": TensorProto.UINT64,
    "pred": TensorProto.BOOL,
}


def onnx_dtype(dtype: str) -> int:
    """The TensorProto element type of an axonc dtype name."""
    return ONNX_DTYPES[dtype]


class OnnxBuilder:
    """Builds one ONNX graph. Every value, node and initializer name is unique."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._names: set[str] = set()
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self.scope = ""

    # ---- names ---------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        """A new unique value name derived from `hint` (prefixed by the current layer)."""
        base = re.sub(r"[^A-Za-z0-9_./:-]", "_", hint) or "v"
        name, n = base, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def reserve(self, name: str) -> str:
        """Claim an exact name (graph inputs, parameters); a clash is a bug in the caller."""
        if name in self._names:
            raise ValueError(f"ONNX value name {name!r} is used twice")
        self._names.add(name)
        return name

    # ---- graph pieces ----------------------------------------------------------

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        *,
        outputs: int = 1,
        name: str | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> Any:
        """Emit one node; returns its output name (or a list when `outputs` > 1).

        An empty string in `inputs` marks an omitted optional ONNX input.
        """
        hint = f"{self.scope}/{name or op_type}" if self.scope else (name or op_type)
        outs = [self.fresh(hint if outputs == 1 else f"{hint}:{i}") for i in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            helper.make_node(
                op_type, list(inputs), outs, name=self.fresh(f"{hint}#node"), domain=domain, **attrs
            )
        )
        return outs[0] if outputs == 1 else outs

    def const(self, value: Any, dtype: str | None = None, hint: str = "const") -> str:
        """An initializer holding `value` (deduplicated by dtype, shape and bytes)."""
        arr = np.asarray(value) if dtype is None else np.asarray(value, to_numpy_dtype(dtype))
        arr = np.array(arr, order="C")
        key = (str(arr.dtype), arr.tobytes(), arr.shape)
        if key not in self._consts:
            name = self.fresh(f"{self.scope}/{hint}" if self.scope else hint)
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        """An int64 1-D initializer (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), dtype=np.int64), hint=hint)

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool) -> str:
        """A Reduce* node; axes are an input from opset 18 (13 for ReduceSum), else an attribute."""
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes_as_input:
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))

    def clip(self, x: str, lo: float | None, hi: float | None, dtype: str = "f32") -> str:
        """Clip with optional bounds given as constants of the input's dtype."""
        bounds = ["" if v is None else self.const(v, dtype, "bound") for v in (lo, hi)]
        while bounds and bounds[-1] == "":
            bounds.pop()
        return self.op("Clip", [x, *bounds])

    def cast(self, x: str, dtype: str) -> str:
        return self.op("Cast", [x], to=onnx_dtype(dtype))

    def initializer(self, name: str, value: np.ndarray) -> str:
        """A named initializer (a parameter), stored under exactly `name`."""
        self.reserve(name)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def add_input(self, name: str, t: TensorType, dims: Sequence[Any] | None = None) -> str:
        """A graph input of type `t`; `dims` may name dynamic dims (strings)."""
        self.reserve(name)
        shape = list(dims) if dims is not None else list(t.shape)
        self.inputs.append(helper.make_tensor_value_info(name, onnx_dtype(t.dtype), shape))
        return name

    def add_output(
        self, value: str, name: str, t: TensorType, dims: Sequence[Any] | None = None
    ) -> str:
        """Expose `value` as the graph output `name` (through Identity when renamed)."""
        if value != name:
            self.reserve(name)
            self.nodes.append(
                helper.make_node("Identity", [value], [name], name=self.fresh(f"{name}#node"))
            )
        shape = list(dims) if dims is not None else list(t.shape)
        self.outputs.append(helper.make_tensor_value_info(name, onnx_dtype(t.dtype), shape))
        return name

    def value_info(self, name: str, dtype: str, shape: Sequence[Any]) -> onnx.ValueInfoProto:
        """The type record of a value (a subgraph's inputs and outputs, e.g. a Scan body's)."""
        return helper.make_tensor_value_info(name, onnx_dtype(dtype), list(shape))

    def graph(self, name: str) -> onnx.GraphProto:
        return helper.make_graph(
            self.nodes, name, self.inputs, self.outputs, initializer=self.initializers
        )
