"""Convolution layers: Axon's `conv`, `conv_transpose`, `depthwise_conv`,
`separable_conv2d` and `separable_conv3d`, for 1-D, 2-D and 3-D inputs.

Conventions (tests/fixtures/axon-golden/README.md, section "Convolution"):
- kernels are HWIO `{k..., in/groups, out}` for channels "last" (the default) and
  OIHW `{out, in/groups, k...}` for channels "first"; `bias {out}`; no kernel flip
  (cross-correlation); feature groups are contiguous channel blocks.
- padding "valid", "same" (Nx's rule: depends only on the dilated kernel size, not on
  stride or input size) or explicit (lo, hi) pairs, which may be negative (cropping).
- conv_transpose is a stride-1 conv with the *unflipped* kernel over the input dilated
  by `strides`, with Axon's padding formulas (see `conv_transpose_padding`).
- depthwise_conv(mult): groups = input channels; output channel c*mult + m reads input
  channel c.
- separable_conv2d/3d are *spatially* separable: one depthwise conv per spatial axis
  (kernel_1..kernel_n, bias_1..bias_n), each pass applying every option (strides,
  padding, dilations) again, exactly as Axon.Layers chains depthwise_conv calls.

Every op runs through one general N-D convolution, `conv_nd`. The ONNX lowering
(channels-first Conv between Transposes) adds input dilation with an exact
depthwise ConvTranspose of ones, crops negative padding with Slice, and lowers
conv_transpose to ONNX ConvTranspose with the flipped kernel (`_onnx_conv_transpose`).

Gradients: a layer's kernel gradient is `conv_kernel_grad` in the layer's own layout
(im2col + one Gemm for up to 9 kernel taps, a Conv with the batch as channels above),
its data gradient `conv_data_grad` (one ConvTranspose) where the geometry allows, else a
`conv_general_dilated` of the cotangent with the flipped kernel: the forms
bench/conv_grad.py measured fastest on onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import (
    TensorType,
    float_or_f32,
    is_float,
    jnp_promote,
    to_numpy_dtype,
    with_f32_params,
    with_f32_params_np,
)
from ..errors import OptionError, ShapeError
from ..initializers import check_initializer
from ..interpreter import layer_param
from ..ir import Axon
from ..registry import (
    Case,
    Op,
    Option,
    ParamSpec,
    check_bool,
    check_int,
    check_int_or_tuple,
    layer_api,
    register,
)
from ..shape_inference import make_node
from ..tracing import apply
from ._spatial import (
    channel_axis,
    check_channels,
    check_padding,
    int_pairs,
    per_dim,
    resolve_padding,
)
from .activation import apply_activation

Pads = tuple[tuple[int, int], ...]


def _dilate_pad(x: np.ndarray, input_dilation: tuple[int, ...], padding: Pads) -> np.ndarray:
    """A channels-first array with interior zeros (input dilation), then padded by the
    (lo, hi) pairs, negative values cropping."""
    if any(d != 1 for d in input_dilation):
        dilated = tuple(
            (s - 1) * d + 1 if s > 0 else 0
            for s, d in zip(x.shape[2:], input_dilation, strict=True)
        )
        z = np.zeros((*x.shape[:2], *dilated), x.dtype)
        z[(slice(None), slice(None), *(slice(None, None, d) for d in input_dilation))] = x
        x = z
    x = np.pad(x, [(0, 0), (0, 0), *((max(lo, 0), max(hi, 0)) for lo, hi in padding)])
    crop = tuple(
        slice(max(-lo, 0), x.shape[2 + i] - max(-hi, 0)) for i, (lo, hi) in enumerate(padding)
    )
    return x[(slice(None), slice(None), *crop)]


def conv_nd(
    x: np.ndarray,
    w: np.ndarray,
    *,
    strides: tuple[int, ...],
    padding: Pads,
    input_dilation: tuple[int, ...],
    kernel_dilation: tuple[int, ...],
    groups: int = 1,
) -> np.ndarray:
    """General N-D cross-correlation, channels first, in float64 (Nx.conv's semantics).

    `x` is (N, C, *spatial), `w` is (O, C/groups, *kernel); the input is dilated
    (interior zeros), then padded by the explicit (lo, hi) pairs (negative values crop),
    then the dilated kernel slides with `strides`. Returns (N, O, *out).
    """
    n = x.ndim - 2
    x = _dilate_pad(np.asarray(x, dtype=np.float64), input_dilation, padding)
    w = np.asarray(w, dtype=np.float64)
    kernel = w.shape[2:]
    out = []
    for i in range(n):
        k_eff = (kernel[i] - 1) * kernel_dilation[i] + 1
        size = (x.shape[2 + i] - k_eff) // strides[i] + 1 if x.shape[2 + i] >= k_eff else 0
        if size < 1:
            raise ShapeError(
                f"spatial dim {i}: the padded input ({x.shape[2 + i]}) is smaller than the "
                f"dilated kernel ({k_eff}), so the convolution output would be empty"
            )
        out.append(size)
    batch, chans = x.shape[:2]
    o_total = w.shape[0]
    cg, og = chans // groups, o_total // groups
    xg = x.reshape(batch, groups, cg, *x.shape[2:])
    wg = w.reshape(groups, og, cg, *kernel)
    y = np.zeros((batch, groups, og, *out))
    for kidx in np.ndindex(*kernel):
        window = tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s)
            for k, d, o, s in zip(kidx, kernel_dilation, out, strides, strict=True)
        )
        patch = xg[(slice(None), slice(None), slice(None), *window)]
        y += np.einsum("ngc...,goc->ngo...", patch, wg[(..., *kidx)])
    return y.reshape(batch, o_total, *out)


def conv_transpose_padding(
    kernel: tuple[int, ...],
    kernel_dilation: tuple[int, ...],
    strides: tuple[int, ...],
    padding: Any,
) -> Pads:
    """Axon's padding of the stride-dilated conv that implements conv_transpose.

    With k_eff = (k-1)*dilation+1 and s = stride, per spatial dim:
    "valid": lo = k_eff-1, hi = k_eff+s-2+max(k_eff-s, 0) - lo (output in*s + max(k_eff-s, 0));
    "same": len = k_eff+s-2, lo = k_eff-1 if s > k_eff-1 else ceil(len/2), hi = len-lo
    (output in*s); explicit pairs are used verbatim.
    """
    if padding not in ("valid", "same"):
        return tuple(padding)
    pads = []
    for k, d, s in zip(kernel, kernel_dilation, strides, strict=True):
        k_eff = (k - 1) * d + 1
        if padding == "valid":
            total = k_eff + s - 2 + max(k_eff - s, 0)
            lo = k_eff - 1
        else:
            total = k_eff + s - 2
            lo = k_eff - 1 if s > k_eff - 1 else -(-total // 2)
        pads.append((lo, total - lo))
    return tuple(pads)


@dataclass(frozen=True)
class Geometry:
    """One convolution pass resolved against an input: everything `conv_nd` needs."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Pads
    input_dilation: tuple[int, ...]
    kernel_dilation: tuple[int, ...]

    def out_dim(self, i: int, size: int | None) -> int | None:
        """Output length of spatial dim i for an input length (None stays dynamic)."""
        if size is None:
            return None
        dilated = (size - 1) * self.input_dilation[i] + 1 if size > 0 else 0
        lo, hi = self.padding[i]
        k_eff = (self.kernel[i] - 1) * self.kernel_dilation[i] + 1
        padded = dilated + lo + hi
        if padded < k_eff:
            raise ShapeError(
                f"spatial dim {i} of size {size} is too small: after input dilation "
                f"{self.input_dilation[i]} and padding {self.padding[i]} it has {padded} "
                f"elements, fewer than the dilated kernel size {k_eff}"
            )
        return (padded - k_eff) // self.strides[i] + 1


def _per_dim(opts: dict[str, Any], key: str, n: int) -> tuple[int, ...]:
    try:
        return per_dim(opts[key], n, key)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def _geometry(opts: dict[str, Any], kernel: tuple[int, ...], transpose: bool = False) -> Geometry:
    n = len(kernel)
    strides = _per_dim(opts, "strides", n)
    kdil = _per_dim(opts, "kernel_dilation", n)
    if transpose:
        try:
            pads = conv_transpose_padding(kernel, kdil, strides, opts["padding"])
            if len(pads) != n:
                raise ValueError(
                    f"padding has {len(pads)} pairs but the input has {n} spatial dims"
                )
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        return Geometry(kernel, (1,) * n, pads, strides, kdil)
    try:
        pads = resolve_padding(opts["padding"], kernel, kdil)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return Geometry(kernel, strides, pads, _per_dim(opts, "input_dilation", n), kdil)


def _check_rank(t: TensorType, rank: int | None, what: str) -> None:
    if rank is not None and t.rank != rank:
        raise ShapeError(
            f"{what} expects a rank-{rank} input (batch, {rank - 2} spatial dims, channels), "
            f"got {t.shape}"
        )
    if t.rank < 3:
        raise ShapeError(
            f"{what} expects an input of rank 3, 4 or 5 (batch, spatial dims..., channels), "
            f"got {t.shape}"
        )


def _in_channels(t: TensorType, channels: str) -> int:
    c = t.shape[channel_axis(t.rank, channels)]
    if c is None:
        raise ShapeError(
            f"the channel dim (channels={channels!r}) must be known to size the kernel, "
            f"got {t.shape}"
        )
    return c


def _kernel_shape(channels: str, spatial: tuple[int, ...], in_per_group: int, out: int) -> tuple:
    """HWIO for channels last, OIHW for channels first."""
    if channels == "last":
        return (*spatial, in_per_group, out)
    return (out, in_per_group, *spatial)


def _out_type(
    t: TensorType, channels: str, spatial: list[int | None], out_channels: int
) -> TensorType:
    if channels == "last":
        shape = (t.shape[0], *spatial, out_channels)
    else:
        shape = (t.shape[0], out_channels, *spatial)
    return TensorType(shape, with_f32_params(t.dtype))


def _to_first(x: np.ndarray, channels: str) -> np.ndarray:
    return np.moveaxis(x, -1, 1) if channels == "last" else x


def _from_first(y: np.ndarray, channels: str) -> np.ndarray:
    return np.moveaxis(y, 1, -1) if channels == "last" else y


def _kernel_oihw(k: np.ndarray, channels: str) -> np.ndarray:
    if channels == "first":
        return k
    n = k.ndim - 2
    return np.transpose(k, (n + 1, n, *range(n)))


def _apply(
    ctx: Any,
    x: np.ndarray,
    params: dict[str, Any],
    geo: Geometry,
    channels: str,
    groups: int,
    kernel_key: str,
    bias_key: str | None,
) -> np.ndarray:
    """One conv pass on a channels-first float64 array, with the layer's own params."""
    k = _kernel_oihw(np.asarray(layer_param(params, kernel_key, ctx)), channels)
    y = conv_nd(
        x,
        k,
        strides=geo.strides,
        padding=geo.padding,
        input_dilation=geo.input_dilation,
        kernel_dilation=geo.kernel_dilation,
        groups=groups,
    )
    if bias_key is not None:
        b = np.asarray(layer_param(params, bias_key, ctx), dtype=np.float64)
        y = y + b.reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


def _spatial_of(t: TensorType, channels: str) -> tuple[int | None, ...]:
    return t.shape[2:] if channels == "first" else t.shape[1:-1]


# ---- ONNX lowering -------------------------------------------------------------
#
# ONNX Conv/ConvTranspose are channels first and compute in f32 here (onnxruntime
# has no f64 Conv kernel; an f64 input is computed in f32 and cast back, within
# the parity tolerance). Kernels are re-laid out by Transpose nodes on the
# parameters, never by reading their values.

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)


