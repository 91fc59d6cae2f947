"""Linear layers: Axon's `bias`, `dense`, `bilinear` and `embedding`.

Parameter names and layouts are Axon's: dense `kernel {in, out}` + `bias {out}`,
bilinear `kernel {out, in1, in2}` + `bias {out}`, embedding `kernel {vocab, dim}`,
bias layer `bias {C}` on the last axis. Products are computed in float64 and
returned as f32 (f64 when the input is f64), which is what Nx's type promotion
of an input with the f32 parameters gives.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import (
    TensorType,
    is_float,
    is_int,
    same_dim,
    with_f32_params,
    with_f32_params_np,
)
from ..errors import DTypeError, InputError, ShapeError
from ..initializers import check_initializer
from ..interpreter import layer_param
from ..ir import Axon
from ..registry import Case, Op, Option, ParamSpec, check_bool, check_int, layer_api, register
from ..shape_inference import make_node
from ..tracing import apply
from .activation import apply_activation


def _last_dim(t: TensorType, what: str) -> int:
    if t.rank < 1:
        raise ShapeError(f"{what} must have rank >= 1, got a scalar")
    d = t.shape[-1]
    if d is None:
        raise ShapeError(
            f"the last dim of {what} must be known to size the parameters, got {t.shape}"
        )
    return d


def _bias_specs(opts: dict[str, Any], size: int) -> list[ParamSpec]:
    if not opts["use_bias"]:
        return []
    return [ParamSpec(("bias",), (size,), opts["bias_initializer"])]


def _as_dtype(b: Any, x: str, have: str, want: str) -> str:
    """`x` cast to `want` unless it already has that dtype."""
    return x if have == want else b.cast(x, want)


def _tflite_input(ctx: Any, x: int, dtype: str) -> int:
    """`x` as f32, the dtype TFLite's dense kernels compute in (f64 is not exported)."""
    if dtype == "f64":
        raise ctx.unsupported("f64 inputs: LiteRT's kernels compute in f32")
    return ctx.b.cast(x, "f32")


def _param_as(ctx: Any, key: str, dtype: str) -> str:
    """This layer's f32 parameter `key` as an ONNX value of `dtype` (f64 inputs compute in f64)."""
    return _as_dtype(ctx.b, ctx.param(key), "f32", dtype)


_KERNEL_INIT = {
    "kernel_initializer": Option("glorot_uniform", check_initializer, "initializer of the kernel")
}
_BIAS_OPTS = {
    "bias_initializer": Option("zeros", check_initializer, "initializer of the bias"),
    "use_bias": Option(True, check_bool, "whether to add a bias"),
}


