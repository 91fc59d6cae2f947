"""Pooling layers: windowed (max/avg/lp), adaptive, global and blur pooling.

Conventions are Axon 0.8.1's (tests/fixtures/axon-golden/README.md, "Pooling"):
`strides` default to `kernel_size`; `padding="same"` is Nx's stride-independent
rule and max pooling pads with -inf; `avg_pool` divides by the full window size,
padded zeros included; `lp_pool` is `window_sum(x**p) ** (1/p)` with no abs(), so
an odd `norm` over a negative window sum gives NaN (Axon's BinaryBackend raises).
Adaptive pools are not PyTorch bins: `stride = in // out`,
`window = in - (out - 1) * stride`, valid padding. Global pools reduce every
spatial axis. Pools have no parameters and act the same in both modes.

Gradients (`vjp`): windowed and adaptive avg / lp pools spread each output's
cotangent over its window with the `np.windows` / `np.windows_transpose`
primitives defined here (window extraction and its scatter-add transpose, each
the other's VJP); max pooling (windowed and adaptive, every configuration) uses
the dedicated `np.max_pool_grad`, which sends it to the FIRST maximum of each
window (row-major tap order), like XLA's select-and-scatter choosing one element,
and lowers to MaxPool's Indices plus one ScatterElements -- or, for windows that do
not overlap (strides = window, no dilation or padding, static spatial dims), to
one strided Slice per tap and a cascade of Equal/Where on the taps in the layer's
own layout, which bench/conv_grad.py measured faster; global max pooling splits it
equally among tied maxima (jax's reduce_max rule); blur_pool's transpose is
itself (a symmetric kernel with 'same' zero padding).

`blur_pool` is Axon 0.8's fixed `[1, 2, 1]` (x) `[1, 2, 1] / 16` depthwise blur with
zero padding 1 and stride 1. Axon 0.8.1 only runs it with `channels="first"`: with
`channels="last"` it transposes its filter and then reads the padding from the
wrong axes and crashes. axonc does what the layer obviously means and applies
the same blur in both layouts. It also accepts 1-D and 3-D inputs (the separable
`[1, 2, 1] / 4` filter along every spatial axis), where Axon requires rank 4.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import TensorType, float_or_f32, float_or_f32_np, is_float, to_numpy_dtype
from ..errors import OptionError, ShapeError
from ..ir import Axon
from ..registry import (
    Case,
    Op,
    Option,
    check_bool,
    check_float,
    check_int_or_tuple,
    check_optional,
    layer_api,
    register,
)
from ..shape_inference import make_node
from ..tracing import apply
from ._spatial import (
    check_channels,
    check_padding,
    per_dim,
    resolve_padding,
    spatial_axes,
    window_out,
)
from .primitives import Primitive


def _check_norm(v: Any) -> int | float:
    """The p of an Lp pool: a positive number (ints stay ints, so x**p is exact)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a positive number, got {v!r}")
    if not v > 0 or not np.isfinite(v):
        raise ValueError(f"expected a positive finite number, got {v!r}")
    return int(v) if isinstance(v, (int, np.integer)) else float(v)


_CHANNELS = Option("last", check_channels, "channel axis: 'last' (default) or 'first'")
_NORM = Option(2, _check_norm, "the p of the Lp norm")


def _check_rank(t: TensorType, op: str) -> None:
    if t.rank < 3:
        raise ShapeError(
            f"{op} expects an input of rank >= 3 (batch, spatial dims..., channels), "
            f"got shape {t.shape}"
        )


def _pooled_dtype(dtype: str, kind: str) -> str:
    """Max pooling keeps the input dtype; averages and norms of integers give f32, as in Nx."""
    return dtype if kind == "max" else float_or_f32(dtype)


def _window_reduce(
    x: np.ndarray,
    axes: list[int],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    kind: str,
) -> np.ndarray:
    """Reduce (`max` or `sum`) every strided, dilated window of `x` along `axes`.

    Padding is -inf for max and 0 for sum; a negative pad crops, as Nx.pad does.
    The windows are visited one kernel offset at a time over strided slices.
    """
    fill = -np.inf if kind == "max" else 0.0
    width = [(0, 0)] * x.ndim
    crop = [slice(None)] * x.ndim
    for ax, (lo, hi) in zip(axes, pads, strict=True):
        width[ax] = (max(lo, 0), max(hi, 0))
        crop[ax] = slice(max(-lo, 0), x.shape[ax] + max(lo, 0) + max(hi, 0) - max(-hi, 0))
    x = np.pad(x, width, constant_values=fill)[tuple(crop)]
    outs = [
        (x.shape[ax] - ((k - 1) * d + 1)) // s + 1
        for ax, k, s, d in zip(axes, kernel, strides, dilations, strict=True)
    ]
    if any(n <= 0 for n in outs):
        raise ShapeError(
            f"the pooling window is larger than the padded input (spatial dims "
            f"{[x.shape[a] for a in axes]}, kernel {kernel}, dilations {dilations})"
        )
    result: np.ndarray | None = None
    for offsets in itertools.product(*(range(k) for k in kernel)):
        index = [slice(None)] * x.ndim
        for ax, o, s, d, n in zip(axes, offsets, strides, dilations, outs, strict=True):
            index[ax] = slice(o * d, o * d + (n - 1) * s + 1, s)
        window = x[tuple(index)]
        if result is None:
            result = window.copy()
        elif kind == "max":
            np.maximum(result, window, out=result)
        else:
            result += window
    assert result is not None
    return result


def _pool(
    kind: str,
    x: np.ndarray,
    axes: list[int],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    norm: int | float | None,
) -> np.ndarray:
    """A max / avg / lp window pool in float64, cast back to the input's (float) dtype."""
    xf = x.astype(np.float64)
    if kind == "max":
        return _window_reduce(xf, axes, kernel, strides, dilations, pads, "max").astype(x.dtype)
    if kind == "avg":
        out = _window_reduce(xf, axes, kernel, strides, dilations, pads, "sum") / np.prod(kernel)
    else:
        sums = _window_reduce(np.power(xf, norm), axes, kernel, strides, dilations, pads, "sum")
        out = _lp_finish(sums, norm)
    return out.astype(float_or_f32_np(x.dtype))


def _lp_finish(sums: np.ndarray, norm: int | float) -> np.ndarray:
    """sum ** (1/p), NaN (not an exception) where an odd p meets a negative sum."""
    with np.errstate(invalid="ignore"):
        return np.power(sums, 1.0 / norm)


# ---------------------------------------------------------------------------
# ONNX lowering helpers. ONNX pools are channels-first: a channels-last input is
# transposed in and out. Sums and averages use AveragePool (count_include_pad=1,
# Axon's divisor); below opset 19 AveragePool has no dilations, so a dilated
# window becomes a per-channel Conv with a constant kernel instead.


def _onnx_to_first(b: Any, x: str, rank: int, channels: str) -> str:
    if channels == "first":
        return x
    return b.op("Transpose", [x], perm=[0, rank - 1, *range(1, rank - 1)])


def _onnx_from_first(b: Any, x: str, rank: int, channels: str) -> str:
    if channels == "first":
        return x
    return b.op("Transpose", [x], perm=[0, *range(2, rank), 1])