def _onnx_to_first(b: Any, x: str, rank: int, channels: str) -> str:
    if channels == "first":
        return x
    return b.op("Transpose", [x], perm=[0, rank - 1, *range(1, rank - 1)])


def _onnx_from_first(b: Any, y: str, rank: int, channels: str) -> str:
    if channels == "first":
        return y
    return b.op("Transpose", [y], perm=[0, *range(2, rank), 1])


def _onnx_input(ctx: Any, x: str, channels: str) -> str:
    """The layer input as a channels-first f32 value."""
    t = ctx.in_types[0]
    if t.dtype != "f32":
        x = ctx.b.cast(x, "f32")
    return _onnx_to_first(ctx.b, x, t.rank, channels)


def _onnx_output(ctx: Any, y: str, channels: str) -> str:
    """A channels-first f32 result in the layer's layout and output dtype."""
    y = _onnx_from_first(ctx.b, y, ctx.out_type.rank, channels)
    return y if ctx.out_type.dtype == "f32" else ctx.b.cast(y, ctx.out_type.dtype)


def _onnx_kernel(ctx: Any, key: str, channels: str, n: int, *, transpose: bool = False) -> str:
    """Kernel `key` as ONNX Conv's OIHW, or (transpose) ConvTranspose's flipped IOHW."""
    k = ctx.param(key)
    if transpose:
        perm = [n, n + 1, *range(n)] if channels == "last" else [1, 0, *range(2, n + 2)]
        k = ctx.b.op("Transpose", [k], perm=perm)
        axes = list(range(2, n + 2))
        return ctx.b.op(
            "Slice",
            [
                k,
                ctx.b.ints([-1] * n, "starts"),
                ctx.b.ints([_INT64_MIN] * n, "ends"),
                ctx.b.ints(axes, "axes"),
                ctx.b.ints([-1] * n, "steps"),
            ],
        )
    if channels == "last":
        return ctx.b.op("Transpose", [k], perm=[n + 1, n, *range(n)])
    return k


def _onnx_dilate(b: Any, x: str, channels: int, dilation: tuple[int, ...]) -> str:
    """Interior zeros between input elements, exactly: a depthwise ConvTranspose with a
    1x..x1 kernel of ones and strides = dilation writes each x[i] (times 1.0) to i*d."""
    n = len(dilation)
    ones = b.const(np.ones((channels, 1, *(1,) * n), np.float32), hint="dilate_ones")
    return b.op(
        "ConvTranspose",
        [x, ones],
        strides=list(dilation),
        kernel_shape=[1] * n,
        group=channels,
        name="input_dilation",
    )


def _onnx_crop_pad(b: Any, x: str, pads: Pads, value_pad: bool) -> tuple[str, list[int]]:
    """Apply the negative (cropping) part of `pads` with a Slice; return the rest as
    ONNX `pads` [lo..., hi...] (or, when `value_pad`, apply it with a zero Pad too)."""
    n = len(pads)
    crop = [(i, max(-lo, 0), max(-hi, 0)) for i, (lo, hi) in enumerate(pads) if lo < 0 or hi < 0]
    if crop:
        x = b.op(
            "Slice",
            [
                x,
                b.ints([lo for _, lo, _ in crop], "starts"),
                b.ints([-hi if hi else _INT64_MAX for _, _, hi in crop], "ends"),
                b.ints([2 + i for i, _, _ in crop], "axes"),
            ],
        )
    rest = [max(lo, 0) for lo, _ in pads] + [max(hi, 0) for _, hi in pads]
    if value_pad and any(rest):
        x = b.op("Pad", [x, b.ints([0, 0, *rest[:n], 0, 0, *rest[n:]], "pads")])
        rest = [0] * (2 * n)
    return x, rest


def _onnx_conv(
    ctx: Any,
    x: str,
    channels_in: int,
    geo: Geometry,
    groups: int,
    kernel: str,
    bias: str | None,
) -> str:
    """One convolution pass (Nx.conv semantics) on a channels-first f32 value."""
    b = ctx.b
    if any(d != 1 for d in geo.input_dilation):
        x = _onnx_dilate(b, x, channels_in, geo.input_dilation)
    x, pads = _onnx_crop_pad(b, x, geo.padding, value_pad=False)
    return b.op(
        "Conv",
        [x, kernel, *([bias] if bias else [])],
        kernel_shape=list(geo.kernel),
        strides=list(geo.strides),
        dilations=list(geo.kernel_dilation),
        pads=pads,
        group=groups,
    )


def _onnx_conv_transpose(ctx: Any, x: str, geo: Geometry, kernel: str, bias: str | None) -> str:
    """Axon's conv_transpose (stride-1 conv over the stride-dilated input, unflipped
    kernel, padding (lo, hi)) as ONNX ConvTranspose with the flipped kernel.

    Per dim, with k_eff the dilated kernel size, ConvTranspose's pads are
    (k_eff-1-lo, k_eff-1-hi). A negative one means the output extends past the
    transposed conv's full support, where every value is zero: it is cropped to 0
    and the missing border added by a zero Pad (the bias is then added after it).
    """
    b = ctx.b
    n = len(geo.kernel)
    k_eff = [(k - 1) * d + 1 for k, d in zip(geo.kernel, geo.kernel_dilation, strict=True)]
    ct = [(e - 1 - lo, e - 1 - hi) for e, (lo, hi) in zip(k_eff, geo.padding, strict=True)]
    extend = tuple((max(-lo, 0), max(-hi, 0)) for lo, hi in ct)
    extended = any(lo or hi for lo, hi in extend)
    y = b.op(
        "ConvTranspose",
        [x, kernel, *([bias] if bias and not extended else [])],
        kernel_shape=list(geo.kernel),
        strides=list(geo.input_dilation),
        dilations=list(geo.kernel_dilation),
        pads=[max(lo, 0) for lo, _ in ct] + [max(hi, 0) for _, hi in ct],
    )
    if not extended:
        return y
    y, _ = _onnx_crop_pad(b, y, extend, value_pad=True)
    if bias:
        shaped = b.op("Reshape", [bias, b.ints([-1, *(1,) * n], "bias_shape")])
        y = b.op("Add", [y, shaped])
    return y


# ---- the general convolution primitive and its gradient ----------------------
#
# Layer ops read their kernels as parameters, so their gradients (and the
# gradient of a gradient) need a convolution whose kernel is a tensor input:
# `conv_general_dilated`, lax.conv_general_dilated's semantics on channels-first
# data and OIHW kernels. `conv_vjp` is its transpose rule, written with itself.


# ---------------------------------------------------------------------------
# TFLite lowering: channels last natively (NHWC / NDHWC), kernels re-laid out at export.


def _tfl_kernel_hwio(ctx: Any, key: str, channels: str) -> np.ndarray:
    """Kernel `key` as an f32 array in {spatial..., in/groups, out} order."""
    k = ctx.value(key).astype(np.float32)
    if channels == "first":
        n = k.ndim - 2
        k = k.transpose(*range(2, n + 2), 1, 0)
    return k


def _tfl_to_last(ctx: Any, x: int, channels: str) -> int:
    """The layer's input as channels-last f32 (a transpose only for channels='first')."""
    t = ctx.in_types[0]
    if t.dtype == "f64":
        raise ctx.unsupported("f64 inputs: LiteRT's kernels compute in f32")
    x = ctx.b.cast(x, "f32")
    if channels == "first":
        x = ctx.b.transpose(x, [0, *range(2, t.rank), 1])
    return x


def _tfl_from_last(ctx: Any, y: int, channels: str) -> int:
    if channels == "first":
        rank = ctx.b.type_of(y).rank
        y = ctx.b.transpose(y, [0, rank - 1, *range(1, rank - 1)])
    return y


def _tfl_pad(ctx: Any, x: int, pads: Pads) -> int:
    """Explicit spatial padding of a channels-last tensor: PAD for growth, SLICE for crops."""
    b = ctx.b
    t = b.type_of(x)
    full = [(0, 0), *pads, (0, 0)]
    grow = [[max(lo, 0), max(hi, 0)] for lo, hi in full]
    if any(v for pair in grow for v in pair):
        shape = tuple(None if d is None else d + lo + hi for d, (lo, hi) in zip(t.shape, grow))
        paddings = b.const(np.asarray(grow, np.int32), hint="paddings")
        x = b.op("PAD", [x, paddings], t.with_shape(shape))
    if any(lo < 0 or hi < 0 for lo, hi in full):
        have = b.type_of(x).shape
        if any(d is None for d in have[1:]):
            raise ctx.unsupported("cropping padding on a dynamic spatial dim")
        begin = [max(-lo, 0) for lo, _ in full]
        size = [
            -1 if d is None else d - max(-lo, 0) - max(-hi, 0) for d, (lo, hi) in zip(have, full)
        ]
        out = tuple(None if d is None else n for d, n in zip(have, size))
        x = b.op("SLICE", [x, b.ints(begin, "begin"), b.ints(size, "size")], t.with_shape(out))
    return x


