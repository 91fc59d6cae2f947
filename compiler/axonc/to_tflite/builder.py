"""TfliteBuilder: tensors, 16-byte-aligned buffers, operator codes and operators of one subgraph.

Values are tensor indices. Every tensor carries its axonc type: the shape with
None for the (dynamic) batch, written to the file as a concrete `shape` (1 for
None) plus `shapeSignature` with -1, which is how LiteRT marks a resizable dim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..dtypes import TensorType, dtype_name, to_numpy_dtype
from ..errors import AxoncError
from .schema import schema

TFLITE_DTYPES = {
    "f16": "FLOAT16",
    "f32": "FLOAT32",
    "f64": "FLOAT64",
    "s8": "INT8",
    "s16": "INT16",
    "s32": "INT32",
    "s64": "INT64",
    "u8": "UINT8",
    "u16": "UINT16",
    "u32": "UINT32",
    "u64": "UINT64",
    "pred": "BOOL",
}
BUFFER_ALIGNMENT = 16
# A flatbuffer addresses its contents with signed 32-bit offsets.
MAX_MODEL_BYTES = 2**31 - 2**20


class ModelTooLargeError(AxoncError, ValueError):
    """The model's tensors do not fit in one TFLite flatbuffer (2 GB)."""


def tflite_dtype(dtype: str) -> int:
    """The schema's TensorType code of an axonc dtype name."""
    return getattr(schema().TensorType, TFLITE_DTYPES[dtype])


def broadcast(*shapes: Sequence[int | None]) -> tuple[int | None, ...]:
    """NumPy broadcasting of shapes whose None (the batch) broadcasts like a dim > 1."""
    rank = max(len(s) for s in shapes)
    out: list[int | None] = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        if None in dims:
            out.append(None)
        else:
            out.append(max(dims))
    return tuple(out)