def _onnx_crop(
    b: Any, x: str, pads: tuple[tuple[int, int], ...]
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Slice away negative pads (Nx crops there) of a channels-first value; the rest stay."""
    if all(lo >= 0 and hi >= 0 for lo, hi in pads):
        return x, pads
    axes = list(range(2, 2 + len(pads)))
    starts = [max(-lo, 0) for lo, _ in pads]
    ends = [hi if hi < 0 else np.iinfo(np.int64).max for _, hi in pads]
    x = b.op("Slice", [x, b.ints(starts, "starts"), b.ints(ends, "ends"), b.ints(axes, "axes")])
    return x, tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)


def _onnx_flat_pads(pads: tuple[tuple[int, int], ...]) -> list[int]:
    """ONNX's pads layout: every begin, then every end."""
    return [lo for lo, _ in pads] + [hi for _, hi in pads]


def _onnx_pads_refused(pads: tuple[tuple[int, int], ...], window: tuple[int, ...]) -> bool:
    """Whether onnxruntime's MaxPool refuses these (non-negative) pads: one is not
    smaller than its window."""
    return any(lo >= k or hi >= k for (lo, hi), k in zip(pads, window, strict=True))


def _onnx_filled(b: Any, dims: str, value: float, dtype: str) -> str:
    """A tensor of shape `dims` (a shape value) filled with `value` in `dtype`."""
    from onnx import numpy_helper

    fill = numpy_helper.from_array(np.full(1, value, to_numpy_dtype(dtype)))
    return b.op("ConstantOfShape", [dims], value=fill)


def _onnx_max_pool(
    b: Any,
    x: str,
    work: str,
    window: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    outputs: int = 1,
) -> tuple[list[str], str, str | None]:
    """MaxPool of a channels-first float `x` padded with -inf by non-negative `pads`,
    around two onnxruntime limits: pads it refuses (not smaller than the window) become
    an explicit -inf Pad before a pad-free MaxPool; and a window lying wholly in padding
    (possible only then or with dilations) gets no -inf from it, so such windows are
    found with the same MaxPool over ones (zeros in the padding).

    Returns (MaxPool's outputs: values, then indices when `outputs` is 2, flat over the
    pooled input), the input it pooled (`x`, or `x` after the explicit Pad), and the
    boolean mask of windows holding a real value (None when none can be padding only).
    """
    n = len(window)
    explicit = _onnx_pads_refused(pads, window)
    widths = [0, 0, *(lo for lo, _ in pads), 0, 0, *(hi for _, hi in pads)]

    def max_pool(v: str, count: int) -> list[str]:
        # After an explicit Pad, always ask for Indices too: onnxruntime's PadFusion
        # would otherwise fold the Pad back into MaxPool's pads, which it then refuses.
        count = 2 if explicit else count
        out = b.op(
            "MaxPool",
            [v],
            outputs=count,
            kernel_shape=list(window),
            strides=list(strides),
            dilations=list(dilations),
            pads=[0] * (2 * n) if explicit else _onnx_flat_pads(pads),
        )
        return [out] if count == 1 else out

    pooled = x
    if explicit:
        pooled = b.op("Pad", [x, b.ints(widths, "pads"), b.const(-np.inf, work, "neg_inf")])
    outs = max_pool(pooled, outputs)[:outputs]
    if not explicit and all(d == 1 for d in dilations):
        return outs, pooled, None
    ones = _onnx_filled(b, b.op("Shape", [x]), 1.0, work)
    if explicit:
        ones = b.op("Pad", [ones, b.ints(widths, "pads")])
    real = b.op("Greater", [max_pool(ones, 1)[0], b.const(0.5, work, "half")])
    return outs, pooled, real


def _onnx_channelwise_conv(
    b: Any,
    x: str,
    kernel: np.ndarray,
    dtype: str,
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
) -> str:
    """The same fixed `kernel` (spatial dims only) convolved over every channel of a
    channels-first value: batch and channels are folded into one axis around a
    single-channel Conv, so neither needs a static size."""
    n = kernel.ndim
    lead = b.op("Shape", [x], start=0, end=2)
    folded = b.op("Reshape", [x, b.ints([-1, 1, *([0] * n)], "fold_shape")])
    weight = b.const(kernel.reshape(1, 1, *kernel.shape), dtype, "window")
    y = b.op(
        "Conv",
        [folded, weight],
        kernel_shape=list(kernel.shape),
        strides=list(strides),
        dilations=list(dilations),
        pads=_onnx_flat_pads(pads),
    )
    shape = b.op("Concat", [lead, b.op("Shape", [y], start=2)], axis=0)
    return b.op("Reshape", [y, shape])


def _onnx_window_sum(
    ctx: Any,
    x: str,
    dtype: str,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    average: bool,
) -> str:
    """Window mean (padded zeros counted) or sum of a channels-first value."""
    b = ctx.b
    size = int(np.prod(kernel))
    if ctx.opset < 19 and any(d != 1 for d in dilations):
        ones = np.full(kernel, 1.0 / size if average else 1.0)
        return _onnx_channelwise_conv(b, x, ones, dtype, strides, dilations, pads)
    y = b.op(
        "AveragePool",
        [x],
        kernel_shape=list(kernel),
        strides=list(strides),
        pads=_onnx_flat_pads(pads),
        count_include_pad=1,
        dilations=list(dilations) if ctx.opset >= 19 else None,
    )
    return y if average else b.op("Mul", [y, b.const(float(size), dtype, "window_size")])


def _onnx_compute_dtype(dtype: str, kind: str) -> str:
    """The dtype a pool runs in on onnxruntime (CPU kernels lack f16 and most integers)."""
    if kind == "max":
        return dtype if dtype in ("f32", "f64", "s8", "u8") else "f32" if dtype == "f16" else "f64"
    out = float_or_f32(dtype)
    return "f32" if out == "f16" else out


def _onnx_pool(
    ctx: Any,
    x: str,
    kind: str,
    channels: str,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    norm: int | float | None,
) -> str:
    """A max / avg / lp window pool (Axon's conventions) as ONNX nodes."""
    b, t = ctx.b, ctx.in_types[0]
    work = _onnx_compute_dtype(t.dtype, kind)
    if not is_float(work) and (_onnx_pads_refused(pads, kernel) or any(d > 1 for d in dilations)):
        work = "f32"  # padding needs -inf, which s8 / u8 lack (f32 holds them exactly)
    if work != t.dtype:
        x = b.cast(x, work)
    x, pads = _onnx_crop(b, _onnx_to_first(b, x, t.rank, channels), pads)
    if kind == "max":
        (y,), _, real = _onnx_max_pool(b, x, work, kernel, strides, dilations, pads)
        if real is not None:
            y = b.op("Where", [real, y, b.const(-np.inf, work, "neg_inf")])
    elif kind == "avg":
        y = _onnx_window_sum(ctx, x, work, kernel, strides, dilations, pads, average=True)
    else:
        powered = b.op("Pow", [x, b.const(norm, work, "norm")])
        sums = _onnx_window_sum(ctx, powered, work, kernel, strides, dilations, pads, False)
        y = b.op("Pow", [sums, b.const(1.0 / norm, work, "inv_norm")])
    y = _onnx_from_first(b, y, t.rank, channels)
    out = ctx.out_type.dtype
    return y if out == work else b.cast(y, out)


# ---------------------------------------------------------------------------
# Windowed pools: max_pool, avg_pool, lp_pool


class _WindowPool(Op):
    """Shared rules of max_pool, avg_pool and lp_pool."""

    family = "pooling"
    kind: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {
        "kernel_size": Option(
            1, check_int_or_tuple(1), "window size, an int or one per spatial dim"
        ),
        "strides": Option(
            None,
            check_optional(check_int_or_tuple(1)),
            "window strides, an int or one per spatial dim; default the kernel size",
        ),
        "padding": Option("valid", check_padding, "'valid', 'same' or a list of (lo, hi) pairs"),
        "dilations": Option(1, check_int_or_tuple(1), "window dilation, an int or one per dim"),
        "channels": _CHANNELS,
    }

    def geometry(
        self, rank: int, opts: dict[str, Any]
    ) -> tuple[list[int], tuple, tuple, tuple, tuple]:
        """(spatial axes, kernel, strides, dilations, (lo, hi) pads) for an input rank."""
        n = rank - 2
        try:
            kernel = per_dim(opts["kernel_size"], n, "kernel_size")
            strides = kernel if opts["strides"] is None else per_dim(opts["strides"], n, "strides")
            dilations = per_dim(opts["dilations"], n, "dilations")
            pads = resolve_padding(opts["padding"], kernel, dilations)
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        return spatial_axes(rank, opts["channels"]), kernel, strides, dilations, pads

    def infer(self, types, opts, node):
        (t,) = types
        _check_rank(t, self.name)
        axes, kernel, strides, dilations, pads = self.geometry(t.rank, opts)
        shape = list(t.shape)
        for i, ax in enumerate(axes):
            out = window_out(t.shape[ax], kernel[i], strides[i], *pads[i], dilations[i])
            if out == 0:
                raise ShapeError(
                    f"the window (kernel {kernel[i]}, dilation {dilations[i]}) is larger than "
                    f"spatial dim {i} of size {t.shape[ax]} padded by {pads[i]}"
                )
            shape[ax] = out
        return TensorType(tuple(shape), _pooled_dtype(t.dtype, self.kind))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        axes, kernel, strides, dilations, pads = self.geometry(x.ndim, opts)
        return _pool(self.kind, x, axes, kernel, strides, dilations, pads, opts.get("norm"))

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        if not is_float(ctx.in_types[0].dtype):
            return [None]
        _, kernel, strides, dilations, pads = self.geometry(x.ndim, opts)
        norm = opts.get("norm")
        return [
            _window_vjp(
                self.kind, x, output, cot, opts["channels"], kernel, strides, dilations, pads, norm
            )
        ]

    def onnx(self, ctx, inputs, opts):
        _, kernel, strides, dilations, pads = self.geometry(ctx.in_types[0].rank, opts)
        return _onnx_pool(
            ctx,
            inputs[0],
            self.kind,
            opts["channels"],
            kernel,
            strides,
            dilations,
            pads,
            opts.get("norm"),
        )

    def tflite(self, ctx, inputs, opts):
        _, kernel, strides, dilations, pads = self.geometry(ctx.in_types[0].rank, opts)
        return _tfl_pool(
            ctx,
            inputs[0],
            self.kind,
            opts["channels"],
            kernel,
            strides,
            dilations,
            pads,
            opts.get("norm"),
        )


# ---------------------------------------------------------------------------
# TFLite lowering: MAX_POOL_2D / AVERAGE_POOL_2D on channels-last tensors (1-D pools
# run as 2-D with a unit height). Padding is explicit (PADV2 with -inf for max, zeros
# for averages, which count padded positions as Axon does); lp pools are
# (K * avg(x ** p)) ** (1 / p).


def _tfl_pool(
    ctx: Any, x: int, kind: str, channels: str, kernel, strides, dilations, pads, norm
) -> int:
    b, t = ctx.b, ctx.in_types[0]
    n = len(kernel)
    if t.dtype == "f64" or (kind == "max" and t.dtype != "f32"):
        raise ctx.unsupported(f"{t.dtype} input: LiteRT pools f32 tensors")
    x = b.cast(x, "f32")
    if channels == "first":
        x = b.transpose(x, [0, *range(2, t.rank), 1])
    lo_hi = [(0, 0), *pads, (0, 0)]
    crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in lo_hi]
    if any(v for c in crops for v in c) and any(d is None for d in b.type_of(x).shape[1:]):
        raise ctx.unsupported("a cropping pad on a dynamic spatial dim")
    x = b.crop(x, crops)
    x = b.pad(x, [(max(lo, 0), max(hi, 0)) for lo, hi in lo_hi], -np.inf if kind == "max" else 0.0)
    if kind == "lp":
        x = b.binary("POW", x, b.scalar(norm, x))
    if n == 3 or any(d != 1 for d in dilations):
        y = _tfl_window_slices(ctx, x, kind, kernel, strides, dilations)
    else:
        y = _tfl_pool_2d(ctx, x, kind, kernel, strides)
    if kind == "lp":
        total = b.binary("MUL", y, b.scalar(float(np.prod(kernel)), y))
        y = b.binary("POW", total, b.scalar(1.0 / norm, y))
    if channels == "first":
        rank = b.type_of(y).rank
        y = b.transpose(y, [0, rank - 1, *range(1, rank - 1)])
    return y