def _tfl_same(size: int | None, k_eff: int, stride: int) -> tuple[int, int] | None:
    """TFLite's SAME padding (lo, hi) of one dim, or None when it depends on a dynamic size."""
    if size is None:
        return ((k_eff - 1) // 2, k_eff - 1 - (k_eff - 1) // 2) if stride == 1 else None
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def _tfl_padding(ctx: Any, x: int, geo: Geometry) -> tuple[int, str]:
    """(input, "SAME" or "VALID"): SAME when Axon's pads are TFLite's, else explicit PAD."""
    spatial = ctx.b.type_of(x).shape[1:-1]
    if all(p == (0, 0) for p in geo.padding):
        return x, "VALID"
    same = [
        _tfl_same(d, (k - 1) * r + 1, s)
        for d, k, r, s in zip(spatial, geo.kernel, geo.kernel_dilation, geo.strides)
    ]
    if list(geo.padding) == same:
        return x, "SAME"
    return _tfl_pad(ctx, x, geo.padding), "VALID"


def _tfl_conv(
    ctx: Any, x: int, cin: int, geo: Geometry, groups: int, k: np.ndarray, bias: Any
) -> int:
    """One convolution of a channels-last f32 tensor with an HWIO kernel `k` (f32 array).

    1-D runs as 2-D with a unit height; 2-D is CONV_2D (DEPTHWISE_CONV_2D when each
    group is one input channel); 3-D is CONV_3D. Input dilation has no TFLite form.
    """
    b = ctx.b
    n = len(geo.kernel)
    if any(d != 1 for d in geo.input_dilation):
        x = _tfl_dilate(ctx, x, geo.input_dilation)
        geo = Geometry(geo.kernel, geo.strides, geo.padding, (1,) * n, geo.kernel_dilation)
    cout = k.shape[-1]
    if groups > 1 and not (groups == cin and n == 2):
        return _tfl_grouped(ctx, x, cin, geo, groups, k, bias)
    # LiteRT's conv kernels need the bias input: zeros stand in for use_bias=False
    bias = np.zeros(cout, np.float32) if bias is None else bias
    bias_t = b.const(np.asarray(bias, np.float32), hint="bias")
    if n == 1:
        t = b.type_of(x)
        if sum(d is None for d in t.shape) > 1:
            raise ctx.unsupported("a 1-D conv over a dynamic length (reshaped to 2-D)")
        x = b.reshape(x, (t.shape[0], 1, *t.shape[1:]))
        geo = Geometry(
            (1, *geo.kernel),
            (1, *geo.strides),
            ((0, 0), *geo.padding),
            (1, 1),
            (1, *geo.kernel_dilation),
        )
        k = k[None]
        y = _tfl_conv(ctx, x, cin, geo, groups, k, bias)
        yt = b.type_of(y)
        return b.reshape(y, (yt.shape[0], *yt.shape[2:]))
    x, padding = _tfl_padding(ctx, x, geo)
    t = b.type_of(x)
    spatial = []
    for i, d in enumerate(t.shape[1:-1]):
        k_eff = (geo.kernel[i] - 1) * geo.kernel_dilation[i] + 1
        if d is None:
            spatial.append(None)
        elif padding == "SAME":
            spatial.append(-(-d // geo.strides[i]))
        else:
            spatial.append((d - k_eff) // geo.strides[i] + 1)
    out = TensorType((t.shape[0], *spatial, cout), "f32")
    if n == 3:
        options = b.options(
            "Conv3D",
            padding=padding,
            strideD=geo.strides[0],
            strideH=geo.strides[1],
            strideW=geo.strides[2],
            dilationDFactor=geo.kernel_dilation[0],
            dilationHFactor=geo.kernel_dilation[1],
            dilationWFactor=geo.kernel_dilation[2],
        )
        return b.op(
            "CONV_3D",
            [x, b.const(np.ascontiguousarray(k), hint="kernel"), bias_t],
            out,
            options=options,
        )
    common = dict(
        padding=padding,
        strideH=geo.strides[0],
        strideW=geo.strides[1],
        dilationHFactor=geo.kernel_dilation[0],
        dilationWFactor=geo.kernel_dilation[1],
    )
    if groups == cin and groups > 1:
        weights = np.ascontiguousarray(k.reshape(1, *k.shape[:2], cout))
        options = b.options("DepthwiseConv2D", depthMultiplier=cout // cin, **common)
        return b.op(
            "DEPTHWISE_CONV_2D", [x, b.const(weights, hint="kernel"), bias_t], out, options=options
        )
    weights = np.ascontiguousarray(k.transpose(3, 0, 1, 2))  # OHWI
    options = b.options("Conv2D", **common)
    return b.op("CONV_2D", [x, b.const(weights, hint="kernel"), bias_t], out, options=options)


def _tfl_dilate(ctx: Any, x: int, dilation: tuple[int, ...]) -> int:
    """Interior zeros between the elements of each spatial axis (input dilation):
    reshape to (batch, before, n, 1, after), pad the unit axis to d, merge, drop the
    trailing d - 1 (rank 5 at most, LiteRT's PAD limit)."""
    b = ctx.b
    for i, d in enumerate(dilation):
        if d == 1:
            continue
        shape = b.type_of(x).shape
        ax = i + 1
        if any(v is None for v in shape[1:]):
            raise ctx.unsupported("input dilation of a dynamic spatial dim")
        before, n, after = int(np.prod(shape[1:ax])), shape[ax], int(np.prod(shape[ax + 1 :]))
        x = b.reshape(x, (shape[0], before, n, 1, after))
        x = b.pad(x, [(0, 0), (0, 0), (0, 0), (0, d - 1), (0, 0)])
        x = b.reshape(x, (shape[0], before, n * d, after))
        x = b.crop(x, [(0, 0), (0, 0), (0, d - 1), (0, 0)])
        x = b.reshape(x, (*shape[:ax], n * d - d + 1, *shape[ax + 1 :]))
    return x


def _tfl_grouped(
    ctx: Any, x: int, cin: int, geo: Geometry, groups: int, k: np.ndarray, bias: Any
) -> int:
    """Feature groups as SPLIT, one convolution per group, CONCATENATION."""
    b = ctx.b
    t = b.type_of(x)
    per_in, per_out = cin // groups, k.shape[-1] // groups
    piece = t.with_shape((*t.shape[:-1], per_in))
    options = b.options("Split", numSplits=groups)
    parts = b.op("SPLIT", [b.ints([t.rank - 1], "axis"), x], [piece] * groups, options=options)
    outs = []
    for g, part in enumerate(parts if groups > 1 else [parts]):
        sl = slice(g * per_out, (g + 1) * per_out)
        gb = None if bias is None else np.asarray(bias)[sl]
        outs.append(_tfl_conv(ctx, part, per_in, geo, 1, k[..., sl], gb))
    out = b.type_of(outs[0])
    options = b.options("Concatenation", axis=out.rank - 1)
    return b.op(
        "CONCATENATION", outs, out.with_shape((*out.shape[:-1], k.shape[-1])), options=options
    )


def _check_pairs(v: Any) -> Pads:
    pairs = int_pairs(v)
    if not pairs:
        raise ValueError(f"expected a non-empty list of (lo, hi) int pairs, got {v!r}")
    return pairs


def _check_axes(v: Any) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise TypeError(f"expected a non-empty list of axes, got {v!r}")
    return tuple(check_int(0)(a) for a in v)


def _dilated(size: int, d: int) -> int:
    return (size - 1) * d + 1 if size > 0 else 0


@register
class ConvGeneralDilated(Op):
    name = "conv_general_dilated"
    family = "conv"
    doc = (
        "lax.conv_general_dilated on (N, C, *spatial) data and an (O, C/groups, *k) kernel "
        "input: input dilation, (lo, hi) padding (negative crops), strides, kernel dilation."
    )
    arity = 2
    options: ClassVar[dict[str, Option]] = {
        "strides": Option(1, check_int_or_tuple(1), "window strides, an int or one per dim"),
        "padding": Option(check=_check_pairs, doc="(lo, hi) per spatial dim; negative crops"),
        "lhs_dilation": Option(1, check_int_or_tuple(1), "input dilation (interior zeros)"),
        "rhs_dilation": Option(1, check_int_or_tuple(1), "kernel dilation"),
        "feature_group_count": Option(1, check_int(1), "contiguous channel groups"),
    }

    def geometry(
        self, x: TensorType, w: TensorType, opts: dict[str, Any]
    ) -> tuple[tuple[int | None, ...], Geometry]:
        """The kernel's spatial dims (None if dynamic) and the per-dim options."""
        if x.rank < 3 or w.rank != x.rank:
            raise ShapeError(
                f"conv_general_dilated expects data (N, C, *spatial) and a kernel "
                f"(O, C/groups, *k) of the same rank >= 3, got {x.shape} and {w.shape}"
            )
        n = x.rank - 2
        if len(opts["padding"]) != n:
            raise ShapeError(
                f"padding has {len(opts['padding'])} pairs but the data has {n} spatial dims"
            )
        try:
            strides, ldil, rdil = (
                per_dim(opts[k], n, k) for k in ("strides", "lhs_dilation", "rhs_dilation")
            )
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
        kernel = w.shape[2:]
        geo = Geometry(tuple(k or 1 for k in kernel), strides, opts["padding"], ldil, rdil)
        return kernel, geo

    def infer(self, types, opts, node):
        x, w = types
        kernel, geo = self.geometry(x, w, opts)
        groups = opts["feature_group_count"]
        c, ci, o = x.shape[1], w.shape[1], w.shape[0]
        if c is not None and ci is not None and c != ci * groups:
            raise ShapeError(
                f"the data has {c} channels but the kernel reads {ci} per group x {groups} groups"
            )
        if o is not None and o % groups:
            raise ShapeError(f"{o} output channels are not divisible into {groups} groups")
        spatial = [
            None if k is None else geo.out_dim(i, d)
            for i, (k, d) in enumerate(zip(kernel, x.shape[2:], strict=True))
        ]
        dtype = float_or_f32(jnp_promote(x.dtype, w.dtype))
        return TensorType((x.shape[0], o, *spatial), dtype)

    def forward(self, ctx, inputs, params, opts):
        x, w = (np.asarray(v) for v in inputs)
        _, geo = self.geometry(
            TensorType(x.shape, str(x.dtype)), TensorType(w.shape, str(w.dtype)), opts
        )
        y = conv_nd(
            x,
            w,
            strides=geo.strides,
            padding=geo.padding,
            input_dilation=geo.input_dilation,
            kernel_dilation=geo.kernel_dilation,
            groups=opts["feature_group_count"],
        )
        dtype = float_or_f32(jnp_promote(str(x.dtype), str(w.dtype)))
        return y.astype(to_numpy_dtype(dtype))

    def onnx(self, ctx, inputs, opts):
        b = ctx.b
        (tx, tw), out = ctx.in_types, ctx.out_type
        x, w = (v if t.dtype == "f32" else b.cast(v, "f32") for v, t in zip(inputs, ctx.in_types))
        kernel, geo = self.geometry(tx, tw, opts)
        if any(d != 1 for d in geo.input_dilation):
            x = _onnx_dilate_any(b, x, tx.shape[1], geo.input_dilation)
        x, pads = _onnx_crop_pad(b, x, geo.padding, value_pad=False)
        attrs: dict[str, Any] = {}
        if None not in kernel:
            attrs["kernel_shape"] = list(kernel)
        y = b.op(
            "Conv",
            [x, w],
            strides=list(geo.strides),
            dilations=list(geo.kernel_dilation),
            pads=pads,
            group=opts["feature_group_count"],
            **attrs,
        )
        return y if out.dtype == "f32" else b.cast(y, out.dtype)

    def vjp(self, ctx, inputs, output, cot, opts):
        x, w = inputs
        _, geo = self.geometry(x.type, w.type, opts)
        dtype = cot.dtype
        dx, dw = conv_vjp(
            x.astype(dtype),
            w.astype(dtype),
            cot,
            geo,
            opts["feature_group_count"],
            want_x=is_float(x.type.dtype),
            want_w=is_float(w.type.dtype),
        )
        return [
            None if dx is None else dx.astype(x.dtype),
            None if dw is None else dw.astype(w.dtype),
        ]

    cases: ClassVar[list[Case]] = [
        Case(
            "conv1d_valid",
            lambda x, w: make_node("conv_general_dilated", [x, w], {"padding": [(0, 0)]}),
            [TensorType((None, 3, 7)), TensorType((4, 3, 3))],
        ),
        Case(
            "conv2d_everything",
            lambda x, w: make_node(
                "conv_general_dilated",
                [x, w],
                {
                    "strides": (2, 1),
                    "padding": [(2, -1), (-1, 3)],
                    "lhs_dilation": (1, 2),
                    "rhs_dilation": (2, 1),
                    "feature_group_count": 2,
                },
            ),
            [TensorType((None, 4, 6, 4)), TensorType((6, 2, 2, 3))],
        ),
        Case(
            "conv3d_strided_f64",
            lambda x, w: make_node(
                "conv_general_dilated",
                [x, w],
                {"strides": 2, "padding": [(1, 1), (0, 1), (1, 0)], "rhs_dilation": (1, 1, 2)},
            ),
            [TensorType((None, 2, 4, 3, 5), "f64"), TensorType((3, 2, 2, 2, 2))],
        ),
        Case(
            "conv1d_dynamic_length_input_dilation",
            lambda x, w: make_node(
                "conv_general_dilated",
                [x, w],
                {"strides": 2, "padding": [(1, 2)], "lhs_dilation": 2, "feature_group_count": 3},
            ),
            [TensorType((None, 3, None)), TensorType((3, 1, 3))],
        ),
    ]


def conv_general(x: Any, w: Any, **opts: Any) -> Any:
    """conv_general_dilated on tensors (recorded) or arrays (computed)."""
    return apply("conv_general_dilated", [x, w], opts)


def _flip_spatial(w: Any) -> Any:
    return w[(slice(None), slice(None), *(slice(None, None, -1),) * (w.ndim - 2))]


def _swap01(t: Any) -> Any:
    return anp.transpose(t, (1, 0, *range(2, t.ndim)))


def conv_vjp(
    x: Any,
    w: Any,
    cot: Any,
    geo: Geometry,
    groups: int,
    *,
    want_x: bool = True,
    want_w: bool = True,
) -> tuple[Any, Any]:
    """Cotangents of y = conv_general_dilated(x, w, geo, groups) for the output's `cot`.

    All three are channels-first tensors of one float dtype. The data cotangent is
    `conv_data_grad` (a ConvTranspose) for static spatial dims, non-negative padding and
    no input dilation; otherwise a conv of `cot` (dilated by the strides) with the
    flipped, group-transposed kernel, where a dynamic spatial dim leaves the uncovered
    tail of the padded input ((padded - k_eff) mod stride elements) unknown, generous
    padding is used and the result is cut to size by `fit_to_like`. The kernel
    cotangent is `conv_kernel_grad`.
    """
    n = x.ndim - 2
    kernel = w.shape[2:]
    if None in kernel or w.shape[0] is None:
        raise ShapeError(
            "the gradient of a convolution needs static kernel spatial dims and output "
            f"channels, got a kernel {w.shape}"
        )
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, geo.kernel_dilation, strict=True)]
    tails: list[int | None] = []
    for i, size in enumerate(x.shape[2:]):
        if geo.strides[i] == 1:
            tails.append(0)
        elif size is None:
            tails.append(None)
        else:
            lo, hi = geo.padding[i]
            padded = _dilated(size, geo.input_dilation[i]) + lo + hi
            tails.append((padded - k_eff[i]) % geo.strides[i])
    dx = dw = None
    transposed = (
        None not in x.shape[2:]
        and all(lo >= 0 and hi >= 0 for lo, hi in geo.padding)
        and all(d == 1 for d in geo.input_dilation)
    )
    if want_x and transposed:
        dx = apply(
            "conv_data_grad",
            [cot, w],
            {
                "input_spatial": tuple(x.shape[2:]),
                "strides": geo.strides,
                "padding": [tuple(p) for p in geo.padding],
                "rhs_dilation": geo.kernel_dilation,
                "feature_group_count": groups,
            },
        )
    elif want_x:
        # (G*og, cg, k) -> (G*cg, og, k); cg may be dynamic (a kernel made from data)
        og = w.shape[0] // groups
        wt = anp.reshape(w, (groups, og, -1, *kernel))
        wt = anp.transpose(wt, (0, 2, 1, *range(3, n + 3)))
        wt = _flip_spatial(anp.reshape(wt, (-1, og, *kernel)))
        pads = tuple(
            (e - 1 - lo, e - 1 - hi + (s - 1 if t is None else t))
            for e, (lo, hi), s, t in zip(k_eff, geo.padding, geo.strides, tails, strict=True)
        )
        dx = conv_general(
            cot,
            wt,
            strides=geo.input_dilation,
            padding=pads,
            lhs_dilation=geo.strides,
            rhs_dilation=geo.kernel_dilation,
            feature_group_count=groups,
        )
        dynamic = [2 + i for i, t in enumerate(tails) if t is None]
        if dynamic:
            dx = fit_to_like(dx, x, dynamic)
    if want_w:
        dw = conv_kernel_grad(x, cot, geo, groups, "first")
    return dx, dw


@register
class ConvKernelGrad(Op):
    name = "conv_kernel_grad"
    family = "conv"
    doc = (
        "A convolution's kernel cotangent from its data x and output cotangent: per kernel "
        "tap, the sum over batch and output positions of x's shifted window times the "
        "cotangent; in the layer's kernel layout (HWIO channels last, OIHW channels first)."
    )
    arity = 2
    options: ClassVar[dict[str, Option]] = {
        "kernel_size": Option(check=check_int_or_tuple(1), doc="kernel size, an int or per dim"),
        "strides": Option(1, check_int_or_tuple(1), "window strides, an int or one per dim"),
        "padding": Option(check=_check_pairs, doc="(lo, hi) per spatial dim; negative crops"),
        "lhs_dilation": Option(1, check_int_or_tuple(1), "input dilation (interior zeros)"),
        "rhs_dilation": Option(1, check_int_or_tuple(1), "kernel dilation"),
        "feature_group_count": Option(1, check_int(1), "contiguous channel groups"),
        "channels": Option("first", check_channels, "channel axis of x and the cotangent"),
    }

    def geometry(self, rank: int, opts: dict[str, Any]) -> Geometry:
        n = rank - 2
        if len(opts["padding"]) != n:
            raise ShapeError(
                f"padding has {len(opts['padding'])} pairs but the data has {n} spatial dims"
            )
        try:
            kernel, strides, ldil, rdil = (
                per_dim(opts[k], n, k)
                for k in ("kernel_size", "strides", "lhs_dilation", "rhs_dilation")
            )
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
        return Geometry(kernel, strides, opts["padding"], ldil, rdil)

    def infer(self, types, opts, node):
        x, g = types
        if x.rank < 3 or g.rank != x.rank:
            raise ShapeError(
                f"conv_kernel_grad expects data and an output cotangent of the same rank "
                f">= 3, got {x.shape} and {g.shape}"
            )
        geo = self.geometry(x.rank, opts)
        ch, groups = opts["channels"], opts["feature_group_count"]
        c, o = x.shape[channel_axis(x.rank, ch)], g.shape[channel_axis(g.rank, ch)]
        for what, v in (("data channels", c), ("cotangent channels", o)):
            if v is not None and v % groups:
                raise ShapeError(f"{v} {what} are not divisible into {groups} groups")
        want = [geo.out_dim(i, d) for i, d in enumerate(_spatial_of(x, ch))]
        have = _spatial_of(g, ch)
        if any(a is not None and b is not None and a != b for a, b in zip(want, have)):
            raise ShapeError(
                f"conv_kernel_grad: a cotangent with spatial dims {have} does not match the "
                f"convolution's output {tuple(want)} for data {x.shape}"
            )
        dtype = float_or_f32(jnp_promote(x.dtype, g.dtype))
        cg = None if c is None else c // groups
        return TensorType(_kernel_shape(ch, geo.kernel, cg, o), dtype)

    def forward(self, ctx, inputs, params, opts):
        x, g = (np.asarray(v) for v in inputs)
        geo = self.geometry(x.ndim, opts)
        ch, groups = opts["channels"], opts["feature_group_count"]
        dtype = float_or_f32(jnp_promote(str(x.dtype), str(g.dtype)))
        xf = _dilate_pad(_to_first(x.astype(np.float64), ch), geo.input_dilation, geo.padding)
        gf = _to_first(g.astype(np.float64), ch)
        (batch, chans), (o_total, *out) = xf.shape[:2], gf.shape[1:]
        cg, og = chans // groups, o_total // groups
        xg = xf.reshape(batch, groups, cg, *xf.shape[2:])
        gg = gf.reshape(batch, groups, og, -1)
        dw = np.zeros((groups, og, cg, *geo.kernel))
        for kidx in np.ndindex(*geo.kernel):
            window = tuple(
                slice(k * d, k * d + (m - 1) * s + 1, s)
                for k, d, m, s in zip(kidx, geo.kernel_dilation, out, geo.strides, strict=True)
            )
            patch = xg[(slice(None), slice(None), slice(None), *window)]
            flat = patch.reshape(batch, groups, cg, -1)
            dw[(..., *kidx)] = np.einsum("ngcp,ngop->goc", flat, gg)
        dw = dw.reshape(o_total, cg, *geo.kernel)
        if ch == "last":
            dw = np.transpose(dw, (*range(2, dw.ndim), 1, 0))
        return dw.astype(to_numpy_dtype(dtype))

    def onnx(self, ctx, inputs, opts):
        """On channels-last f32 data, per feature group, the faster of two forms on
        onnxruntime (bench/conv_grad.py): for up to 9 kernel taps im2col (one strided
        Slice per tap of the padded x, concatenated on the channel axis and flattened to
        (N*out, taps*C), one Gemm(transA) with the cotangent as (N*out, O): the HWIO
        kernel as it is); for larger kernels one Conv with the batch as channels.
        Channels-first values are transposed to last first."""
        b, (tx, tg) = ctx.b, ctx.in_types
        n = tx.rank - 2
        geo = self.geometry(tx.rank, opts)
        ch, groups = opts["channels"], opts["feature_group_count"]
        x, g = (v if t.dtype == "f32" else b.cast(v, "f32") for v, t in zip(inputs, ctx.in_types))
        c = tx.shape[channel_axis(tx.rank, ch)]
        o = tg.shape[channel_axis(tg.rank, ch)]
        if ch == "first":
            perm = [0, *range(2, n + 2), 1]
            x, g = b.op("Transpose", [x], perm=perm), b.op("Transpose", [g], perm=perm)
        if any(d != 1 for d in geo.input_dilation):
            x = _onnx_to_first(b, x, tx.rank, "last")
            x = _onnx_dilate_any(b, x, c, geo.input_dilation)
            x = _onnx_from_first(b, x, tx.rank, "last")
        x = _onnx_pad_spatial_last(b, x, geo.padding)
        if groups > 1 and (c is None or o is None):
            raise ShapeError(
                f"the kernel gradient of a {groups}-group convolution needs static channel "
                f"counts, got data {tx.shape} and a cotangent {tg.shape}"
            )
        form = _onnx_im2col_gemm if np.prod(geo.kernel) <= _IM2COL_TAPS else _onnx_batch_conv
        blocks = []
        for i in range(groups):
            xi, gi = x, g
            if groups > 1:
                cg, og = c // groups, o // groups
                xi = b.op("Slice", [x, b.ints([i * cg]), b.ints([(i + 1) * cg]), b.ints([-1])])
                gi = b.op("Slice", [g, b.ints([i * og]), b.ints([(i + 1) * og]), b.ints([-1])])
            blocks.append(form(b, xi, gi, geo))
        dw = blocks[0] if groups == 1 else b.op("Concat", blocks, axis=1)
        out_ch = b.ints([o]) if o is not None else b.op("Shape", [g], start=-1)
        dw = b.op("Reshape", [dw, b.op("Concat", [b.ints([*geo.kernel, -1]), out_ch], axis=0)])
        if ch == "first":
            dw = b.op("Transpose", [dw], perm=[n + 1, n, *range(n)])
        out = ctx.out_type.dtype
        return dw if out == "f32" else b.cast(dw, out)

    def vjp(self, ctx, inputs, output, cot, opts):
        """The kernel gradient is bilinear in x and the cotangent g: <G, K(x, g)> equals
        <g, conv(x, G)>, so g's cotangent is conv(x, G) and x's is conv's data cotangent
        for kernel G and output cotangent g."""
        x, g = inputs
        geo = self.geometry(x.ndim, opts)
        ch, groups = opts["channels"], opts["feature_group_count"]
        dtype = cot.dtype
        xf, gf = _t_to_first(x.astype(dtype), ch), _t_to_first(g.astype(dtype), ch)
        kernel = _t_kernel_oihw(cot, ch)
        dx = None
        if is_float(x.type.dtype):
            dx, _ = conv_vjp(xf, kernel, gf, geo, groups, want_w=False)
            dx = _t_from_first(dx, ch).astype(x.dtype)
        dg = _t_from_first(_conv_geo(xf, kernel, geo, groups), ch).astype(g.dtype)
        return [dx, dg]

    # Positive inputs: the output sums hundreds of products in f32, and with signed
    # inputs cancellation alone would exceed the parity tolerance (rtol 1e-5).
    cases: ClassVar[list[Case]] = [
        Case(
            "2d_last_valid",
            lambda x, g: make_node(
                "conv_kernel_grad",
                [x, g],
                {"kernel_size": 3, "padding": [(0, 0), (0, 0)], "channels": "last"},
            ),
            [TensorType((None, 6, 5, 3)), TensorType((None, 4, 3, 4))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "2d_last_strides_crop_pad_dilation_groups",
            lambda x, g: make_node(
                "conv_kernel_grad",
                [x, g],
                {
                    "kernel_size": 2,
                    "strides": (2, 1),
                    "padding": [(1, -1), (0, 2)],
                    "rhs_dilation": (1, 2),
                    "feature_group_count": 2,
                    "channels": "last",
                },
            ),
            [TensorType((None, 7, 6, 4)), TensorType((None, 3, 6, 4))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "1d_first_input_dilation_strides",
            lambda x, g: make_node(
                "conv_kernel_grad",
                [x, g],
                {"kernel_size": 3, "strides": 2, "padding": [(1, 2)], "lhs_dilation": 2},
            ),
            [TensorType((None, 3, 5)), TensorType((None, 2, 5))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "3d_first_groups_f64",
            lambda x, g: make_node(
                "conv_kernel_grad",
                [x, g],
                {
                    "kernel_size": (2, 1, 2),
                    "padding": [(0, 0), (1, 0), (0, 1)],
                    "feature_group_count": 2,
                },
            ),
            [TensorType((None, 4, 3, 2, 3), "f64"), TensorType((None, 2, 2, 3, 3))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "2d_last_large_kernel_strides_tail_groups",
            lambda x, g: make_node(
                "conv_kernel_grad",
                [x, g],
                {
                    "kernel_size": (3, 4),
                    "strides": 2,
                    "padding": [(1, 0), (0, 1)],
                    "rhs_dilation": (2, 1),
                    "feature_group_count": 2,
                    "channels": "last",
                },
            ),
            [TensorType((None, 9, 8, 4)), TensorType((None, 3, 3, 6))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "1d_first_large_kernel_dynamic_length",
            lambda x, g: make_node(
                "conv_kernel_grad", [x, g], {"kernel_size": 10, "padding": [(4, 5)]}
            ),
            [TensorType((None, 2, None)), TensorType((None, 3, None))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "1d_last_dynamic_length",
            lambda x, g: make_node(
                "conv_kernel_grad",
                [x, g],
                {"kernel_size": 3, "padding": [(1, 1)], "channels": "last"},
            ),
            [TensorType((None, None, 2)), TensorType((None, None, 3))],
            float_range=(0.1, 1.0),
        ),
    ]


@register
class ConvDataGrad(Op):
    name = "conv_data_grad"
    family = "conv"
    doc = (
        "A convolution's data cotangent from its output cotangent (N, O, out...) and OIHW "
        "kernel: the transposed convolution back onto (N, C, *input_spatial), channels first."
    )
    arity = 2
    options: ClassVar[dict[str, Option]] = {
        "input_spatial": Option(check=_check_axes, doc="the data's spatial sizes"),
        "strides": Option(1, check_int_or_tuple(1), "the convolution's strides"),
        "padding": Option(check=_check_pairs, doc="(lo, hi) per spatial dim, non-negative"),
        "rhs_dilation": Option(1, check_int_or_tuple(1), "kernel dilation"),
        "feature_group_count": Option(1, check_int(1), "contiguous channel groups"),
    }

    def geometry(self, g: TensorType, w: TensorType, opts: dict[str, Any]) -> Geometry:
        n = len(opts["input_spatial"])
        if g.rank != n + 2 or w.rank != n + 2 or None in w.shape[2:]:
            raise ShapeError(
                f"conv_data_grad expects a cotangent (N, O, out...) and a kernel (O, C/groups, "
                f"k...) with static k, for {n} spatial dims, got {g.shape} and {w.shape}"
            )
        if len(opts["padding"]) != n or any(lo < 0 or hi < 0 for lo, hi in opts["padding"]):
            raise ShapeError(f"conv_data_grad needs {n} non-negative padding pairs")
        try:
            strides, rdil = (per_dim(opts[k], n, k) for k in ("strides", "rhs_dilation"))
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
        return Geometry(tuple(w.shape[2:]), strides, opts["padding"], (1,) * n, rdil)

    def infer(self, types, opts, node):
        g, w = types
        geo = self.geometry(g, w, opts)
        spatial = opts["input_spatial"]
        want = tuple(geo.out_dim(i, d) for i, d in enumerate(spatial))
        if any(a is not None and a != b for a, b in zip(g.shape[2:], want, strict=True)):
            raise ShapeError(
                f"conv_data_grad: a cotangent with spatial dims {g.shape[2:]} does not match "
                f"the convolution's output {want} for data of spatial size {spatial}"
            )
        groups = opts["feature_group_count"]
        c = None if w.shape[1] is None else w.shape[1] * groups
        dtype = float_or_f32(jnp_promote(g.dtype, w.dtype))
        return TensorType((g.shape[0], c, *spatial), dtype)

    def forward(self, ctx, inputs, params, opts):
        g, w = (np.asarray(v) for v in inputs)
        geo = self.geometry(TensorType(g.shape), TensorType(w.shape), opts)
        groups = opts["feature_group_count"]
        dtype = float_or_f32(jnp_promote(str(g.dtype), str(w.dtype)))
        (batch, o_total, *out), cg = g.shape, w.shape[1]
        og = o_total // groups
        padded = [s + lo + hi for s, (lo, hi) in zip(opts["input_spatial"], geo.padding)]
        acc = np.zeros((batch, groups, cg, *padded))
        gg = g.astype(np.float64).reshape(batch, groups, og, -1)
        wg = w.astype(np.float64).reshape(groups, og, cg, *geo.kernel)
        for kidx in np.ndindex(*geo.kernel):
            window = tuple(
                slice(k * d, k * d + (m - 1) * s + 1, s)
                for k, d, m, s in zip(kidx, geo.kernel_dilation, out, geo.strides, strict=True)
            )
            part = np.einsum("ngop,goc->ngcp", gg, wg[(..., *kidx)])
            acc[(slice(None), slice(None), slice(None), *window)] += part.reshape(
                batch, groups, cg, *out
            )
        inner = tuple(slice(lo, lo + s) for s, (lo, _) in zip(opts["input_spatial"], geo.padding))
        dx = acc[(slice(None), slice(None), slice(None), *inner)]
        return dx.reshape(batch, groups * cg, *opts["input_spatial"]).astype(to_numpy_dtype(dtype))

    def onnx(self, ctx, inputs, opts):
        """One ConvTranspose with the kernel as it is (a Conv's adjoint in ONNX), its
        output_padding the tail a stride leaves uncovered (bench/conv_grad.py: 0.2-0.8x
        the time of a Conv of the padded cotangent with the flipped kernel)."""
        b, (tg, tw) = ctx.b, ctx.in_types
        geo = self.geometry(tg, tw, opts)
        g, w = (v if t.dtype == "f32" else b.cast(v, "f32") for v, t in zip(inputs, ctx.in_types))
        tails = [
            (s + lo + hi - ((k - 1) * d + 1)) % st
            for s, (lo, hi), k, d, st in zip(
                opts["input_spatial"], geo.padding, geo.kernel, geo.kernel_dilation, geo.strides
            )
        ]
        y = b.op(
            "ConvTranspose",
            [g, w],
            kernel_shape=list(geo.kernel),
            strides=list(geo.strides),
            dilations=list(geo.kernel_dilation),
            pads=[lo for lo, _ in geo.padding] + [hi for _, hi in geo.padding],
            output_padding=tails,
            group=opts["feature_group_count"],
        )
        out = ctx.out_type.dtype
        return y if out == "f32" else b.cast(y, out)

    def vjp(self, ctx, inputs, output, cot, opts):
        """Bilinear in the output cotangent g and the kernel w: <D, T(g, w)> equals
        <g, conv(D, w)>, so g's cotangent is conv(D, w) and w's the kernel gradient of
        that conv for data D and output cotangent g."""
        g, w = inputs
        geo = self.geometry(g.type, w.type, opts)
        groups, dtype = opts["feature_group_count"], cot.dtype
        dg = _conv_geo(cot, w.astype(dtype), geo, groups).astype(g.dtype)
        dw = None
        if is_float(w.type.dtype):
            dw = conv_kernel_grad(cot, g.astype(dtype), geo, groups, "first").astype(w.dtype)
        return [dg, dw]

    cases: ClassVar[list[Case]] = [
        Case(
            "2d_valid",
            lambda g, w: make_node(
                "conv_data_grad", [g, w], {"input_spatial": (6, 5), "padding": [(0, 0), (0, 0)]}
            ),
            [TensorType((None, 4, 4, 3)), TensorType((4, 3, 3, 3))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "2d_strides_tail_pads_dilation_groups",
            lambda g, w: make_node(
                "conv_data_grad",
                [g, w],
                {
                    "input_spatial": (8, 6),
                    "strides": (2, 3),
                    "padding": [(1, 0), (2, 1)],
                    "rhs_dilation": (1, 2),
                    "feature_group_count": 2,
                },
            ),
            [TensorType((None, 4, 4, 2)), TensorType((4, 3, 2, 3))],
            float_range=(0.1, 1.0),
        ),
        Case(
            "1d_f64",
            lambda g, w: make_node(
                "conv_data_grad", [g, w], {"input_spatial": (5,), "padding": [(1, 1)]}
            ),
            [TensorType((None, 2, 5), "f64"), TensorType((2, 3, 3), "f64")],
            float_range=(0.1, 1.0),
        ),
    ]


def conv_kernel_grad(x: Any, cot: Any, geo: Geometry, groups: int, channels: str) -> Any:
    """The kernel cotangent of conv(x, w, geo, groups) for the output's `cot`, in the
    layer layout of `channels` (x and cot in that layout too)."""
    return apply(
        "conv_kernel_grad",
        [x, cot],
        {
            "kernel_size": geo.kernel,
            "strides": geo.strides,
            "padding": [tuple(p) for p in geo.padding],
            "lhs_dilation": geo.input_dilation,
            "rhs_dilation": geo.kernel_dilation,
            "feature_group_count": groups,
            "channels": channels,
        },
    )


def _onnx_pad_spatial_last(b: Any, x: str, pads: Pads) -> str:
    """(lo, hi) pads on the spatial axes 1..n of a channels-last value: Slice for the
    negative (cropping) part, a zero Pad for the rest."""
    crop = [(i, max(-lo, 0), max(-hi, 0)) for i, (lo, hi) in enumerate(pads) if lo < 0 or hi < 0]
    if crop:
        x = b.op(
            "Slice",
            [
                x,
                b.ints([lo for _, lo, _ in crop], "starts"),
                b.ints([-hi if hi else _INT64_MAX for _, _, hi in crop], "ends"),
                b.ints([1 + i for i, _, _ in crop], "axes"),
            ],
        )
    lo = [max(lo, 0) for lo, _ in pads]
    hi = [max(hi, 0) for _, hi in pads]
    if any(lo) or any(hi):
        x = b.op("Pad", [x, b.ints([0, *lo, 0, 0, *hi, 0], "pads")])
    return x


# Up to this many kernel taps the kernel gradient is an im2col Gemm, above a Conv
# (bench/conv_grad.py: im2col 0.5-0.9x the Conv's time for 3x3 kernels, 1.2-2x for 5x5).
_IM2COL_TAPS = 9


def _onnx_batch_conv(b: Any, x: str, g: str, geo: Geometry) -> str:
    """(taps*C, O) as one Conv of the padded x with the batch as channels, (C, N, ...),
    whose kernel is the cotangent (O, N, out...): strides and kernel dilation swap
    roles; a stride's uncovered tail makes the output larger than the kernel, sliced."""
    n = len(geo.kernel)
    first = [n + 1, 0, *range(1, n + 1)]
    y = b.op(
        "Conv",
        [b.op("Transpose", [x], perm=first), b.op("Transpose", [g], perm=first)],
        strides=list(geo.kernel_dilation),
        dilations=list(geo.strides),
    )  # (C, O, >= k...)
    axes = list(range(2, n + 2))
    y = b.op("Slice", [y, b.ints([0] * n), b.ints(geo.kernel, "kernel"), b.ints(axes, "axes")])
    y = b.op("Transpose", [y], perm=[*range(2, n + 2), 0, 1])  # (k..., C, O)
    return b.op(
        "Reshape", [y, b.op("Concat", [b.ints([-1]), b.op("Shape", [g], start=-1)], axis=0)]
    )


def _onnx_im2col_gemm(b: Any, x: str, g: str, geo: Geometry) -> str:
    """(taps*C, O) = patches(x)^T @ g for channels-last padded x and cotangent g. Each
    tap's Slice ends where the last window ends (counted from the padded end), so it
    holds exactly the output's positions, static or dynamic."""
    n = len(geo.kernel)
    taps = []
    for kidx in np.ndindex(*geo.kernel):
        starts, ends = [], []
        for k, d, size in zip(kidx, geo.kernel_dilation, geo.kernel, strict=True):
            rest = (size - 1 - k) * d
            starts.append(k * d)
            ends.append(-rest if rest else _INT64_MAX)
        taps.append(
            b.op(
                "Slice",
                [
                    x,
                    b.ints(starts, "starts"),
                    b.ints(ends, "ends"),
                    b.ints(range(1, n + 1), "axes"),
                    b.ints(geo.strides, "steps"),
                ],
            )
        )
    patches = taps[0] if len(taps) == 1 else b.op("Concat", taps, axis=-1)
    cols = b.op("Shape", [patches], start=-1)
    rows = b.op("Reshape", [patches, b.op("Concat", [b.ints([-1]), cols], axis=0)])
    cot = b.op("Reshape", [g, b.op("Concat", [b.ints([-1]), b.op("Shape", [g], start=-1)], axis=0)])
    return b.op("Gemm", [rows, cot], transA=1)


def _onnx_dilate_any(b: Any, x: str, channels: int | None, dilation: tuple[int, ...]) -> str:
    """Input dilation for a known or unknown channel count: with an unknown one, the
    channels fold into the batch for a single-channel ConvTranspose and unfold after."""
    if channels is not None:
        return _onnx_dilate(b, x, channels, dilation)
    n = len(dilation)
    folded = b.op("Reshape", [x, b.ints([-1, 1, *(0,) * n], "fold_channels")])
    y = _onnx_dilate(b, folded, 1, dilation)
    lead = b.op("Slice", [b.op("Shape", [x]), b.ints([0]), b.ints([2]), b.ints([0])])
    spatial = b.op("Slice", [b.op("Shape", [y]), b.ints([2]), b.ints([_INT64_MAX]), b.ints([0])])
    return b.op("Reshape", [y, b.op("Concat", [lead, spatial], axis=0)])


@register
class FitToLike(Op):
    name = "fit_to_like"
    family = "conv"
    doc = "Cut or zero-pad the end of each listed axis of the first input to the second's size."
    arity = 2
    options: ClassVar[dict[str, Option]] = {
        "axes": Option(check=_check_axes, doc="the axes to fit (the others are kept)")
    }

    def _axes(self, a: TensorType, like: TensorType, opts: dict[str, Any]) -> tuple[int, ...]:
        axes = opts["axes"]
        if any(ax >= min(a.rank, like.rank) for ax in axes):
            raise ShapeError(
                f"fit_to_like axes {axes} are out of range for shapes {a.shape} and {like.shape}"
            )
        return axes

    def infer(self, types, opts, node):
        a, like = types
        axes = self._axes(a, like, opts)
        return a.with_shape(tuple(like.shape[i] if i in axes else d for i, d in enumerate(a.shape)))

    def forward(self, ctx, inputs, params, opts):
        a, like = (np.asarray(v) for v in inputs)
        axes = opts["axes"]
        a = a[tuple(slice(0, like.shape[i]) if i in axes else slice(None) for i in range(a.ndim))]
        pad = [(0, like.shape[i] - a.shape[i] if i in axes else 0) for i in range(a.ndim)]
        return np.pad(a, pad)

    def onnx(self, ctx, inputs, opts):
        b, (a, like) = ctx.b, inputs
        rank, axes = ctx.in_types[0].rank, list(opts["axes"])
        idx = b.ints(axes, "axes")
        target = b.op("Gather", [b.op("Shape", [like]), idx], axis=0)
        have = b.op("Gather", [b.op("Shape", [a]), idx], axis=0)
        grow = b.op("Max", [b.op("Sub", [target, have]), b.ints([0] * len(axes))])
        his = [
            b.op("Slice", [grow, b.ints([axes.index(i)]), b.ints([axes.index(i) + 1])])
            if i in axes
            else b.ints([0])
            for i in range(rank)
        ]
        pads = b.op("Concat", [b.ints([0] * rank), *his], axis=0)
        padded = b.op("Pad", [a, pads])
        return b.op("Slice", [padded, b.ints([0] * len(axes)), target, idx])

    def vjp(self, ctx, inputs, output, cot, opts):
        return [fit_to_like(cot, inputs[0], opts["axes"]), None]

    cases: ClassVar[list[Case]] = [
        Case(
            "crop_and_pad",
            lambda a, like: make_node("fit_to_like", [a, like], {"axes": (1, 2)}),
            [TensorType((None, 5, 2, 3)), TensorType((None, 3, 4))],
        ),
        Case(
            "dynamic_target",
            lambda a, like: make_node("fit_to_like", [a, like], {"axes": (1,)}),
            [TensorType((None, 4, 2)), TensorType((None, None))],
        ),
    ]


def fit_to_like(a: Any, like: Any, axes: Any) -> Any:
    """`a` cut or zero-padded at the end of `axes` to `like`'s sizes there."""
    return apply("fit_to_like", [a, like], {"axes": tuple(axes)})


def _conv_geo(x: Any, w: Any, geo: Geometry, groups: int) -> Any:
    """One convolution pass of a layer as a conv_general_dilated node (channels first)."""
    return conv_general(
        x,
        w,
        strides=geo.strides,
        padding=geo.padding,
        lhs_dilation=geo.input_dilation,
        rhs_dilation=geo.kernel_dilation,
        feature_group_count=groups,
    )


def _t_to_first(x: Any, channels: str) -> Any:
    if channels == "first":
        return x
    return anp.transpose(x, (0, x.ndim - 1, *range(1, x.ndim - 1)))


def _t_from_first(y: Any, channels: str) -> Any:
    if channels == "first":
        return y
    return anp.transpose(y, (0, *range(2, y.ndim), 1))


def _t_kernel_oihw(k: Any, channels: str) -> Any:
    """A layer kernel (HWIO for channels last) as an OIHW tensor."""
    if channels == "first":
        return k
    n = k.ndim - 2
    return anp.transpose(k, (n + 1, n, *range(n)))


def _t_kernel_layer(k: Any, channels: str) -> Any:
    """An OIHW tensor in the layer's kernel layout (the inverse of `_t_kernel_oihw`)."""
    if channels == "first":
        return k
    n = k.ndim - 2
    return anp.transpose(k, (*range(2, n + 2), 1, 0))


def _bias_grad(cot: Any, channels: str) -> Any:
    """The sum of the output cotangent over every axis but the channel axis."""
    keep = channel_axis(cot.ndim, channels)
    return anp.sum(cot, axis=tuple(a for a in range(cot.ndim) if a != keep))


def _common_options(*, input_dilation: bool = True) -> dict[str, Option]:
    opts = {
        "kernel_size": Option(
            1, check_int_or_tuple(1), "kernel size, an int or one per spatial dim"
        ),
        "strides": Option(1, check_int_or_tuple(1), "stride, an int or one per spatial dim"),
        "padding": Option("valid", check_padding, "'valid', 'same' or [(lo, hi), ...]"),
    }
    if input_dilation:
        opts["input_dilation"] = Option(1, check_int_or_tuple(1), "input dilation (interior zeros)")
    opts.update(
        {
            "kernel_dilation": Option(1, check_int_or_tuple(1), "kernel dilation"),
            "channels": Option("last", check_channels, "channel axis: 'last' or 'first'"),
            "kernel_initializer": Option(
                "glorot_uniform", check_initializer, "initializer of kernels"
            ),
            "bias_initializer": Option("zeros", check_initializer, "initializer of biases"),
            "use_bias": Option(True, check_bool, "whether to add biases"),
        }
    )
    return opts


class _SingleConv(Op):
    """Shared rules of conv, conv_transpose and depthwise_conv: one pass, one kernel."""

    family = "conv"
    transpose = False

    def _out_channels(self, opts: dict[str, Any], in_channels: int) -> int:
        return opts["units"]

    def _groups(self, opts: dict[str, Any], in_channels: int) -> int:
        return 1

    def _resolve(self, t: TensorType, opts: dict[str, Any]) -> tuple[Geometry, int, int, int]:
        _check_rank(t, None, self.name)
        n = t.rank - 2
        kernel = _per_dim(opts, "kernel_size", n)
        geo = _geometry(opts, kernel, self.transpose)
        cin = _in_channels(t, opts["channels"])
        groups = self._groups(opts, cin)
        if cin % groups:
            raise ShapeError(
                f"the input's {cin} channels are not divisible by feature_group_size {groups}"
            )
        return geo, cin, groups, self._out_channels(opts, cin)

    def params(self, types, opts, mode, node):
        geo, cin, groups, cout = self._resolve(types[0], opts)
        shape = _kernel_shape(opts["channels"], geo.kernel, cin // groups, cout)
        specs = [ParamSpec(("kernel",), shape, opts["kernel_initializer"])]
        if opts["use_bias"]:
            specs.append(ParamSpec(("bias",), (cout,), opts["bias_initializer"]))
        return specs

    def infer(self, types, opts, node):
        (t,) = types
        geo, _, _, cout = self._resolve(t, opts)
        spatial = [geo.out_dim(i, d) for i, d in enumerate(_spatial_of(t, opts["channels"]))]
        return _out_type(t, opts["channels"], spatial, cout)

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        geo, _, groups, _ = self._resolve(TensorType(x.shape, str(x.dtype)), opts)
        ch = opts["channels"]
        y = _apply(
            ctx,
            _to_first(x, ch),
            params,
            geo,
            ch,
            groups,
            "kernel",
            "bias" if opts["use_bias"] else None,
        )
        return _from_first(y, ch).astype(with_f32_params_np(x.dtype))

    def onnx(self, ctx, inputs, opts):
        geo, cin, groups, _ = self._resolve(ctx.in_types[0], opts)
        ch, n = opts["channels"], len(geo.kernel)
        x = _onnx_input(ctx, inputs[0], ch)
        kernel = _onnx_kernel(ctx, "kernel", ch, n, transpose=self.transpose)
        bias = ctx.param("bias") if opts["use_bias"] else None
        if self.transpose:
            y = _onnx_conv_transpose(ctx, x, geo, kernel, bias)
        else:
            y = _onnx_conv(ctx, x, cin, geo, groups, kernel, bias)
        return _onnx_output(ctx, y, ch)

    def tflite(self, ctx, inputs, opts):
        geo, cin, groups, _ = self._resolve(ctx.in_types[0], opts)
        ch = opts["channels"]
        x = _tfl_to_last(ctx, inputs[0], ch)
        bias = ctx.value("bias") if opts["use_bias"] else None
        y = _tfl_conv(ctx, x, cin, geo, groups, _tfl_kernel_hwio(ctx, "kernel", ch), bias)
        return _tfl_from_last(ctx, y, ch)

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        geo, _, groups, _ = self._resolve(ctx.in_types[0], opts)
        ch = opts["channels"]
        if ctx.wants_param("kernel"):
            # in the layer's own layout: no transposes of the data or the cotangent
            dw = conv_kernel_grad(x.astype(cot.dtype), cot, geo, groups, ch)
            ctx.add_param_grad("kernel", dw)
        if opts["use_bias"]:
            ctx.add_param_grad("bias", _bias_grad(cot, ch))
        if not is_float(x.type.dtype):
            return [None]
        w = _t_kernel_oihw(ctx.param("kernel").astype(cot.dtype), ch)
        dx, _ = conv_vjp(
            _t_to_first(x.astype(cot.dtype), ch), w, _t_to_first(cot, ch), geo, groups, want_w=False
        )
        return [_t_from_first(dx, ch).astype(x.dtype)]


@register
class Conv(_SingleConv):
    name = "conv"
    doc = "N-D convolution (cross-correlation) with strides, padding, dilations and feature groups."
    options: ClassVar[dict[str, Option]] = {
        "units": Option(check=check_int(1), doc="number of output channels"),
        **_common_options(),
        "feature_group_size": Option(1, check_int(1), "number of feature groups"),
    }

    def check_options(self, opts, layer):
        if opts["units"] % opts["feature_group_size"]:
            raise OptionError(
                f"{layer}: units {opts['units']} must be divisible by feature_group_size "
                f"{opts['feature_group_size']}"
            )
        return opts

    def _groups(self, opts, in_channels):
        return opts["feature_group_size"]

    cases: ClassVar[list[Case]] = [
        Case("conv1d_valid", lambda x: conv(x, 4, kernel_size=3), [TensorType((None, 8, 3))]),
        Case(
            "conv1d_first_strides_dilations",
            lambda x: conv(
                x,
                2,
                kernel_size=2,
                strides=2,
                input_dilation=2,
                kernel_dilation=2,
                channels="first",
            ),
            [TensorType((None, 3, 7))],
        ),
        Case(
            "conv2d_same",
            lambda x: conv(x, 3, kernel_size=3, padding="same"),
            [TensorType((None, 6, 6, 2))],
        ),
        Case(
            "conv2d_groups_strides_relu",
            lambda x: conv(
                x, 4, kernel_size=(3, 2), strides=(2, 1), feature_group_size=2, activation="relu"
            ),
            [TensorType((None, 7, 6, 4))],
        ),
        Case(
            "conv2d_first_explicit_no_bias",
            lambda x: conv(
                x, 3, kernel_size=3, padding=[(1, 0), (2, -1)], channels="first", use_bias=False
            ),
            [TensorType((None, 2, 5, 6))],
        ),
        Case(
            "conv3d_same_strides",
            lambda x: conv(x, 2, kernel_size=(2, 3, 1), strides=2, padding="same"),
            [TensorType((None, 4, 5, 3, 2))],
        ),
        Case(
            "conv3d_first",
            lambda x: conv(x, 2, kernel_size=2, channels="first"),
            [TensorType((None, 3, 3, 4, 3))],
        ),
        Case(
            "conv2d_input_dilation_crop_pad",
            lambda x: conv(
                x,
                3,
                kernel_size=(2, 3),
                input_dilation=(2, 3),
                kernel_dilation=(1, 2),
                padding=[(-1, 2), (1, -2)],
            ),
            [TensorType((None, 5, 6, 2))],
        ),
        Case(
            "conv3d_first_groups_input_dilation_strides",
            lambda x: conv(
                x,
                4,
                kernel_size=2,
                input_dilation=(1, 2, 1),
                strides=(1, 2, 2),
                feature_group_size=2,
                channels="first",
            ),
            [TensorType((None, 2, 3, 3, 4))],
        ),
        Case(
            "conv1d_crop_both_sides",
            lambda x: conv(x, 2, kernel_size=2, padding=[(-1, -2)]),
            [TensorType((None, 7, 2))],
        ),
        Case(
            "conv1d_dynamic_length_same_strides",
            lambda x: conv(x, 2, kernel_size=3, strides=2, padding="same"),
            [TensorType((None, None, 3))],
        ),
        Case(
            "conv1d_int_input",
            lambda x: conv(x, 2, kernel_size=2),
            [TensorType((None, 5, 2), "s32")],
            int_inputs={0: 5},
        ),
        Case(
            "conv2d_f64_input_first",
            lambda x: conv(x, 2, kernel_size=2, padding="same", channels="first"),
            [TensorType((None, 2, 4, 3), "f64")],
        ),
    ]


@register
class ConvTranspose(_SingleConv):
    name = "conv_transpose"
    doc = "Transposed conv: a stride-1 conv of the unflipped kernel over the stride-dilated input."
    options: ClassVar[dict[str, Option]] = {
        "units": Option(check=check_int(1), doc="number of output channels"),
        **_common_options(input_dilation=False),
    }
    transpose = True

    cases: ClassVar[list[Case]] = [
        Case(
            "conv_transpose1d_same_s2",
            lambda x: conv_transpose(x, 4, kernel_size=3, strides=2, padding="same"),
            [TensorType((None, 5, 3))],
        ),
        Case(
            "conv_transpose2d_valid_s2_first",
            lambda x: conv_transpose(x, 3, kernel_size=3, strides=2, channels="first"),
            [TensorType((None, 2, 4, 4))],
        ),
        Case(
            "conv_transpose2d_explicit_dilated_no_bias",
            lambda x: conv_transpose(
                x,
                3,
                kernel_size=2,
                strides=(2, 1),
                kernel_dilation=2,
                padding=[(1, 1), (0, 2)],
                use_bias=False,
            ),
            [TensorType((None, 4, 3, 2))],
        ),
        Case(
            "conv_transpose3d_k2_s2",
            lambda x: conv_transpose(x, 2, kernel_size=2, strides=2),
            [TensorType((None, 2, 3, 2, 2))],
        ),
        Case(
            "conv_transpose1d_same_k_less_than_s",
            lambda x: conv_transpose(x, 2, kernel_size=2, strides=3, padding="same"),
            [TensorType((None, 4, 3))],
        ),
        Case(
            "conv_transpose2d_valid_k1_s3_first",
            lambda x: conv_transpose(x, 2, kernel_size=1, strides=3, channels="first"),
            [TensorType((None, 2, 3, 2))],
        ),
        Case(
            "conv_transpose2d_wide_and_negative_padding",
            lambda x: conv_transpose(
                x,
                3,
                kernel_size=(2, 3),
                strides=(2, 1),
                kernel_dilation=(1, 2),
                padding=[(4, -1), (-2, 6)],
            ),
            [TensorType((None, 3, 4, 2))],
        ),
        Case(
            "conv_transpose1d_dynamic_length",
            lambda x: conv_transpose(x, 2, kernel_size=3, strides=2),
            [TensorType((None, None, 2))],
        ),
        Case(
            "conv_transpose3d_first_dilated_same",
            lambda x: conv_transpose(
                x,
                2,
                kernel_size=(2, 3, 1),
                strides=(1, 2, 3),
                kernel_dilation=(2, 1, 1),
                padding="same",
                channels="first",
            ),
            [TensorType((None, 2, 3, 2, 2))],
        ),
    ]


@register
class DepthwiseConv(_SingleConv):
    name = "depthwise_conv"
    doc = (
        "Depthwise convolution: groups = input channels; output channel c*mult + m reads channel c."
    )
    options: ClassVar[dict[str, Option]] = {
        "channel_multiplier": Option(check=check_int(1), doc="output channels per input channel"),
        **_common_options(),
    }

    def _out_channels(self, opts, in_channels):
        return in_channels * opts["channel_multiplier"]

    def _groups(self, opts, in_channels):
        return in_channels

    cases: ClassVar[list[Case]] = [
        Case(
            "depthwise1d", lambda x: depthwise_conv(x, 2, kernel_size=3), [TensorType((None, 7, 3))]
        ),
        Case(
            "depthwise2d_first",
            lambda x: depthwise_conv(x, 2, kernel_size=3, channels="first"),
            [TensorType((None, 3, 6, 6))],
        ),
        Case(
            "depthwise2d_same_strides_dilated_no_bias",
            lambda x: depthwise_conv(
                x, 1, kernel_size=3, strides=2, padding="same", kernel_dilation=2, use_bias=False
            ),
            [TensorType((None, 7, 6, 2))],
        ),
        Case(
            "depthwise3d",
            lambda x: depthwise_conv(x, 3, kernel_size=(2, 1, 2)),
            [TensorType((None, 3, 2, 4, 2))],
        ),
        Case(
            "depthwise1d_first_input_dilation_explicit",
            lambda x: depthwise_conv(
                x, 2, kernel_size=3, input_dilation=2, padding=[(2, -1)], channels="first"
            ),
            [TensorType((None, 3, 5))],
        ),
    ]


class _SeparableConv(Op):
    """Spatially separable conv: one depthwise pass per spatial axis with a 1-D kernel."""

    family = "conv"
    spatial_dims: int = 2
    options: ClassVar[dict[str, Option]] = {
        "channel_multiplier": Option(check=check_int(1), doc="output channels per input channel"),
        **_common_options(),
    }

    def _passes(self, t: TensorType, opts: dict[str, Any]) -> tuple[list[Geometry], int]:
        _check_rank(t, self.spatial_dims + 2, self.name)
        n = self.spatial_dims
        kernel = _per_dim(opts, "kernel_size", n)
        geos = [
            _geometry(opts, tuple(kernel[i] if j == i else 1 for j in range(n))) for i in range(n)
        ]
        return geos, _in_channels(t, opts["channels"])

    def params(self, types, opts, mode, node):
        geos, cin = self._passes(types[0], opts)
        cout = cin * opts["channel_multiplier"]
        specs = []
        for i, geo in enumerate(geos, start=1):
            shape = _kernel_shape(opts["channels"], geo.kernel, 1, cout)
            specs.append(ParamSpec((f"kernel_{i}",), shape, opts["kernel_initializer"]))
            if opts["use_bias"]:
                specs.append(ParamSpec((f"bias_{i}",), (cout,), opts["bias_initializer"]))
        return specs

    def infer(self, types, opts, node):
        (t,) = types
        geos, cin = self._passes(t, opts)
        spatial = list(_spatial_of(t, opts["channels"]))
        for geo in geos:
            spatial = [geo.out_dim(i, d) for i, d in enumerate(spatial)]
        return _out_type(t, opts["channels"], spatial, cin * opts["channel_multiplier"])

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        geos, cin = self._passes(TensorType(x.shape, str(x.dtype)), opts)
        ch = opts["channels"]
        y = _to_first(x, ch)
        for i, geo in enumerate(geos, start=1):
            groups = cin if i == 1 else cin * opts["channel_multiplier"]
            bias_key = f"bias_{i}" if opts["use_bias"] else None
            y = _apply(ctx, y, params, geo, ch, groups, f"kernel_{i}", bias_key)
        return _from_first(y, ch).astype(with_f32_params_np(x.dtype))

    def onnx(self, ctx, inputs, opts):
        geos, cin = self._passes(ctx.in_types[0], opts)
        ch, n = opts["channels"], self.spatial_dims
        cout = cin * opts["channel_multiplier"]
        y = _onnx_input(ctx, inputs[0], ch)
        for i, geo in enumerate(geos, start=1):
            c = cin if i == 1 else cout
            kernel = _onnx_kernel(ctx, f"kernel_{i}", ch, n)
            bias = ctx.param(f"bias_{i}") if opts["use_bias"] else None
            y = _onnx_conv(ctx, y, c, geo, c, kernel, bias)
        return _onnx_output(ctx, y, ch)

    def tflite(self, ctx, inputs, opts):
        geos, cin = self._passes(ctx.in_types[0], opts)
        ch = opts["channels"]
        cout = cin * opts["channel_multiplier"]
        y = _tfl_to_last(ctx, inputs[0], ch)
        for i, geo in enumerate(geos, start=1):
            c = cin if i == 1 else cout
            bias = ctx.value(f"bias_{i}") if opts["use_bias"] else None
            y = _tfl_conv(ctx, y, c, geo, c, _tfl_kernel_hwio(ctx, f"kernel_{i}", ch), bias)
        return _tfl_from_last(ctx, y, ch)

    def vjp(self, ctx, inputs, output, cot, opts):
        """Recompute each pass's input, then pull the cotangent back pass by pass."""
        (x,) = inputs
        geos, cin = self._passes(ctx.in_types[0], opts)
        ch, dtype = opts["channels"], cot.dtype
        groups = [cin] + [cin * opts["channel_multiplier"]] * (len(geos) - 1)
        kernels = [
            _t_kernel_oihw(ctx.param(f"kernel_{i}").astype(dtype), ch)
            for i in range(1, len(geos) + 1)
        ]
        ys = [_t_to_first(x.astype(dtype), ch)]
        for i in range(1, len(geos)):
            y = _conv_geo(ys[-1], kernels[i - 1], geos[i - 1], groups[i - 1])
            if opts["use_bias"]:
                bias = ctx.param(f"bias_{i}").astype(dtype)
                y = y + anp.reshape(bias, (-1, *(1,) * (y.ndim - 2)))
            ys.append(y)
        g = _t_to_first(cot, ch)
        for i in reversed(range(len(geos))):
            if opts["use_bias"]:
                ctx.add_param_grad(f"bias_{i + 1}", _bias_grad(g, "first"))
            g, dw = conv_vjp(
                ys[i],
                kernels[i],
                g,
                geos[i],
                groups[i],
                want_x=i > 0 or is_float(x.type.dtype),
                want_w=ctx.wants_param(f"kernel_{i + 1}"),
            )
            if dw is not None:
                ctx.add_param_grad(f"kernel_{i + 1}", _t_kernel_layer(dw, ch))
        return [None if g is None else _t_from_first(g, ch).astype(x.dtype)]


@register
class SeparableConv2d(_SeparableConv):
    name = "separable_conv2d"
    doc = "Spatially separable 2-D conv: depthwise (k, 1) pass then depthwise (1, k) pass."
    spatial_dims = 2

    cases: ClassVar[list[Case]] = [
        Case("k3", lambda x: separable_conv2d(x, 2, kernel_size=3), [TensorType((None, 6, 6, 2))]),
        Case(
            "first_same_strides_no_bias",
            lambda x: separable_conv2d(
                x,
                1,
                kernel_size=(3, 2),
                strides=2,
                padding="same",
                channels="first",
                use_bias=False,
            ),
            [TensorType((None, 3, 7, 6))],
        ),
        Case(
            "input_dilation_explicit",
            lambda x: separable_conv2d(
                x, 2, kernel_size=3, input_dilation=2, padding=[(1, 0), (0, 1)]
            ),
            [TensorType((None, 4, 3, 2))],
        ),
    ]


@register
class SeparableConv3d(_SeparableConv):
    name = "separable_conv3d"
    doc = "Spatially separable 3-D conv: depthwise (k,1,1), (1,k,1) and (1,1,k) passes."
    spatial_dims = 3

    cases: ClassVar[list[Case]] = [
        Case(
            "k2", lambda x: separable_conv3d(x, 2, kernel_size=2), [TensorType((None, 4, 4, 3, 2))]
        ),
        Case(
            "first_same_dilated",
            lambda x: separable_conv3d(
                x, 1, kernel_size=(3, 1, 2), padding="same", kernel_dilation=2, channels="first"
            ),
            [TensorType((None, 2, 4, 3, 4))],
        ),
        Case(
            "strides_explicit_relu",
            lambda x: separable_conv3d(
                x,
                2,
                kernel_size=2,
                strides=(2, 1, 1),
                padding=[(1, 0), (0, 0), (0, 1)],
                activation="relu",
            ),
            [TensorType((None, 4, 3, 3, 2))],
        ),
    ]


def _layer(
    op: str, x: Axon, first: str, value: int, name: str | None, opts: dict[str, Any]
) -> Axon:
    act = opts.pop("activation", None)
    return apply_activation(make_node(op, [x], {first: value, **opts}, name=name), act)


@layer_api
def conv(x: Axon, units: int, *, name: str | None = None, **opts: Any) -> Axon:
    """N-D convolution with `units` output channels (options: kernel_size, strides, padding,
    input_dilation, kernel_dilation, feature_group_size, channels, use_bias, kernel_initializer,
    bias_initializer, activation)."""
    return _layer("conv", x, "units", units, name, opts)


@layer_api
def conv_transpose(x: Axon, units: int, *, name: str | None = None, **opts: Any) -> Axon:
    """Transposed convolution with `units` output channels (options as conv, without
    input_dilation and feature_group_size)."""
    return _layer("conv_transpose", x, "units", units, name, opts)


@layer_api
def depthwise_conv(
    x: Axon, channel_multiplier: int, *, name: str | None = None, **opts: Any
) -> Axon:
    """Depthwise convolution producing in_channels * channel_multiplier channels."""
    return _layer("depthwise_conv", x, "channel_multiplier", channel_multiplier, name, opts)


@layer_api
def separable_conv2d(
    x: Axon, channel_multiplier: int, *, name: str | None = None, **opts: Any
) -> Axon:
    """Spatially separable 2-D convolution (kernel_1/bias_1, kernel_2/bias_2)."""
    return _layer("separable_conv2d", x, "channel_multiplier", channel_multiplier, name, opts)


@layer_api
def separable_conv3d(
    x: Axon, channel_multiplier: int, *, name: str | None = None, **opts: Any
) -> Axon:
    """Spatially separable 3-D convolution (kernel_1..kernel_3, bias_1..bias_3)."""
    return _layer("separable_conv3d", x, "channel_multiplier", channel_multiplier, name, opts)