@register
class Bias(Op):
    name = "bias"
    family = "linear"
    doc = "Adds a trainable bias {C} along the last axis: y = x + bias."
    options: ClassVar[dict[str, Option]] = {
        "bias_initializer": Option("zeros", check_initializer, "initializer of the bias")
    }

    def params(self, types, opts, mode, node):
        return [ParamSpec(("bias",), (_last_dim(types[0], "the input"),), opts["bias_initializer"])]

    def infer(self, types, opts, node):
        (t,) = types
        _last_dim(t, "the input")
        return TensorType(t.shape, with_f32_params(t.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        size = ctx.param("bias").shape[0]
        ctx.add_param_grad("bias", anp.sum(anp.reshape(cot, (-1, size)), axis=0))
        return [cot.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else None]

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        b = np.asarray(layer_param(params, "bias", ctx))
        out = x.astype(np.float64) + b.astype(np.float64)
        return out.astype(with_f32_params_np(x.dtype))

    def onnx(self, ctx, inputs, opts):
        dtype = ctx.out_type.dtype
        x = _as_dtype(ctx.b, inputs[0], ctx.in_types[0].dtype, dtype)
        return ctx.b.op("Add", [x, _param_as(ctx, "bias", dtype)])

    def tflite(self, ctx, inputs, opts):
        x = _tflite_input(ctx, inputs[0], ctx.in_types[0].dtype)
        return ctx.b.binary("ADD", x, ctx.param("bias"), options=ctx.b.options("Add"))

    cases: ClassVar[list[Case]] = [
        Case("rank2", lambda x: bias(x), [TensorType((None, 5))]),
        Case("rank4", lambda x: bias(x), [TensorType((None, 3, 3, 2))]),
        Case("int_input", lambda x: bias(x), [TensorType((None, 4), "s32")], int_inputs={0: 9}),
    ]


@register
class Dense(Op):
    name = "dense"
    family = "linear"
    doc = "Fully connected layer: y = x . kernel + bias, contracting the last axis (rank >= 2)."
    options: ClassVar[dict[str, Option]] = {
        "units": Option(check=check_int(1), doc="number of output units"),
        **_KERNEL_INIT,
        **_BIAS_OPTS,
    }

    def params(self, types, opts, mode, node):
        fan_in = _last_dim(types[0], "the input")
        return [
            ParamSpec(("kernel",), (fan_in, opts["units"]), opts["kernel_initializer"]),
            *_bias_specs(opts, opts["units"]),
        ]

    def infer(self, types, opts, node):
        (t,) = types
        if t.rank < 2:
            raise ShapeError(
                f"dense expects an input of rank >= 2 (batch, ..., features), got {t.shape}"
            )
        _last_dim(t, "the input")
        return TensorType((*t.shape[:-1], opts["units"]), with_f32_params(t.dtype))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        k = np.asarray(layer_param(params, "kernel", ctx), dtype=np.float64)
        out = np.tensordot(x.astype(np.float64), k, axes=([x.ndim - 1], [0]))
        if opts["use_bias"]:
            out = out + np.asarray(layer_param(params, "bias", ctx), dtype=np.float64)
        return out.astype(with_f32_params_np(x.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        kernel = ctx.param("kernel")
        fan_in, units = kernel.shape
        flat_cot = anp.reshape(cot, (-1, units))
        if ctx.wants_param("kernel"):
            flat_x = anp.reshape(x, (-1, fan_in)).astype(flat_cot.dtype)
            ctx.add_param_grad("kernel", anp.matmul(flat_x.T, flat_cot))
        if opts["use_bias"]:
            ctx.add_param_grad("bias", anp.sum(flat_cot, axis=0))
        if not np.issubdtype(x.dtype, np.floating):
            return [None]
        return [anp.matmul(cot, kernel.T).astype(x.dtype)]

    def onnx(self, ctx, inputs, opts):
        dtype = ctx.out_type.dtype
        x = _as_dtype(ctx.b, inputs[0], ctx.in_types[0].dtype, dtype)
        kernel = _param_as(ctx, "kernel", dtype)
        bias = [_param_as(ctx, "bias", dtype)] if opts["use_bias"] else []
        if ctx.in_types[0].rank == 2:
            return ctx.b.op("Gemm", [x, kernel, *bias])
        out = ctx.b.op("MatMul", [x, kernel])
        return ctx.b.op("Add", [out, *bias]) if bias else out

    def tflite(self, ctx, inputs, opts):
        """FULLY_CONNECTED with the kernel stored {out, in}; keep_num_dims for rank > 2."""
        b = ctx.b
        x = _tflite_input(ctx, inputs[0], ctx.in_types[0].dtype)
        weights = b.const(np.ascontiguousarray(ctx.value("kernel").T), "f32", "kernel")
        bias = b.const(ctx.value("bias"), "f32", "bias") if opts["use_bias"] else -1
        options = b.options("FullyConnected", keepNumDims=ctx.in_types[0].rank > 2)
        return b.op("FULLY_CONNECTED", [x, weights, bias], ctx.out_type, options=options)

    cases: ClassVar[list[Case]] = [
        Case("rank2", lambda x: dense(x, 4), [TensorType((None, 6))]),
        Case("rank3", lambda x: dense(x, 3), [TensorType((None, 2, 5))]),
        Case(
            "no_bias_relu",
            lambda x: dense(x, 3, use_bias=False, activation="relu"),
            [TensorType((None, 4))],
        ),
        Case("rank4", lambda x: dense(x, 2), [TensorType((None, 2, 3, 4))]),
        Case(
            "int_input_rank3",
            lambda x: dense(x, 3),
            [TensorType((None, 2, 4), "s64")],
            int_inputs={0: 7},
        ),
        Case("int_input_rank2", lambda x: dense(x, 2), [TensorType((None, 3), "u8")]),
        Case("f64_input_rank3", lambda x: dense(x, 2), [TensorType((None, 2, 3), "f64")]),
    ]


@register
class Bilinear(Op):
    name = "bilinear"
    family = "linear"
    doc = "Bilinear layer: y[..., o] = sum_ij a[..., i] K[o, i, j] c[..., j] + bias[o]."
    options: ClassVar[dict[str, Option]] = {
        "units": Option(check=check_int(1), doc="number of output units"),
        **_KERNEL_INIT,
        **_BIAS_OPTS,
    }
    arity = 2

    def params(self, types, opts, mode, node):
        a, c = types
        shape = (opts["units"], _last_dim(a, "input1"), _last_dim(c, "input2"))
        return [
            ParamSpec(("kernel",), shape, opts["kernel_initializer"]),
            *_bias_specs(opts, opts["units"]),
        ]

    def infer(self, types, opts, node):
        a, c = types
        if a.rank < 2 or c.rank < 2:
            raise ShapeError(
                f"bilinear expects two inputs of rank >= 2, got {a.shape} and {c.shape}"
            )
        if a.rank != c.rank:
            raise ShapeError(
                f"bilinear inputs must have the same rank, got {a.shape} and {c.shape}"
            )
        lead = []
        for i, (da, dc) in enumerate(zip(a.shape[:-1], c.shape[:-1], strict=True)):
            if not same_dim(da, dc):
                raise ShapeError(
                    f"bilinear inputs must match in every dim but the last; dim {i} is {da} "
                    f"in input1 {a.shape} and {dc} in input2 {c.shape}"
                )
            lead.append(da if da is not None else dc)
        _last_dim(a, "input1")
        _last_dim(c, "input2")
        dtype = "f64" if "f64" in (a.dtype, c.dtype) else "f32"
        return TensorType((*lead, opts["units"]), dtype)

    def forward(self, ctx, inputs, params, opts):
        a, c = (np.asarray(v) for v in inputs)
        k = np.asarray(layer_param(params, "kernel", ctx), dtype=np.float64)
        out = np.einsum("...i,oij,...j->...o", a.astype(np.float64), k, c.astype(np.float64))
        if opts["use_bias"]:
            out = out + np.asarray(layer_param(params, "bias", ctx), dtype=np.float64)
        f64 = np.float64 in (a.dtype, c.dtype)
        return out.astype(np.float64 if f64 else np.float32)

    def onnx(self, ctx, inputs, opts):
        dtype = ctx.out_type.dtype
        a, c = (
            _as_dtype(ctx.b, v, t.dtype, dtype) for v, t in zip(inputs, ctx.in_types, strict=True)
        )
        kernel = _param_as(ctx, "kernel", dtype)
        out = ctx.b.op("Einsum", [a, kernel, c], equation="...i,oij,...j->...o")
        return ctx.b.op("Add", [out, _param_as(ctx, "bias", dtype)]) if opts["use_bias"] else out

    def tflite(self, ctx, inputs, opts):
        """t[..., o, j] = sum_i a[..., i] K[o, i, j] as FULLY_CONNECTED, then sum_j t c."""
        b = ctx.b
        a, c = (_tflite_input(ctx, v, t.dtype) for v, t in zip(inputs, ctx.in_types, strict=True))
        kernel = ctx.value("kernel").astype(np.float32)
        units, n1, n2 = kernel.shape
        weights = b.const(np.ascontiguousarray(kernel.transpose(0, 2, 1).reshape(units * n2, n1)))
        at, ct = b.type_of(a), b.type_of(c)
        fc = b.op(
            "FULLY_CONNECTED",
            [a, weights, -1],
            TensorType((*at.shape[:-1], units * n2), "f32"),
            options=b.options("FullyConnected", keepNumDims=True),
        )
        t = b.reshape(fc, (*at.shape[:-1], units, n2))
        prod = b.binary("MUL", t, b.reshape(c, (*ct.shape[:-1], 1, n2)))
        out = b.reduce("SUM", prod, [-1], keepdims=False)
        if opts["use_bias"]:
            out = b.binary("ADD", out, ctx.param("bias"))
        return out

    def vjp(self, ctx, inputs, output, cot, opts):
        a, c = inputs
        kernel = ctx.param("kernel").astype(cot.dtype)
        units, n1, n2 = kernel.shape
        af, cf = a.astype(cot.dtype), c.astype(cot.dtype)
        if ctx.wants_param("kernel"):
            flat_cot = anp.reshape(cot, (-1, units))
            outer = anp.expand_dims(anp.reshape(af, (-1, n1)), -1) * anp.expand_dims(
                anp.reshape(cf, (-1, n2)), 1
            )
            grad = anp.matmul(flat_cot.T, anp.reshape(outer, (-1, n1 * n2)))
            ctx.add_param_grad("kernel", anp.reshape(grad, (units, n1, n2)))
        if opts["use_bias"]:
            ctx.add_param_grad("bias", anp.sum(anp.reshape(cot, (-1, units)), axis=0))
        # m[..., i, j] = sum_o cot[..., o] K[o, i, j]
        m = anp.tensordot(cot, kernel, axes=([cot.ndim - 1], [0]))
        da = anp.sum(m * anp.expand_dims(cf, -2), axis=-1) if is_float(a.type.dtype) else None
        dc = anp.sum(m * anp.expand_dims(af, -1), axis=-2) if is_float(c.type.dtype) else None
        return [
            None if da is None else da.astype(a.dtype),
            None if dc is None else dc.astype(c.dtype),
        ]

    cases: ClassVar[list[Case]] = [
        Case(
            "rank2", lambda a, c: bilinear(a, c, 2), [TensorType((None, 3)), TensorType((None, 4))]
        ),
        Case(
            "rank3_no_bias",
            lambda a, c: bilinear(a, c, 3, use_bias=False),
            [TensorType((None, 2, 3)), TensorType((None, 2, 5))],
        ),
        Case(
            "rank4_int_and_float",
            lambda a, c: bilinear(a, c, 2),
            [TensorType((None, 2, 3, 2), "s32"), TensorType((None, 2, 3, 4))],
            int_inputs={0: 5},
        ),
        Case(
            "f64_and_f32",
            lambda a, c: bilinear(a, c, 2),
            [TensorType((None, 3), "f64"), TensorType((None, 2))],
        ),
    ]


@register
class Embedding(Op):
    name = "embedding"
    family = "linear"
    doc = "Lookup table: y = kernel[ids] (kernel {vocab, dim}), output ids.shape + (dim,), f32."
    options: ClassVar[dict[str, Option]] = {
        "vocab_size": Option(check=check_int(1), doc="number of rows of the table"),
        "embedding_size": Option(check=check_int(1), doc="size of each embedding vector"),
        "kernel_initializer": Option("uniform", check_initializer, "initializer of the table"),
    }

    def params(self, types, opts, mode, node):
        shape = (opts["vocab_size"], opts["embedding_size"])
        return [ParamSpec(("kernel",), shape, opts["kernel_initializer"])]

    def infer(self, types, opts, node):
        (t,) = types
        if not is_int(t.dtype):
            raise DTypeError(
                f"embedding expects integer token ids (s32, s64, u8, ...), got dtype {t.dtype}; "
                "feed integer ids (or declare the input with an integer dtype)"
            )
        return TensorType((*t.shape, opts["embedding_size"]), "f32")

    def forward(self, ctx, inputs, params, opts):
        """Gather rows of the table; an id outside [0, vocab_size) is an InputError.

        Nx's BinaryBackend (the backend the golden files come from) raises on an
        out-of-bounds `take`, while XLA/EXLA and Torchx silently clamp the index to
        the nearest row. Clamping hides data bugs (an unknown token quietly becomes
        the last word of the vocabulary), so the reference raises, naming the
        layer and the offending id. Negative ids are out of range too: Nx has no
        negative indexing.
        """
        ids = np.asarray(inputs[0])
        if ids.dtype.kind not in "iu":
            raise InputError(f"layer {ctx.name!r}: token ids must be integers, got {ids.dtype}")
        table = np.asarray(layer_param(params, "kernel", ctx))
        vocab = table.shape[0]
        bad = (ids < 0) | (ids >= vocab)
        if bad.any():
            raise InputError(
                f"layer {ctx.name!r}: token id {ids[bad].flat[0]} is out of range for an embedding "
                f"table of {vocab} rows (valid ids are 0..{vocab - 1}); "
                f"{int(bad.sum())} of {ids.size} ids are out of range"
            )
        return table[ids].astype(np.float32)

    def onnx(self, ctx, inputs, opts):
        """Gather rows of the table. The compiled model does NOT check ids: ONNX leaves
        an out-of-range Gather index undefined and reads a negative one from the end
        of the table (onnxruntime happens to raise for ids >= vocab_size, but accepts
        -vocab_size..-1), unlike the reference, which raises an InputError."""
        ids = inputs[0]
        if ctx.in_types[0].dtype not in ("s32", "s64"):
            ids = ctx.b.cast(ids, "s64")
        return ctx.b.op("Gather", [ctx.param("kernel"), ids], axis=0)

    def tflite(self, ctx, inputs, opts):
        """GATHER of table rows; like the ONNX model it does not check the ids (LiteRT
        rejects an out-of-range id at run time)."""
        ids = ctx.b.cast(inputs[0], "s32")
        options = ctx.b.options("Gather", axis=0)
        return ctx.b.op("GATHER", [ctx.param("kernel"), ids], ctx.out_type, options=options)

    def vjp(self, ctx, inputs, output, cot, opts):
        """Rows of the cotangent summed into the table rows their ids name; ids get none."""
        ids = inputs[0]
        if ctx.wants_param("kernel"):
            kernel = ctx.param("kernel")
            ctx.add_param_grad("kernel", apply("np.take_grad", [cot, ids, kernel], {"axis": 0}))
        return [None]

    cases: ClassVar[list[Case]] = [
        Case(
            "rank2",
            lambda x: embedding(x, 10, 4),
            [TensorType((None, 5), "s64")],
            int_inputs={0: 10},
        ),
        Case(
            "rank1", lambda x: embedding(x, 7, 3), [TensorType((None,), "s32")], int_inputs={0: 7}
        ),
        Case(
            "rank3_u8_ids",
            lambda x: embedding(x, 6, 2),
            [TensorType((None, 2, 3), "u8")],
            int_inputs={0: 6},
        ),
    ]


@layer_api
def bias(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Add a trainable bias along the last axis (options: bias_initializer)."""
    return make_node("bias", [x], opts, name=name)


@layer_api
def dense(x: Axon, units: int, *, name: str | None = None, **opts: Any) -> Axon:
    """Fully connected layer with `units` outputs (options: use_bias, kernel_initializer,
    bias_initializer, activation)."""
    act = opts.pop("activation", None)
    return apply_activation(make_node("dense", [x], {"units": units, **opts}, name=name), act)


@layer_api
def bilinear(
    input1: Axon, input2: Axon, units: int, *, name: str | None = None, **opts: Any
) -> Axon:
    """Bilinear layer of two inputs with `units` outputs (options as dense)."""
    act = opts.pop("activation", None)
    node = make_node("bilinear", [input1, input2], {"units": units, **opts}, name=name)
    return apply_activation(node, act)


@layer_api
def embedding(
    x: Axon, vocab_size: int, embedding_size: int, *, name: str | None = None, **opts: Any
) -> Axon:
    """Embedding lookup of integer ids into a {vocab_size, embedding_size} table."""
    options = {
        "vocab_size": vocab_size,
        "embedding_size": embedding_size,
        **opts,
    }
    return make_node("embedding", [x], options, name=name)