def _tfl_window_slices(ctx: Any, x: int, kind: str, kernel, strides, dilations) -> int:
    """A 3-D or dilated window reduced from its kernel positions: one STRIDED_SLICE per
    position, combined by MAXIMUM (max) or ADD then a divide (avg, lp)."""
    b = ctx.b
    xt = b.type_of(x)
    spatial = xt.shape[1:-1]
    if any(d is None for d in spatial):
        raise ctx.unsupported("a 3-D or dilated window over a dynamic spatial dim")
    out = [
        (d - (k - 1) * r - 1) // s + 1 for d, k, r, s in zip(spatial, kernel, dilations, strides)
    ]
    mask = 1 | (1 << (len(spatial) + 1))  # the batch and channel axes are taken whole
    options = b.options("StridedSlice", beginMask=mask, endMask=mask)
    acc = None
    for pos in np.ndindex(*kernel):
        begin = [0, *(p * r for p, r in zip(pos, dilations)), 0]
        end = [0, *(p * r + (o - 1) * s + 1 for p, r, o, s in zip(pos, dilations, out, strides)), 0]
        piece = b.op(
            "STRIDED_SLICE",
            [x, b.ints(begin, "begin"), b.ints(end, "end"), b.ints([1, *strides, 1], "strides")],
            xt.with_shape((xt.shape[0], *out, xt.shape[-1])),
            options=options,
        )
        acc = piece if acc is None else b.binary("MAXIMUM" if kind == "max" else "ADD", acc, piece)
    if kind == "max":
        return acc
    return b.binary("MUL", acc, b.scalar(1.0 / float(np.prod(kernel)), acc))


def _tfl_pool_2d(ctx: Any, x: int, kind: str, kernel, strides) -> int:
    """MAX_POOL_2D / AVERAGE_POOL_2D (VALID) of a padded channels-last tensor; 1-D as 2-D."""
    b = ctx.b
    n = len(kernel)
    if n == 1:
        xt = b.type_of(x)
        if sum(d is None for d in xt.shape) > 1:
            raise ctx.unsupported("a 1-D pool over a dynamic length (reshaped to 2-D)")
        x = b.reshape(x, (xt.shape[0], 1, *xt.shape[1:]))
        kernel, strides = (1, *kernel), (1, *strides)
    xt = b.type_of(x)
    spatial = [
        None if d is None else (d - k) // s + 1 for d, k, s in zip(xt.shape[1:-1], kernel, strides)
    ]
    out = xt.with_shape((xt.shape[0], *spatial, xt.shape[-1]))
    options = b.options(
        "Pool2D",
        padding="VALID",
        strideH=strides[0],
        strideW=strides[1],
        filterHeight=kernel[0],
        filterWidth=kernel[1],
    )
    y = b.op("MAX_POOL_2D" if kind == "max" else "AVERAGE_POOL_2D", [x], out, options=options)
    if n == 1:
        y = b.reshape(y, (out.shape[0], *out.shape[2:]))
    return y


def _window_cases(layer) -> list[Case]:
    return [
        Case("1d_default", lambda x: layer(x), [TensorType((None, 8, 3))]),
        Case("1d_k2_s1", lambda x: layer(x, kernel_size=2, strides=1), [TensorType((None, 8, 3))]),
        Case("2d_k2", lambda x: layer(x, kernel_size=2), [TensorType((None, 6, 6, 2))]),
        Case(
            "2d_k3_s1_same",
            lambda x: layer(x, kernel_size=3, strides=1, padding="same"),
            [TensorType((None, 6, 6, 2))],
        ),
        Case(
            "2d_k3_s2_same_even",
            lambda x: layer(x, kernel_size=(3, 2), strides=2, padding="same"),
            [TensorType((None, 7, 6, 2))],
        ),
        Case(
            "2d_explicit_channels_first",
            lambda x: layer(
                x, kernel_size=2, strides=(1, 2), padding=[(1, 0), (0, 1)], channels="first"
            ),
            [TensorType((None, 2, 5, 6))],
        ),
        Case(
            "2d_dilations2",
            lambda x: layer(x, kernel_size=2, strides=1, dilations=2),
            [TensorType((None, 6, 6, 2))],
        ),
        Case(
            "3d_k2_channels_first",
            lambda x: layer(x, kernel_size=2, channels="first"),
            [TensorType((None, 2, 4, 4, 4))],
        ),
        Case(
            "3d_same_dilated",
            lambda x: layer(
                x, kernel_size=(2, 3, 2), strides=(1, 2, 1), padding="same", dilations=(1, 1, 2)
            ),
            [TensorType((None, 4, 5, 4, 3))],
        ),
        Case(
            "1d_negative_pad_crops",
            lambda x: layer(x, kernel_size=2, strides=1, padding=[(-1, 1)]),
            [TensorType((None, 8, 3))],
        ),
        Case(
            "2d_dynamic_spatial_same",
            lambda x: layer(x, kernel_size=3, strides=1, padding="same"),
            [TensorType((None, None, None, 2))],
        ),
    ]


@register
class MaxPool(_WindowPool):
    kind = "max"
    name = "max_pool"
    doc = "Maximum over each (strided, dilated) window; 'same' padding pads with -inf."


@register
class AvgPool(_WindowPool):
    kind = "avg"
    name = "avg_pool"
    doc = "Mean over each window, dividing by the full window size (padded zeros count)."


@register
class LpPool(_WindowPool):
    kind = "lp"
    name = "lp_pool"
    doc = "Power-average pool: window_sum(x ** p) ** (1 / p), without abs() (Axon's definition)."
    options: ClassVar[dict[str, Option]] = {**_WindowPool.options, "norm": _NORM}


@layer_api
def max_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Max pooling. Options: kernel_size (1), strides (= kernel_size), padding ("valid"),
    dilations (1), channels ("last")."""
    return make_node("max_pool", [x], opts, name=name)


@layer_api
def avg_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Average pooling (count includes padding). Options: kernel_size (1), strides
    (= kernel_size), padding ("valid"), dilations (1), channels ("last")."""
    return make_node("avg_pool", [x], opts, name=name)