class _AlignedBuffer:
    """A buffer whose data vector starts on a 16-byte boundary of the file."""

    def __init__(self, data: bytes):
        self.data = data

    def Pack(self, builder: Any) -> int:
        s = schema()
        vec = None
        if self.data:
            builder.StartVector(1, len(self.data), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(self.data)
            builder.Bytes[builder.head : builder.head + len(self.data)] = self.data
            vec = builder.EndVector()
        s.BufferStart(builder)
        if vec is not None:
            s.BufferAddData(builder, vec)
        return s.BufferEnd(builder)


class TfliteBuilder:
    """Builds one TFLite subgraph; `finish()` returns the model's bytes."""

    def __init__(self) -> None:
        self.s = schema()
        self.tensors: list[Any] = []
        self.types: list[TensorType] = []
        self.buffers: list[_AlignedBuffer] = [_AlignedBuffer(b"")]  # 0: the empty sentinel
        self.opcodes: dict[tuple[int, int], int] = {}
        self._opcode_list: list[Any] = []
        self.operators: list[Any] = []
        self.inputs: list[tuple[str, int]] = []
        self.outputs: list[tuple[str, int]] = []
        self.metadata: dict[str, bytes] = {}
        self._names: set[str] = set()
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], int] = {}
        self.scope = ""
        self.data_bytes = 0

    # ---- tensors ---------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        """A new unique tensor name derived from `hint` (prefixed by the current layer)."""
        base = re.sub(r"[^A-Za-z0-9_./:;-]", "_", hint) or "t"
        name, n = base, 0
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def tensor(
        self,
        t: TensorType,
        hint: str,
        *,
        data: bytes | None = None,
        variable: bool = False,
        exact: bool = False,
    ) -> int:
        """A new tensor of type `t`; `data` makes it a constant with its own buffer."""
        s = self.s
        tt = s.TensorT()
        tt.name = hint if exact else self.fresh(f"{self.scope}/{hint}" if self.scope else hint)
        if exact:
            if hint in self._names:
                raise ValueError(f"TFLite tensor name {hint!r} is used twice")
            self._names.add(hint)
        tt.shape = [1 if d is None else int(d) for d in t.shape]
        if any(d is None for d in t.shape):
            tt.shapeSignature = [-1 if d is None else int(d) for d in t.shape]
        tt.type = tflite_dtype(t.dtype)
        tt.isVariable = variable
        tt.hasRank = True
        tt.buffer = 0
        if data is not None:
            self.buffers.append(_AlignedBuffer(data))
            self.data_bytes += len(data) + BUFFER_ALIGNMENT
            tt.buffer = len(self.buffers) - 1
        elif variable:
            # LiteRT needs a buffer index on a variable tensor; an empty one means zeros.
            self.buffers.append(_AlignedBuffer(b""))
            tt.buffer = len(self.buffers) - 1
        self.tensors.append(tt)
        self.types.append(t)
        return len(self.tensors) - 1

    def const(self, value: Any, dtype: str | None = None, hint: str = "const") -> int:
        """A constant tensor holding `value` (deduplicated by dtype, shape and bytes)."""
        arr = np.asarray(value) if dtype is None else np.asarray(value, to_numpy_dtype(dtype))
        arr = np.array(arr, order="C")  # (ascontiguousarray would make a scalar 1-D)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        key = (str(arr.dtype), arr.tobytes(), arr.shape)
        if key not in self._consts:
            t = TensorType(arr.shape, dtype_name(arr.dtype))
            self._consts[key] = self.tensor(t, hint, data=arr.tobytes())
        return self._consts[key]

    def ints(self, values: Sequence[int], hint: str = "ints") -> int:
        """An int32 1-D constant (shapes, axes, paddings)."""
        return self.const(np.asarray(list(values), dtype=np.int32), hint=hint)

    def type_of(self, t: int) -> TensorType:
        return self.types[t]

    # ---- operators ---------------------------------------------------------------

    def opcode(self, name: str) -> int:
        """The operator-code index of builtin `name`; codes > 127 use builtinCode only."""
        code = getattr(self.s.BuiltinOperator, name)
        key = (code, 1)
        if key not in self.opcodes:
            oc = self.s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.opcodes[key] = len(self.opcodes)
            self._opcode_list.append(oc)
        return self.opcodes[key]

    def op(
        self,
        name: str,
        inputs: Sequence[int],
        out: TensorType | Sequence[TensorType] | None = None,
        *,
        options: Any = None,
        hint: str | None = None,
        outputs: Sequence[int] | None = None,
    ) -> Any:
        """Emit builtin operator `name`; returns its output tensor (or list of them).

        `out` is the output type (a list for several outputs); without it the
        output is the broadcast of the inputs (element-wise ops). -1 in `inputs`
        marks an omitted optional input. `options` is an `<Name>OptionsT` object.
        """
        if outputs is None:
            if out is None:
                real = [self.types[i] for i in inputs if i >= 0]
                out = TensorType(broadcast(*[t.shape for t in real]), real[0].dtype)
            outs_t = [out] if isinstance(out, TensorType) else list(out)
            outputs = [self.tensor(t, hint or name.lower()) for t in outs_t]
        o = self.s.OperatorT()
        o.opcodeIndex = self.opcode(name)
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            kind = type(options).__name__[:-1]  # e.g. "FullyConnectedOptions"
            if hasattr(self.s.BuiltinOptions, kind):
                o.builtinOptionsType = getattr(self.s.BuiltinOptions, kind)
                o.builtinOptions = options
            else:
                o.builtinOptions2Type = getattr(self.s.BuiltinOptions2, kind)
                o.builtinOptions2 = options
        self.operators.append(o)
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def options(self, kind: str, **fields: Any) -> Any:
        """An `<kind>OptionsT` object with `fields` set (enum fields by their names)."""
        opt = getattr(self.s, f"{kind}OptionsT")()
        for key, value in fields.items():
            if key == "fusedActivationFunction" and isinstance(value, str):
                value = getattr(self.s.ActivationFunctionType, value)
            if key == "padding" and isinstance(value, str):
                value = getattr(self.s.Padding, value)
            setattr(opt, key, value)
        return opt

    # ---- common patterns -----------------------------------------------------------

    def scalar(self, value: float, like: int, hint: str = "scalar") -> int:
        """A rank-0 constant of the dtype of tensor `like`."""
        return self.const(np.asarray(value, to_numpy_dtype(self.types[like].dtype)), hint=hint)

    def unary(self, name: str, x: int, options: Any = None) -> int:
        return self.op(name, [x], self.types[x], options=options)

    def binary(self, name: str, a: int, c: int, options: Any = None) -> int:
        """An element-wise binary op (ADD, SUB, MUL, DIV, MAXIMUM, ...) with broadcasting."""
        t = TensorType(broadcast(self.types[a].shape, self.types[c].shape), self.types[a].dtype)
        return self.op(name, [a, c], t, options=options)

    def compare(self, name: str, a: int, c: int) -> int:
        """A comparison (LESS, EQUAL, ...) giving a bool tensor."""
        t = TensorType(broadcast(self.types[a].shape, self.types[c].shape), "pred")
        return self.op(name, [a, c], t)

    def cast(self, x: int, dtype: str) -> int:
        if self.types[x].dtype == dtype:
            return x
        return self.op("CAST", [x], TensorType(self.types[x].shape, dtype))

    def reshape(self, x: int, shape: Sequence[int | None]) -> int:
        """RESHAPE to `shape`, where None (the batch) is written as -1."""
        t = TensorType(tuple(shape), self.types[x].dtype)
        dims = [-1 if d is None else int(d) for d in shape]
        return self.op("RESHAPE", [x, self.ints(dims, "shape")], t, options=self.options("Reshape"))

    def transpose(self, x: int, perm: Sequence[int]) -> int:
        shape = self.types[x].shape
        t = TensorType(tuple(shape[p] for p in perm), self.types[x].dtype)
        return self.op("TRANSPOSE", [x, self.ints(perm, "perm")], t)

    def reduce(self, name: str, x: int, axes: Sequence[int], keepdims: bool) -> int:
        """SUM / MEAN / REDUCE_MAX / REDUCE_MIN / REDUCE_PROD / REDUCE_ANY over `axes`."""
        t = self.types[x]
        axes = sorted(a % t.rank for a in axes)
        shape = [1 if i in axes else d for i, d in enumerate(t.shape)]
        if not keepdims:
            shape = [d for i, d in enumerate(shape) if i not in axes]
        out = TensorType(tuple(shape), t.dtype)
        return self.op(
            name,
            [x, self.ints(axes, "axes")],
            out,
            options=self.options("Reducer", keepDims=keepdims),
        )

    def on_last_axis(self, x: int, axis: int, fn: Any) -> int:
        """Apply `fn` (an op over the last axis) to `x` along `axis`, transposing around it."""
        rank = self.types[x].rank
        axis %= rank
        if axis == rank - 1:
            return fn(x)
        perm = [i for i in range(rank) if i != axis] + [axis]
        inverse = [perm.index(i) for i in range(rank)]
        return self.transpose(fn(self.transpose(x, perm)), inverse)

    def softmax(self, x: int, axis: int) -> int:
        """SOFTMAX (beta 1: the schema's default of 0 would give a uniform output)."""
        return self.on_last_axis(
            x, axis, lambda v: self.unary("SOFTMAX", v, self.options("Softmax", beta=1.0))
        )

    def pad(self, x: int, pads: Sequence[tuple[int, int]], value: float = 0.0) -> int:
        """Pad every axis by (lo, hi) >= 0 with `value` (PADV2); no op when all are zero."""
        t = self.types[x]
        if not any(lo or hi for lo, hi in pads):
            return x
        shape = tuple(None if d is None else d + lo + hi for d, (lo, hi) in zip(t.shape, pads))
        paddings = self.const(np.asarray(pads, np.int32).reshape(-1, 2), hint="paddings")
        return self.op("PADV2", [x, paddings, self.scalar(value, x)], t.with_shape(shape))

    def crop(self, x: int, crops: Sequence[tuple[int, int]]) -> int:
        """Drop (lo, hi) >= 0 elements from each axis (SLICE); the cropped axes must be static."""
        t = self.types[x]
        if not any(lo or hi for lo, hi in crops):
            return x
        begin = [lo for lo, _ in crops]
        size = [-1 if d is None else d - lo - hi for d, (lo, hi) in zip(t.shape, crops)]
        out = tuple(None if d is None else n for d, n in zip(t.shape, size))
        return self.op(
            "SLICE", [x, self.ints(begin, "begin"), self.ints(size, "size")], t.with_shape(out)
        )

    def clip(self, x: int, lo: float, hi: float) -> int:
        return self.binary(
            "MINIMUM", self.binary("MAXIMUM", x, self.scalar(lo, x)), self.scalar(hi, x)
        )

    # ---- the model ---------------------------------------------------------------------

    def add_input(self, name: str, t: TensorType) -> int:
        idx = self.tensor(t, name, exact=True)
        self.inputs.append((name, idx))
        return idx

    def add_output(self, value: int, name: str) -> int:
        """Expose tensor `value` as output `name` (renaming it, or through a RESHAPE copy)."""
        taken = {i for _, i in self.inputs} | {i for _, i in self.outputs}
        if value in taken or self.tensors[value].buffer:
            t = self.types[value]
            value = self.op(
                "RESHAPE",
                [value, self.ints([-1 if d is None else d for d in t.shape], "shape")],
                t,
            )
        self._names.discard(self.tensors[value].name)
        if name in self._names:
            raise ValueError(f"TFLite tensor name {name!r} is used twice")
        self._names.add(name)
        self.tensors[value].name = name
        self.outputs.append((name, value))
        return value

    def finish(self, signature_key: str = "serving_default") -> bytes:
        """The model as a TFLite flatbuffer (file identifier TFL3, schema version 3)."""
        s = self.s
        total = self.data_bytes + sum(len(v) for v in self.metadata.values())
        if total > MAX_MODEL_BYTES:
            raise ModelTooLargeError(
                f"the model holds {total / 2**30:.2f} GiB of tensors; a TFLite flatbuffer "
                f"holds at most 2 GiB (export it as ONNX, which stores large tensors aside)"
            )
        self._drop_unused_tensors()
        sub = s.SubGraphT()
        sub.tensors = self.tensors
        sub.inputs = [i for _, i in self.inputs]
        sub.outputs = [i for _, i in self.outputs]
        sub.operators = self.operators
        sub.name = "main"
        sig = s.SignatureDefT()
        sig.signatureKey = signature_key
        sig.subgraphIndex = 0
        sig.inputs = [self._tensor_map(n, i) for n, i in self.inputs]
        sig.outputs = [self._tensor_map(n, i) for n, i in self.outputs]
        model = s.ModelT()
        model.version = 3
        model.description = "axonc"
        model.operatorCodes = self._opcode_list
        model.subgraphs = [sub]
        model.signatureDefs = [sig]
        buffers = list(self.buffers)
        model.metadata = []
        for key, value in self.metadata.items():
            m = s.MetadataT()
            m.name = key
            m.buffer = len(buffers)
            buffers.append(_AlignedBuffer(value))
            model.metadata.append(m)
        model.buffers = buffers
        import flatbuffers  # LiteRT's dependency: the `tflite` extra, loaded on export

        fb = flatbuffers.Builder(1024 + total)
        fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    def _drop_unused_tensors(self) -> None:
        """Remove operators whose results nothing reads (e.g. an RNN's unused sequence), then
        tensors no operator or signature uses (left by fusion), renumbering the rest."""
        outputs = {i for _, i in self.outputs}
        while True:
            read = outputs | {i for o in self.operators for i in o.inputs}
            live = [o for o in self.operators if any(t in read for t in o.outputs)]
            if len(live) == len(self.operators):
                break
            self.operators = live
        used = {i for _, i in self.inputs} | outputs
        for o in self.operators:
            used.update(i for i in o.inputs if i >= 0)
            used.update(o.outputs)
        keep = sorted(used)
        index = {old: new for new, old in enumerate(keep)}
        self.tensors = [self.tensors[i] for i in keep]
        self.types = [self.types[i] for i in keep]
        for o in self.operators:
            o.inputs = [index[i] if i >= 0 else -1 for i in o.inputs]
            o.outputs = [index[i] for i in o.outputs]
        self.inputs = [(n, index[i]) for n, i in self.inputs]
        self.outputs = [(n, index[i]) for n, i in self.outputs]
        self._consts = {k: index[v] for k, v in self._consts.items() if v in index}

    def _tensor_map(self, name: str, index: int) -> Any:
        tm = self.s.TensorMapT()
        tm.name = name
        tm.tensorIndex = index
        return tm


def _buffer_bytes(data: bytes, buf: Any) -> bytes:
    """A buffer's contents: inline data, or the `offset`/`size` slice of the file that
    writers use for data stored after the flatbuffer (offset 1 marks an empty one)."""
    if buf.data is not None:
        return np.asarray(buf.data, np.uint8).tobytes()
    if buf.offset > 1:
        return bytes(data[buf.offset : buf.offset + buf.size])
    return b""


def repack(data: bytes, transform: Any = None) -> bytes:
    """A model's bytes re-written with every buffer 16-byte aligned, after `transform(ModelT)`."""
    import flatbuffers  # the `tflite` extra, as above

    s = schema()
    model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    if transform is not None:
        transform(model)
    model.buffers = [_AlignedBuffer(_buffer_bytes(data, b)) for b in model.buffers]
    fb = flatbuffers.Builder(len(data) + 4096)
    fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())