@layer_api
def lp_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Lp (power-average) pooling. Options: kernel_size (1), strides (= kernel_size),
    padding ("valid"), dilations (1), channels ("last"), norm (2)."""
    return make_node("lp_pool", [x], opts, name=name)


MaxPool.cases = [
    *_window_cases(max_pool),
    # pads not smaller than the window (onnxruntime's MaxPool refuses them), no window
    # wholly in padding (those give -inf, which the sweep's finite check rejects)
    Case(
        "1d_same_dilated_pads_not_smaller_than_window",
        lambda x: max_pool(x, kernel_size=2, strides=1, dilations=3, padding="same"),
        [TensorType((None, 8, 3))],
    ),
    Case(
        "2d_explicit_dilated_pads_not_smaller_than_window",
        lambda x: max_pool(
            x,
            kernel_size=(3, 2),
            strides=(2, 1),
            dilations=(2, 3),
            padding=[(3, 3), (2, 2)],
            channels="first",
        ),
        [TensorType((None, 2, 7, 5))],
    ),
    Case(
        "1d_high_pad_not_smaller_than_window_skipped_by_stride",
        lambda x: max_pool(x, kernel_size=2, strides=3, padding=[(0, 2)]),
        [TensorType((None, 5, 3))],
    ),
]
AvgPool.cases = _window_cases(avg_pool)
LpPool.cases = [
    *_window_cases(lp_pool),
    Case("2d_norm4", lambda x: lp_pool(x, kernel_size=2, norm=4), [TensorType((None, 6, 6, 2))]),
    Case(
        "2d_norm1.5_relu_input",
        lambda x: lp_pool(x.relu(), kernel_size=3, norm=1.5),
        [TensorType((None, 6, 6, 2))],
    ),
]


# ---------------------------------------------------------------------------
# Adaptive pools


class _AdaptivePool(Op):
    """Shared rules of the adaptive pools: a valid window sized to hit `output_size`."""

    family = "pooling"
    kind: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {
        "output_size": Option(
            None,
            check_optional(check_int_or_tuple(1)),
            "output spatial size, an int or one per spatial dim; default the input's",
        ),
        "channels": _CHANNELS,
    }

    def geometry(self, shape: tuple, opts: dict[str, Any]) -> tuple[list[int], tuple, tuple, tuple]:
        """(spatial axes, output sizes, window sizes, strides) for a concrete input shape."""
        axes = spatial_axes(len(shape), opts["channels"])
        sizes = [shape[a] for a in axes]
        if any(s is None for s in sizes):
            raise ShapeError(
                f"{self.name} needs known spatial dims to size its window, got input shape "
                f"{tuple(shape)}; give the input a static spatial shape"
            )
        if opts["output_size"] is None:
            out = tuple(sizes)
        else:
            try:
                out = per_dim(opts["output_size"], len(axes), "output_size")
            except ValueError as exc:
                raise OptionError(str(exc)) from None
        for i, (n, o) in enumerate(zip(sizes, out, strict=True)):
            if o > n:
                raise ShapeError(
                    f"{self.name}: output_size {o} is larger than spatial dim {i} of size {n}; "
                    "adaptive pooling can only shrink"
                )
        strides = tuple(n // o for n, o in zip(sizes, out, strict=True))
        windows = tuple(n - (o - 1) * s for n, o, s in zip(sizes, out, strides, strict=True))
        return axes, out, windows, strides

    def infer(self, types, opts, node):
        (t,) = types
        _check_rank(t, self.name)
        axes, out, _, _ = self.geometry(t.shape, opts)
        shape = list(t.shape)
        for ax, o in zip(axes, out, strict=True):
            shape[ax] = o
        return TensorType(tuple(shape), _pooled_dtype(t.dtype, self.kind))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        axes, _, windows, strides = self.geometry(x.shape, opts)
        ones = (1,) * len(axes)
        valid = ((0, 0),) * len(axes)
        return _pool(self.kind, x, axes, windows, strides, ones, valid, opts.get("norm"))

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        if not is_float(ctx.in_types[0].dtype):
            return [None]
        axes, _, windows, strides = self.geometry(ctx.in_types[0].shape, opts)
        ones = (1,) * len(axes)
        valid = ((0, 0),) * len(axes)
        norm = opts.get("norm")
        return [
            _window_vjp(
                self.kind, x, output, cot, opts["channels"], windows, strides, ones, valid, norm
            )
        ]

    def onnx(self, ctx, inputs, opts):
        axes, _, windows, strides = self.geometry(ctx.in_types[0].shape, opts)
        ones = (1,) * len(axes)
        valid = ((0, 0),) * len(axes)
        return _onnx_pool(
            ctx,
            inputs[0],
            self.kind,
            opts["channels"],
            windows,
            strides,
            ones,
            valid,
            opts.get("norm"),
        )

    def tflite(self, ctx, inputs, opts):
        axes, _, windows, strides = self.geometry(ctx.in_types[0].shape, opts)
        ones, valid = (1,) * len(axes), ((0, 0),) * len(axes)
        return _tfl_pool(
            ctx,
            inputs[0],
            self.kind,
            opts["channels"],
            windows,
            strides,
            ones,
            valid,
            opts.get("norm"),
        )


def _adaptive_cases(layer) -> list[Case]:
    return [
        Case("1d_3", lambda x: layer(x, output_size=3), [TensorType((None, 8, 3))]),
        Case("2d_4x4", lambda x: layer(x, output_size=(4, 4)), [TensorType((None, 6, 6, 2))]),
        Case("2d_5x3", lambda x: layer(x, output_size=(5, 3)), [TensorType((None, 7, 6, 2))]),
        Case("2d_default_size", lambda x: layer(x), [TensorType((None, 5, 4, 2))]),
        Case(
            "2d_channels_first",
            lambda x: layer(x, output_size=(2, 3), channels="first"),
            [TensorType((None, 2, 6, 7))],
        ),
        Case("3d_2", lambda x: layer(x, output_size=2), [TensorType((None, 4, 5, 6, 2))]),
    ]


@register
class AdaptiveAvgPool(_AdaptivePool):
    kind = "avg"
    name = "adaptive_avg_pool"
    doc = "Average pool with stride in // out and window in - (out - 1) * stride (valid)."


@register
class AdaptiveMaxPool(_AdaptivePool):
    kind = "max"
    name = "adaptive_max_pool"
    doc = "Max pool with stride in // out and window in - (out - 1) * stride (valid)."


@register
class AdaptiveLpPool(_AdaptivePool):
    kind = "lp"
    name = "adaptive_lp_pool"
    doc = "Lp pool (no abs) with stride in // out and window in - (out - 1) * stride (valid)."
    options: ClassVar[dict[str, Option]] = {**_AdaptivePool.options, "norm": _NORM}


@layer_api
def adaptive_avg_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Adaptive average pooling. Options: output_size (the input's spatial size),
    channels ("last")."""
    return make_node("adaptive_avg_pool", [x], opts, name=name)


@layer_api
def adaptive_max_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Adaptive max pooling. Options: output_size (the input's spatial size),
    channels ("last")."""
    return make_node("adaptive_max_pool", [x], opts, name=name)


@layer_api
def adaptive_lp_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Adaptive Lp pooling. Options: output_size (the input's spatial size), channels ("last"),
    norm (2)."""
    return make_node("adaptive_lp_pool", [x], opts, name=name)


AdaptiveAvgPool.cases = _adaptive_cases(adaptive_avg_pool)
AdaptiveMaxPool.cases = _adaptive_cases(adaptive_max_pool)
AdaptiveLpPool.cases = [
    *_adaptive_cases(adaptive_lp_pool),
    Case(
        "2d_norm3_positive",
        lambda x: adaptive_lp_pool(x.sigmoid(), output_size=2, norm=3),
        [TensorType((None, 6, 6, 2))],
    ),
]


# ---------------------------------------------------------------------------
# Global pools


class _GlobalPool(Op):
    """Shared rules of the global pools: reduce every spatial axis."""

    family = "pooling"
    kind: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {
        "keep_axes": Option(False, check_bool, "keep the reduced spatial axes as size-1 dims"),
        "channels": _CHANNELS,
    }

    def infer(self, types, opts, node):
        (t,) = types
        _check_rank(t, self.name)
        axes = spatial_axes(t.rank, opts["channels"])
        if opts["keep_axes"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
        else:
            shape = tuple(d for i, d in enumerate(t.shape) if i not in axes)
        return TensorType(shape, _pooled_dtype(t.dtype, self.kind))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        axes = tuple(spatial_axes(x.ndim, opts["channels"]))
        keep = opts["keep_axes"]
        xf = x.astype(np.float64)
        if self.kind == "max":
            return np.max(xf, axis=axes, keepdims=keep).astype(x.dtype)
        if self.kind == "avg":
            out = np.mean(xf, axis=axes, keepdims=keep)
        else:
            out = _lp_finish(
                np.sum(np.power(xf, opts["norm"]), axis=axes, keepdims=keep), opts["norm"]
            )
        return np.asarray(out).astype(float_or_f32_np(x.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        """Broadcast the cotangent back over the spatial axes. Max: split equally among the
        elements equal to the maximum (jax's reduce_max rule; random inputs have no ties)."""
        (x,) = inputs
        if not is_float(ctx.in_types[0].dtype):
            return [None]
        axes = tuple(spatial_axes(x.ndim, opts["channels"]))
        if not opts["keep_axes"]:
            cot, output = anp.expand_dims(cot, axes), anp.expand_dims(output, axes)
        if self.kind == "max":
            hit = anp.equal(x, output)
            count = anp.sum(anp.where(hit, 1.0, 0.0).astype(cot.dtype), axis=axes, keepdims=True)
            grad = anp.where(hit, cot / count, 0.0)
        elif self.kind == "avg":
            ones = anp.ones_like(x, dtype=cot.dtype)
            grad = ones * (cot / anp.sum(ones, axis=axes, keepdims=True))
        else:
            grad = _lp_input_factor(x, opts["norm"]) * _lp_scale(output, cot, opts["norm"])
        return [grad.astype(x.dtype)]

    def onnx(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        axes = spatial_axes(t.rank, opts["channels"])
        keep = opts["keep_axes"]
        x = inputs[0]
        if self.kind == "max":
            work = t.dtype if t.dtype in ("f32", "f64", "s8", "u8", "s32", "s64") else "f64"
        else:
            work = _onnx_compute_dtype(t.dtype, self.kind)
        if work != t.dtype:
            x = b.cast(x, work)
        if self.kind == "max":
            y = b.reduce("ReduceMax", x, axes, keep)
        elif self.kind == "avg":
            y = b.reduce("ReduceMean", x, axes, keep)
        else:
            norm = opts["norm"]
            powered = b.op("Pow", [x, b.const(norm, work, "norm")])
            sums = b.reduce("ReduceSum", powered, axes, keep)
            y = b.op("Pow", [sums, b.const(1.0 / norm, work, "inv_norm")])
        out = ctx.out_type.dtype
        return y if out == work else b.cast(y, out)

    def tflite(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        axes = spatial_axes(t.rank, opts["channels"])
        keep = opts["keep_axes"]
        if t.dtype == "f64" or (self.kind == "max" and t.dtype != "f32"):
            raise ctx.unsupported(f"{t.dtype} input: LiteRT reduces f32 tensors here")
        x = b.cast(inputs[0], "f32")
        if self.kind == "max":
            return b.reduce("REDUCE_MAX", x, axes, keep)
        if self.kind == "avg":
            return b.reduce("MEAN", x, axes, keep)
        norm = opts["norm"]
        sums = b.reduce("SUM", b.binary("POW", x, b.scalar(norm, x)), axes, keep)
        return b.binary("POW", sums, b.scalar(1.0 / norm, sums))


def _global_cases(layer) -> list[Case]:
    return [
        Case("1d", lambda x: layer(x), [TensorType((None, 8, 3))]),
        Case("2d", lambda x: layer(x), [TensorType((None, 6, 6, 2))]),
        Case("2d_keep_axes", lambda x: layer(x, keep_axes=True), [TensorType((None, 6, 6, 2))]),
        Case(
            "2d_channels_first", lambda x: layer(x, channels="first"), [TensorType((None, 2, 6, 6))]
        ),
        Case(
            "3d_channels_first_keep_axes",
            lambda x: layer(x, channels="first", keep_axes=True),
            [TensorType((None, 2, 3, 4, 5))],
        ),
        Case("2d_dynamic_spatial", lambda x: layer(x), [TensorType((None, None, None, 2))]),
    ]


@register
class GlobalAvgPool(_GlobalPool):
    kind = "avg"
    name = "global_avg_pool"
    doc = "Mean over all spatial axes."


@register
class GlobalMaxPool(_GlobalPool):
    kind = "max"
    name = "global_max_pool"
    doc = "Maximum over all spatial axes."


@register
class GlobalLpPool(_GlobalPool):
    kind = "lp"
    name = "global_lp_pool"
    doc = "sum(x ** p) ** (1 / p) over all spatial axes, without abs()."
    options: ClassVar[dict[str, Option]] = {**_GlobalPool.options, "norm": _NORM}


@layer_api
def global_avg_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Global average pooling. Options: keep_axes (False), channels ("last")."""
    return make_node("global_avg_pool", [x], opts, name=name)


@layer_api
def global_max_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Global max pooling. Options: keep_axes (False), channels ("last")."""
    return make_node("global_max_pool", [x], opts, name=name)


@layer_api
def global_lp_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Global Lp pooling. Options: keep_axes (False), channels ("last"), norm (2)."""
    return make_node("global_lp_pool", [x], opts, name=name)


GlobalAvgPool.cases = _global_cases(global_avg_pool)
GlobalMaxPool.cases = _global_cases(global_max_pool)
GlobalLpPool.cases = [
    *_global_cases(global_lp_pool),
    Case(
        "2d_norm3_positive",
        lambda x: global_lp_pool(x.sigmoid(), norm=3),
        [TensorType((None, 6, 6, 2))],
    ),
]


# ---------------------------------------------------------------------------
# Blur pool

BLUR_TAPS = np.array([1.0, 2.0, 1.0]) / 4.0  # outer product over 2 axes = [1,2,1]x[1,2,1]/16


@register
class BlurPool(Op):
    name = "blur_pool"
    family = "pooling"
    doc = (
        "Fixed depthwise [1,2,1]x[1,2,1]/16 blur, zero padding 1, stride 1 "
        "(both channel layouts; Axon 0.8.1 crashes for channels last)."
    )
    options: ClassVar[dict[str, Option]] = {"channels": _CHANNELS}

    def infer(self, types, opts, node):
        (t,) = types
        if not 3 <= t.rank <= 5:
            raise ShapeError(
                "blur_pool expects an input with 1 to 3 spatial dims (rank 3 to 5; Axon: rank 4), "
                f"got shape {t.shape}"
            )
        return TensorType(t.shape, float_or_f32(t.dtype))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        out = x.astype(np.float64)
        for ax in spatial_axes(x.ndim, opts["channels"]):
            width = [(0, 0)] * x.ndim
            width[ax] = (1, 1)
            padded = np.pad(out, width)
            n = out.shape[ax]
            out = sum(
                w * np.take(padded, range(i, i + n), axis=ax) for i, w in enumerate(BLUR_TAPS)
            )
        return out.astype(float_or_f32_np(x.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        """A convolution with a symmetric kernel and 'same' zero padding: its transpose
        is the same blur."""
        if not is_float(ctx.in_types[0].dtype):
            return [None]
        blurred = apply("blur_pool", [cot], {"channels": opts["channels"]})
        return [blurred.astype(inputs[0].dtype)]

    def onnx(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        work = _onnx_compute_dtype(t.dtype, "avg")
        x = inputs[0] if work == t.dtype else b.cast(inputs[0], work)
        n = t.rank - 2
        kernel = BLUR_TAPS
        for _ in range(n - 1):
            kernel = np.multiply.outer(kernel, BLUR_TAPS)
        x = _onnx_to_first(b, x, t.rank, opts["channels"])
        y = _onnx_channelwise_conv(b, x, kernel, work, (1,) * n, (1,) * n, ((1, 1),) * n)
        y = _onnx_from_first(b, y, t.rank, opts["channels"])
        out = ctx.out_type.dtype
        return y if out == work else b.cast(y, out)

    def tflite(self, ctx, inputs, opts):
        """DEPTHWISE_CONV_2D with the fixed 3x3 kernel, SAME padding (zeros); 1-D as 2-D."""
        b, t = ctx.b, ctx.in_types[0]
        n = t.rank - 2
        if n == 3 or t.dtype == "f64":
            raise ctx.unsupported("3-D or f64 input (TFLite's depthwise conv is 2-D, f32)")
        x = b.cast(inputs[0], "f32")
        if opts["channels"] == "first":
            x = b.transpose(x, [0, *range(2, t.rank), 1])
        if n == 1:
            xt = b.type_of(x)
            if sum(d is None for d in xt.shape) > 1:
                raise ctx.unsupported("a 1-D blur over a dynamic length (reshaped to 2-D)")
            x = b.reshape(x, (xt.shape[0], 1, *xt.shape[1:]))
        xt = b.type_of(x)
        c = xt.shape[-1]
        taps = np.asarray(BLUR_TAPS, np.float32)
        kernel = np.outer(taps, taps) if n == 2 else np.outer([0.0, 1.0, 0.0], taps)
        weights = np.ascontiguousarray(np.repeat(kernel[None, :, :, None], c, axis=3), np.float32)
        options = b.options(
            "DepthwiseConv2D",
            padding="SAME",
            strideH=1,
            strideW=1,
            depthMultiplier=1,
            dilationHFactor=1,
            dilationWFactor=1,
        )
        zeros = b.const(np.zeros(c, np.float32), hint="bias")
        y = b.op(
            "DEPTHWISE_CONV_2D", [x, b.const(weights, hint="kernel"), zeros], xt, options=options
        )
        if n == 1:
            y = b.reshape(y, (xt.shape[0], *xt.shape[2:]))
        if opts["channels"] == "first":
            y = b.transpose(y, [0, t.rank - 1, *range(1, t.rank - 1)])
        return y

    cases: ClassVar[list[Case]] = [
        Case("2d", lambda x: blur_pool(x), [TensorType((None, 6, 6, 2))]),
        Case(
            "2d_channels_first",
            lambda x: blur_pool(x, channels="first"),
            [TensorType((None, 2, 6, 6))],
        ),
        Case("2d_three_channels", lambda x: blur_pool(x), [TensorType((None, 5, 7, 3))]),
        Case("1d", lambda x: blur_pool(x), [TensorType((None, 8, 3))]),
        Case(
            "3d_channels_first",
            lambda x: blur_pool(x, channels="first"),
            [TensorType((None, 2, 4, 5, 3))],
        ),
        Case("2d_dynamic_spatial", lambda x: blur_pool(x), [TensorType((None, None, None, 2))]),
    ]


@layer_api
def blur_pool(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Blur pooling: a fixed [1,2,1]x[1,2,1]/16 depthwise low-pass filter, same size out.

    Options: channels ("last"). Works for both layouts (Axon 0.8.1 crashes for "last").
    """
    return make_node("blur_pool", [x], opts, name=name)


# ---------------------------------------------------------------------------
# Window extraction and its transpose: the primitives pooling gradients are made of.
# Both work on channels-first values (N, C, spatial...). `np.windows` lays every
# (strided, dilated, padded) window out on trailing axes, (N, C, out..., k...);
# `np.windows_transpose` scatter-adds such windows back onto an input-shaped
# tensor (padded positions dropped), so each is the other's VJP.


_check_geometry_ints = check_int_or_tuple(1)


class _WindowPrimitive(Primitive):
    """Shared options and geometry of np.windows and np.windows_transpose."""

    options: ClassVar[dict[str, Option]] = {
        "window": Option(check=_check_geometry_ints, doc="window size, an int or one per dim"),
        "strides": Option(1, _check_geometry_ints, "window strides, an int or one per dim"),
        "pads": Option(
            "valid", check_padding, "'valid', 'same' or (lo, hi) pairs; negative pads crop"
        ),
        "dilations": Option(1, _check_geometry_ints, "window dilation, an int or one per dim"),
    }

    def geometry(self, n: int, opts: dict[str, Any]) -> tuple[tuple, tuple, tuple, tuple]:
        """(window, strides, dilations, (lo, hi) pads) for n spatial dims."""
        try:
            window = per_dim(opts["window"], n, "window")
            strides = per_dim(opts["strides"], n, "strides")
            dilations = per_dim(opts["dilations"], n, "dilations")
            pads = resolve_padding(opts["pads"], window, dilations)
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
        return window, strides, dilations, pads

    def out_sizes(self, spatial: tuple, opts: dict[str, Any]) -> tuple[int | None, ...]:
        window, strides, dilations, pads = self.geometry(len(spatial), opts)
        outs = []
        for i, size in enumerate(spatial):
            out = window_out(size, window[i], strides[i], *pads[i], dilations[i])
            if out == 0:
                raise ShapeError(
                    f"the window (size {window[i]}, dilation {dilations[i]}) is larger than "
                    f"spatial dim {i} of size {size} padded by {pads[i]}"
                )
            outs.append(out)
        return tuple(outs)


def _padded(x: np.ndarray, pads: tuple[tuple[int, int], ...], fill: float) -> np.ndarray:
    """`x` padded with `fill` on its spatial axes (2, 3, ...); negative pads crop."""
    width = [(0, 0)] * 2 + [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    x = np.pad(x, width, constant_values=fill)
    crop = [slice(None)] * 2 + [
        slice(max(-lo, 0), x.shape[2 + i] - max(-hi, 0)) for i, (lo, hi) in enumerate(pads)
    ]
    return x[tuple(crop)]


def _tap_slices(
    offsets: tuple[int, ...], strides: tuple, dilations: tuple, outs: tuple
) -> tuple[slice, ...]:
    """Where one window tap (its offsets in the window) reads the padded input, per output."""
    spatial = [
        slice(o * d, o * d + (n - 1) * s + 1, s)
        for o, s, d, n in zip(offsets, strides, dilations, outs, strict=True)
    ]
    return (slice(None), slice(None), *spatial)


def _one_hot_taps(window: tuple[int, ...]) -> np.ndarray:
    """The (K, 1, k...) kernel whose output channel t picks window tap t (row-major)."""
    size = math.prod(window)
    return np.eye(size).reshape(size, 1, *window)


# Conv / ConvTranspose run in f32 (f16 and f64 are cast; onnxruntime's CPU kernels are f32).
_CONV_WORK = "f32"


@register
class Windows(_WindowPrimitive):
    name = "np.windows"
    doc = (
        "Every window of a channels-first x: (N, C, spatial...) -> (N, C, out..., window...), "
        "padding with `pad_value` (negative pads crop)."
    )
    options: ClassVar[dict[str, Option]] = {
        **_WindowPrimitive.options,
        "pad_value": Option(0.0, check_float(), "the value padded positions read (-inf allowed)"),
    }

    def infer(self, types, opts, node):
        (t,) = types
        if t.rank < 3 or not is_float(t.dtype):
            raise ShapeError(
                f"np.windows expects a float input (N, C, spatial...) of rank >= 3, got {t!r}"
            )
        window = self.geometry(t.rank - 2, opts)[0]
        return t.with_shape((*t.shape[:2], *self.out_sizes(t.shape[2:], opts), *window))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        window, strides, dilations, pads = self.geometry(x.ndim - 2, opts)
        outs = self.out_sizes(x.shape[2:], opts)
        xp = _padded(x, pads, opts["pad_value"])
        taps = [
            xp[_tap_slices(o, strides, dilations, outs)]
            for o in itertools.product(*(range(k) for k in window))
        ]
        return np.stack(taps, axis=-1).reshape(*x.shape[:2], *outs, *window)

    def vjp(self, ctx, inputs, output, cot, opts):
        return [apply("np.windows_transpose", [cot, inputs[0]], _geometry_opts(opts))]

    def onnx(self, ctx, inputs, opts):
        """A Conv with one one-hot kernel per window tap over (N*C, 1, spatial...), then
        reshapes: exact (each output is 1 * x plus zeros). Padded positions read 0 in
        the Conv; another pad value is put there with Where on the windows of ones."""
        b, t = ctx.b, ctx.in_types[0]
        n = t.rank - 2
        window, strides, dilations, pads = self.geometry(n, opts)
        work = _CONV_WORK
        x = inputs[0] if work == t.dtype else b.cast(inputs[0], work)
        x, pads = _onnx_crop(b, x, pads)
        lead = b.op("Shape", [x], start=0, end=2)
        folded = b.op("Reshape", [x, b.ints([-1, 1, *([0] * n)], "fold_shape")])
        taps = b.const(_one_hot_taps(window), work, "taps")

        def conv(v: str) -> str:
            return b.op(
                "Conv",
                [v, taps],
                kernel_shape=list(window),
                strides=list(strides),
                dilations=list(dilations),
                pads=_onnx_flat_pads(pads),
            )

        y = conv(folded)  # (N*C, K, out...)
        if opts["pad_value"] != 0.0 and any(lo > 0 or hi > 0 for lo, hi in pads):
            one_shape = b.op("Concat", [b.ints([1, 1]), b.op("Shape", [folded], start=2)], axis=0)
            ones = b.op("Expand", [b.const(np.ones((1,) * t.rank), work, "one"), one_shape])
            padded = b.op("Less", [conv(ones), b.const(0.5, work, "half")])
            y = b.op("Where", [padded, b.const(opts["pad_value"], work, "pad_value"), y])
        size = math.prod(window)
        outs = b.op("Shape", [y], start=2)
        y = b.op("Reshape", [y, b.op("Concat", [lead, b.ints([size]), outs], axis=0)])
        y = b.op("Transpose", [y], perm=[0, 1, *range(3, 3 + n), 2])
        y = b.op("Reshape", [y, b.op("Concat", [lead, outs, b.ints(window)], axis=0)])
        return y if work == t.dtype else b.cast(y, t.dtype)

    cases: ClassVar[list[Case]] = [
        Case(
            "1d_k3_s2",
            lambda x: make_node("np.windows", [x], {"window": 3, "strides": 2}),
            [TensorType((None, 2, 9))],
        ),
        Case(
            "2d_same_dilated_pad_value",
            lambda x: make_node(
                "np.windows",
                [x],
                {
                    "window": (3, 2),
                    "strides": (1, 2),
                    "pads": "same",
                    "dilations": (2, 1),
                    "pad_value": -5.0,
                },
            ),
            [TensorType((None, 3, 6, 5))],
        ),
        Case(
            "2d_crop_and_pad",
            lambda x: make_node(
                "np.windows", [x], {"window": 2, "pads": [(-1, 2), (1, -1)], "strides": 1}
            ),
            [TensorType((None, 1, 5, 6))],
        ),
        Case(
            "3d",
            lambda x: make_node("np.windows", [x], {"window": (2, 1, 2), "strides": (2, 1, 1)}),
            [TensorType((None, 2, 4, 3, 4))],
        ),
        Case(
            "2d_dynamic_spatial",
            lambda x: make_node(
                "np.windows", [x], {"window": 2, "strides": 1, "pads": [(1, 0), (0, 1)]}
            ),
            [TensorType((None, 2, None, None))],
        ),
    ]


@register
class WindowsTranspose(_WindowPrimitive):
    name = "np.windows_transpose"
    doc = (
        "Scatter-adds windows (N, C, out..., window...) back onto the shape of `like` "
        "(N, C, spatial...), dropping padded positions: the transpose of np.windows."
    )
    arity = 2

    def infer(self, types, opts, node):
        g, like = types
        n = like.rank - 2
        if n < 1 or g.rank != 2 + 2 * n or not is_float(g.dtype):
            raise ShapeError(
                f"np.windows_transpose expects float windows (N, C, out..., window...) and a "
                f"like tensor (N, C, spatial...), got {g!r} and {like!r}"
            )
        window = self.geometry(n, opts)[0]
        expected = (*like.shape[:2], *self.out_sizes(like.shape[2:], opts), *window)
        if any(
            a is not None and b is not None and a != b
            for a, b in zip(g.shape, expected, strict=True)
        ):
            raise ShapeError(
                f"np.windows_transpose: windows of shape {g.shape} do not match the windows "
                f"{expected} of a {like.shape} input"
            )
        shape = tuple(a if a is not None else b for a, b in zip(g.shape[:2], like.shape[:2]))
        return TensorType((*shape, *like.shape[2:]), g.dtype)

    def forward(self, ctx, inputs, params, opts):
        g, like = np.asarray(inputs[0]), np.asarray(inputs[1])
        n = like.ndim - 2
        window, strides, dilations, pads = self.geometry(n, opts)
        outs = self.out_sizes(like.shape[2:], opts)
        crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]
        padded = [
            size - clo - chi + max(lo, 0) + max(hi, 0)
            for size, (clo, chi), (lo, hi) in zip(like.shape[2:], crops, pads, strict=True)
        ]
        acc = np.zeros((*g.shape[:2], *padded), np.float64)
        flat = g.astype(np.float64).reshape(*g.shape[: 2 + n], -1)
        for t, offsets in enumerate(itertools.product(*(range(k) for k in window))):
            acc[_tap_slices(offsets, strides, dilations, outs)] += flat[..., t]
        inner = [
            slice(max(lo, 0), p - max(hi, 0)) for (lo, hi), p in zip(pads, padded, strict=True)
        ]
        keep = (slice(None), slice(None), *inner)
        out = np.pad(acc[keep], [(0, 0), (0, 0), *crops])
        return out.astype(g.dtype)

    def vjp(self, ctx, inputs, output, cot, opts):
        return [apply("np.windows", [cot], _geometry_opts(opts)), None]

    def onnx(self, ctx, inputs, opts):
        """ConvTranspose with the one-hot tap kernels of np.windows over (N*C, K, out...),
        padded at the end up to the padded input size (known only at run time for a
        dynamic spatial dim), then the padding sliced away and cropped dims restored."""
        b, tg, tl = ctx.b, ctx.in_types[0], ctx.in_types[1]
        n = tl.rank - 2
        window, strides, dilations, pads = self.geometry(n, opts)
        work = _CONV_WORK
        g = inputs[0] if work == tg.dtype else b.cast(inputs[0], work)
        size = math.prod(window)
        lead = b.op("Shape", [g], start=0, end=2)
        outs = b.op("Shape", [g], start=2, end=2 + n)
        g = b.op("Reshape", [g, b.op("Concat", [b.ints([-1]), outs, b.ints([size])], axis=0)])
        g = b.op("Transpose", [g], perm=[0, n + 1, *range(1, n + 1)])
        z = b.op(
            "ConvTranspose",
            [g, b.const(_one_hot_taps(window), work, "taps")],
            kernel_shape=list(window),
            strides=list(strides),
            dilations=list(dilations),
        )  # (N*C, 1, (out - 1) * stride + effective window...)
        crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]
        pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)
        grow = [lo + hi - clo - chi for (lo, hi), (clo, chi) in zip(pads, crops, strict=True)]
        target = b.op("Add", [b.op("Shape", [inputs[1]], start=2), b.ints(grow, "grow")])
        extra = b.op("Sub", [target, b.op("Shape", [z], start=2)])
        z = b.op("Pad", [z, b.op("Concat", [b.ints([0] * (n + 4)), extra], axis=0)])
        if any(lo or hi for lo, hi in pads):
            starts = [lo for lo, _ in pads]
            ends = [-hi if hi else np.iinfo(np.int64).max for _, hi in pads]
            axes = list(range(2, 2 + n))
            z = b.op("Slice", [z, b.ints(starts, "starts"), b.ints(ends, "ends"), b.ints(axes)])
        if any(lo or hi for lo, hi in crops):
            flat = [0, 0, *(lo for lo, _ in crops), 0, 0, *(hi for _, hi in crops)]
            z = b.op("Pad", [z, b.ints(flat, "pads")])
        z = b.op("Reshape", [z, b.op("Concat", [lead, b.op("Shape", [z], start=2)], axis=0)])
        return z if work == tg.dtype else b.cast(z, tg.dtype)

    cases: ClassVar[list[Case]] = [
        Case(
            "1d_k3_s2",
            lambda g, x: make_node("np.windows_transpose", [g, x], {"window": 3, "strides": 2}),
            [TensorType((None, 2, 4, 3)), TensorType((None, 2, 9))],
        ),
        Case(
            "2d_same_dilated",
            lambda g, x: make_node(
                "np.windows_transpose",
                [g, x],
                {"window": (3, 2), "strides": (1, 2), "pads": "same", "dilations": (2, 1)},
            ),
            [TensorType((None, 3, 6, 3, 3, 2)), TensorType((None, 3, 6, 5))],
        ),
        Case(
            "2d_crop_and_pad",
            lambda g, x: make_node(
                "np.windows_transpose", [g, x], {"window": 2, "pads": [(-1, 2), (1, -1)]}
            ),
            [TensorType((None, 1, 5, 5, 2, 2)), TensorType((None, 1, 5, 6))],
        ),
        Case(
            "3d_stride_leaves_a_tail",
            lambda g, x: make_node(
                "np.windows_transpose", [g, x], {"window": (2, 1, 2), "strides": (2, 1, 3)}
            ),
            [TensorType((None, 2, 2, 3, 1, 2, 1, 2)), TensorType((None, 2, 5, 3, 4))],
        ),
        Case(
            "2d_dynamic_spatial",
            lambda g, x: make_node(
                "np.windows_transpose", [g, x], {"window": 2, "strides": 1, "pads": "same"}
            ),
            [TensorType((None, 2, None, None, 2, 2)), TensorType((None, 2, None, None))],
        ),
    ]


def _geometry_opts(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: opts[k] for k in ("window", "strides", "pads", "dilations")}


def _first_max_hit(x: Any, geometry: dict[str, Any]) -> Any:
    """(N, C, out..., K) booleans marking each window's FIRST maximum (row-major taps;
    padded positions read -inf and never win against a real value)."""
    window = per_dim(geometry["window"], x.ndim - 2, "window")
    size = math.prod(window)
    keep = (None,) * x.ndim
    windows = apply("np.windows", [x], {**geometry, "pad_value": -np.inf})
    first = anp.argmax(anp.reshape(windows, (*keep, size)), axis=-1, keepdims=True)
    return anp.equal(first, np.arange(size, dtype=np.int32))


def _first_type(t: TensorType, channels: str) -> TensorType:
    """A (N, ..., C) type as (N, C, ...) for channels last."""
    if channels == "first":
        return t
    return t.with_shape((t.shape[0], t.shape[-1], *t.shape[1:-1]))


def _last_type(t: TensorType) -> TensorType:
    return t.with_shape((t.shape[0], *t.shape[2:], t.shape[1]))


def _first_np(a: np.ndarray, channels: str) -> np.ndarray:
    return a if channels == "first" else np.moveaxis(a, -1, 1)


def _onnx_tap_cascade(
    b: Any, x: str, g: str, window: tuple, spatial: list, channels: str, work: str
) -> str:
    """Max pooling's input gradient for windows that tile x (strides = window): one
    strided Slice per tap (row-major), m = their Max, then per tap in order the
    cotangent still unassigned times (tap == m) as 0/1, the rest passed on by an exact
    Sub (rest - rest or rest - 0): the first maximum gets it, ties as the reference.
    The tap gradients are interleaved back by Unsqueeze + Concat + Reshape and the
    uncovered tail is zero-padded. Mul rather than Where: onnxruntime's Where took
    twice as long (bench/conv_grad.py). So a NaN window's cotangent goes to its last
    tap, and an infinite cotangent makes NaN at its window's other taps."""
    n = len(window)
    axes = spatial_axes(n + 2, channels)
    outs = [size // k for size, k in zip(spatial, window, strict=True)]
    taps = [
        b.op(
            "Slice",
            [
                x,
                b.ints(offsets, "starts"),
                b.ints([o + m * k for o, m, k in zip(offsets, outs, window)], "ends"),
                b.ints(axes, "axes"),
                b.ints(window, "steps"),
            ],
        )
        for offsets in itertools.product(*(range(k) for k in window))
    ]
    top = b.op("Max", taps) if len(taps) > 1 else taps[0]
    rest, grads = g, []
    for tap in taps[:-1]:
        grads.append(b.op("Mul", [rest, b.cast(b.op("Equal", [tap, top]), work)]))
        rest = b.op("Sub", [rest, grads[-1]])
    grads.append(rest)
    units = [a + i + 1 for i, a in enumerate(axes)]  # a unit axis after each spatial axis
    grads = [b.op("Unsqueeze", [v, b.ints(units, "unit_axes")]) for v in grads]
    for level in reversed(range(n)):
        k = window[level]
        grads = [
            b.op("Concat", grads[i : i + k], axis=units[level]) if k > 1 else grads[i]
            for i in range(0, len(grads), k)
        ]
    tiled = [m * k for m, k in zip(outs, window, strict=True)]
    shape = [0, *tiled, -1] if channels == "last" else [0, -1, *tiled]
    z = b.op("Reshape", [grads[0], b.ints(shape, "tiled_shape")])
    tails = [size - t for size, t in zip(spatial, tiled, strict=True)]
    if any(tails):
        hi = [0] * (n + 2)
        for a, t in zip(axes, tails, strict=True):
            hi[a] = t
        z = b.op("Pad", [z, b.ints([0] * (n + 2) + hi, "pads")])
    return z


_MAX_POOL_ONNX = ("f32", "f64")  # onnxruntime's MaxPool with Indices; others run in f32


@register
class MaxPoolGrad(_WindowPrimitive):
    name = "np.max_pool_grad"
    doc = (
        "Max pooling's input gradient: adds each output's `cot` (N, C, out...) onto the "
        "first maximum of its window of `x` (N, C, spatial...); channels last: (N, ..., C)."
    )
    arity = 2
    options: ClassVar[dict[str, Option]] = {
        **_WindowPrimitive.options,
        "channels": Option("first", check_channels, "channel axis of x and the cotangent"),
    }

    def infer(self, types, opts, node):
        x, g = types
        n = x.rank - 2
        if n < 1 or g.rank != x.rank or not is_float(x.dtype) or not is_float(g.dtype):
            raise ShapeError(
                f"np.max_pool_grad expects a float x (N, C, spatial...) and a float cotangent "
                f"(N, C, out...) of the same rank, got {x!r} and {g!r}"
            )
        xf, gf = (_first_type(t, opts["channels"]) for t in (x, g))
        expected = (*xf.shape[:2], *self.out_sizes(xf.shape[2:], opts))
        if any(
            a is not None and b is not None and a != b
            for a, b in zip(gf.shape, expected, strict=True)
        ):
            raise ShapeError(
                f"np.max_pool_grad: a cotangent of shape {g.shape} does not match the pooled "
                f"shape {expected} of a {x.shape} input (channels first)"
            )
        lead = tuple(a if a is not None else b for a, b in zip(xf.shape[:2], gf.shape[:2]))
        out = TensorType((*lead, *xf.shape[2:]), x.dtype)
        return out if opts["channels"] == "first" else _last_type(out)

    def forward(self, ctx, inputs, params, opts):
        """Argmax over the stacked window taps, then one bincount of the cotangent into the
        padded input (flat indices per (n, c)); the padding is dropped, crops are zeros."""
        ch = opts["channels"]
        x, g = (_first_np(np.asarray(v), ch) for v in inputs)
        n = x.ndim - 2
        window, strides, dilations, pads = self.geometry(n, opts)
        outs = self.out_sizes(x.shape[2:], opts)
        xp = _padded(x.astype(np.float64), pads, -np.inf)
        offsets = list(itertools.product(*(range(k) for k in window)))
        taps = np.stack([xp[_tap_slices(o, strides, dilations, outs)] for o in offsets], -1)
        first = np.argmax(taps, axis=-1)  # (N, C, out...)
        tap_offsets = np.array(offsets, dtype=np.int64).reshape(len(offsets), n)
        pos = np.zeros(first.shape, np.int64)
        for i in range(n):
            base = np.arange(outs[i], dtype=np.int64) * strides[i]
            base = base.reshape((1, 1, *(-1 if j == i else 1 for j in range(n))))
            pos = pos * xp.shape[2 + i] + base + tap_offsets[first, i] * dilations[i]
        cells = math.prod(xp.shape[2:])
        lead = np.arange(math.prod(x.shape[:2]), dtype=np.int64).reshape(*x.shape[:2], *[1] * n)
        acc = np.bincount(
            (lead * cells + pos).ravel(),
            weights=g.astype(np.float64).ravel(),
            minlength=math.prod(xp.shape[:2]) * cells,
        ).reshape(xp.shape)
        inner = [
            slice(max(lo, 0), size - max(hi, 0))
            for (lo, hi), size in zip(pads, xp.shape[2:], strict=True)
        ]
        crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]
        out = np.pad(acc[(slice(None), slice(None), *inner)], [(0, 0), (0, 0), *crops])
        out = out.astype(x.dtype)
        return out if ch == "first" else np.moveaxis(out, 1, -1)

    def vjp(self, ctx, inputs, output, cot, opts):
        """Zero for x (piecewise constant); for the pooled cotangent, the incoming cotangent
        gathered at each window's first maximum."""
        ch = opts["channels"]
        x, g = inputs
        x, cot = _to_first(x, ch), _to_first(cot, ch)
        geometry = _geometry_opts(opts)
        n = x.ndim - 2
        size = math.prod(per_dim(geometry["window"], n, "window"))
        keep = (None,) * x.ndim
        windows = anp.reshape(apply("np.windows", [cot], geometry), (*keep, size))
        picked = anp.where(_first_max_hit(x, geometry), windows, 0.0)
        return [None, _from_first(anp.sum(picked, axis=-1), ch).astype(g.dtype)]

    def onnx(self, ctx, inputs, opts):
        """Windows that do not overlap (strides = window, no dilation or padding) and
        static spatial dims: `_onnx_tap_cascade` in the layer's layout. Otherwise, channels
        first: MaxPool's Indices (flat over (N, C, spatial...) of its input, row-major; ties
        go to the first maximum, as onnxruntime compares strictly), then ScatterElements
        with reduction "add" of the cotangent into zeros, so overlapping windows add up.
        Negative pads crop first and are zero-filled after; pads MaxPool refuses (not
        smaller than the window) are made with an explicit -inf Pad and sliced away."""
        b, tx, tg = ctx.b, ctx.in_types[0], ctx.in_types[1]
        ch = opts["channels"]
        n = tx.rank - 2
        window, strides, dilations, pads = self.geometry(n, opts)
        work = tx.dtype if tx.dtype in _MAX_POOL_ONNX else "f32"
        x = inputs[0] if work == tx.dtype else b.cast(inputs[0], work)
        g = inputs[1] if work == tg.dtype else b.cast(inputs[1], work)
        out = ctx.out_type.dtype
        spatial = [tx.shape[a] for a in spatial_axes(tx.rank, ch)]
        if (
            strides == window
            and all(d == 1 for d in dilations)
            and all(p == (0, 0) for p in pads)
            and None not in spatial
        ):
            z = _onnx_tap_cascade(b, x, g, window, spatial, ch, work)
            return z if out == work else b.cast(z, out)
        x, g = _onnx_to_first(b, x, tx.rank, ch), _onnx_to_first(b, g, tx.rank, ch)
        crops = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pads]
        x, pads = _onnx_crop(b, x, pads)
        explicit = _onnx_pads_refused(pads, window)
        (_, indices), x, real = _onnx_max_pool(b, x, work, window, strides, dilations, pads, 2)
        if real is not None:
            # A window wholly in padding has no maximum, and onnxruntime gives it a
            # bogus index: its cotangent is dropped, its index zeroed.
            indices = b.op("Where", [real, indices, b.const(0, "s64", "zero_index")])
            g = b.op("Where", [real, g, b.const(0.0, work, "zero")])
        shape = b.op("Shape", [x])
        zeros = _onnx_filled(b, b.op("Reshape", [b.op("Size", [x]), b.ints([1], "one")]), 0.0, work)
        flat = b.ints([-1], "flat")
        z = b.op(
            "ScatterElements",
            [zeros, b.op("Reshape", [indices, flat]), b.op("Reshape", [g, flat])],
            axis=0,
            reduction="add",
        )
        z = b.op("Reshape", [z, shape])
        if explicit:
            starts = [lo for lo, _ in pads]
            ends = [-hi if hi else np.iinfo(np.int64).max for _, hi in pads]
            axes = list(range(2, 2 + n))
            z = b.op("Slice", [z, b.ints(starts, "starts"), b.ints(ends, "ends"), b.ints(axes)])
        if any(lo or hi for lo, hi in crops):
            widths = [0, 0, *(lo for lo, _ in crops), 0, 0, *(hi for _, hi in crops)]
            z = b.op("Pad", [z, b.ints(widths, "pads")])
        z = _onnx_from_first(b, z, tx.rank, ch)
        return z if out == work else b.cast(z, out)

    cases: ClassVar[list[Case]] = [
        Case(
            "1d_k3_s2",
            lambda x, g: make_node("np.max_pool_grad", [x, g], {"window": 3, "strides": 2}),
            [TensorType((None, 2, 9)), TensorType((None, 2, 4))],
        ),
        Case(
            "2d_k2_no_overlap",
            lambda x, g: make_node("np.max_pool_grad", [x, g], {"window": 2, "strides": 2}),
            [TensorType((None, 3, 6, 6)), TensorType((None, 3, 3, 3))],
        ),
        Case(
            "2d_overlap_same_dilated",
            lambda x, g: make_node(
                "np.max_pool_grad",
                [x, g],
                {"window": (3, 2), "strides": (1, 2), "pads": "same", "dilations": (2, 1)},
            ),
            [TensorType((None, 3, 6, 5)), TensorType((None, 3, 6, 3))],
        ),
        Case(
            "2d_crop_and_pad",
            lambda x, g: make_node(
                "np.max_pool_grad", [x, g], {"window": 2, "strides": 2, "pads": [(-1, 1), (1, -1)]}
            ),
            [TensorType((None, 1, 5, 6)), TensorType((None, 1, 2, 3))],
        ),
        Case(
            "1d_dilated_pads_not_smaller_than_window",
            lambda x, g: make_node(
                "np.max_pool_grad",
                [x, g],
                {"window": 2, "strides": 1, "dilations": 3, "pads": [(2, 2)]},
            ),
            [TensorType((None, 2, 5)), TensorType((None, 2, 6))],
        ),
        Case(
            "1d_dilated_window_wholly_in_padding",
            lambda x, g: make_node(
                "np.max_pool_grad",
                [x, g],
                {"window": 2, "strides": 1, "dilations": 3, "pads": [(2, 2)]},
            ),
            [TensorType((None, 2, 2)), TensorType((None, 2, 3))],
        ),
        Case(
            "2d_dilated_windows_in_small_padding",
            lambda x, g: make_node(
                "np.max_pool_grad",
                [x, g],
                {"window": 2, "strides": 1, "dilations": (1, 3), "pads": [(0, 0), (1, 1)]},
            ),
            [TensorType((None, 2, 3, 2)), TensorType((None, 2, 2, 1))],
        ),
        Case(
            "3d_stride_leaves_a_tail",
            lambda x, g: make_node(
                "np.max_pool_grad", [x, g], {"window": (2, 1, 2), "strides": (2, 1, 3)}
            ),
            [TensorType((None, 2, 5, 3, 4)), TensorType((None, 2, 2, 3, 1))],
        ),
        Case(
            "2d_dynamic_spatial",
            lambda x, g: make_node(
                "np.max_pool_grad", [x, g], {"window": 3, "strides": 1, "pads": "same"}
            ),
            [TensorType((None, 2, None, None)), TensorType((None, 2, None, None))],
        ),
        Case(
            "2d_last_tiling_with_tail",
            lambda x, g: make_node(
                "np.max_pool_grad", [x, g], {"window": 2, "strides": 2, "channels": "last"}
            ),
            [TensorType((None, 5, 4, 3)), TensorType((None, 2, 2, 3))],
        ),
        Case(
            "3d_first_tiling",
            lambda x, g: make_node(
                "np.max_pool_grad", [x, g], {"window": (2, 1, 3), "strides": (2, 1, 3)}
            ),
            [TensorType((None, 2, 4, 2, 7)), TensorType((None, 2, 2, 2, 2))],
        ),
        Case(
            "1d_last_overlap",
            lambda x, g: make_node(
                "np.max_pool_grad",
                [x, g],
                {"window": 3, "strides": 1, "pads": "same", "channels": "last"},
            ),
            [TensorType((None, 6, 2)), TensorType((None, 6, 2))],
        ),
    ]


# ---------------------------------------------------------------------------
# Gradient rules of the pools


def _to_first(t: Any, channels: str) -> Any:
    rank = t.ndim
    return t if channels == "first" else anp.transpose(t, (0, rank - 1, *range(1, rank - 1)))


def _from_first(t: Any, channels: str) -> Any:
    rank = t.ndim
    return t if channels == "first" else anp.transpose(t, (0, *range(2, rank), 1))


def _lp_scale(y: Any, cot: Any, norm: int | float) -> Any:
    """cot * d(S ** (1/p)) / dS * p = cot * y ** (1 - p), taken as 0 where y = 0 (an
    all-zero window, where the norm has no derivative)."""
    safe = anp.where(y != 0, y, 1.0)
    return anp.where(y != 0, cot * anp.power(safe, 1 - norm), 0.0)


def _lp_input_factor(x: Any, norm: int | float) -> Any:
    """x ** (p - 1), the other factor of the Lp norm's derivative."""
    return anp.power(x, norm - 1)


def _window_vjp(
    kind: str,
    x: Any,
    y: Any,
    cot: Any,
    channels: str,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    norm: int | float | None,
) -> Any:
    """The input cotangent of a max / avg / lp window pool.

    Max: np.max_pool_grad adds each output's cotangent onto the first maximum of its
    window (row-major tap order; XLA's select-and-scatter also picks one element per
    window). Avg / lp: the cotangent is spread over the window's taps -- avg: 1/K each,
    lp: cot * y**(1-p) each, then multiplied by x**(p-1) -- and np.windows_transpose
    scatter-adds the taps back onto the input (padded positions dropped). Either way
    overlapping windows add up.
    """
    xf, cf = _to_first(x, channels), _to_first(cot, channels)
    n = len(kernel)
    size = math.prod(kernel)
    keep = (None,) * (2 + n)  # np.reshape / broadcast_to keep these (maybe dynamic) dims
    geometry = {"window": kernel, "strides": strides, "pads": pads, "dilations": dilations}
    if kind == "max":
        grad = apply("np.max_pool_grad", [x, cot], {**geometry, "channels": channels})
        return grad.astype(x.dtype)
    share = cf * (1.0 / size) if kind == "avg" else _lp_scale(_to_first(y, channels), cf, norm)
    taps = anp.broadcast_to(anp.expand_dims(share, -1), (*keep, size))
    grad = apply("np.windows_transpose", [anp.reshape(taps, (*keep, *kernel)), xf], geometry)
    if kind == "lp":
        grad = grad * _lp_input_factor(xf, norm)
    return _from_first(grad, channels).astype(x.dtype)
