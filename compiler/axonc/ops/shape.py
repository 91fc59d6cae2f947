"""Shape layers: flatten, reshape, transpose, pad and resize (Axon's "Layers: Shape").

Semantics follow Axon 0.8.1 (tests/fixtures/axon-golden/README.md, "Shape/graph ops"):
`reshape` takes the full new shape with the magic entries "batch" (the input's
batch dim, possibly dynamic) and "auto" (inferred, like -1); `transpose`'s
permutation includes the batch axis and None reverses every axis; `pad` pads the
spatial dims only; `resize` resamples the spatial dims with separable per-axis
weight matrices (the scheme of Axon.Layers.resize / jax.image.scale_and_translate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import TensorType, is_float, to_numpy_dtype
from ..errors import ShapeError
from ..ir import Axon
from ..registry import (
    Case,
    Op,
    Option,
    check_bool,
    check_choice,
    check_float,
    check_int_or_tuple,
    layer_api,
    register,
)
from ..shape_inference import make_node
from ..tracing import apply
from ._spatial import check_channels, int_pairs, spatial_axes


def _reshape_back(cot: Any, shape: tuple, keep_batch: bool) -> Any:
    """`cot` reshaped to an input's `shape`: its batch dim kept in place when it sits at
    axis 0 of both, at most one other dynamic dim inferred (-1)."""
    target = [
        None if d is None and i == 0 and keep_batch else -1 if d is None else d
        for i, d in enumerate(shape)
    ]
    if target.count(-1) > 1:
        raise ShapeError(
            f"the gradient cannot restore an input shape {_fmt(shape)} with more than one "
            "dynamic dim besides the batch; give the input static dims"
        )
    return anp.reshape(cot, tuple(target))


# ---------------------------------------------------------------------------
# flatten


@register
class Flatten(Op):
    name = "flatten"
    family = "shape"
    doc = "Flattens every axis but the batch axis into one: {b, d1, ..., dn} -> {b, d1*...*dn}."

    def infer(self, types, opts, node):
        (t,) = types
        if t.rank < 1:
            raise ShapeError("expected an input of rank >= 1 (a batch axis), got a scalar")
        rest = t.shape[1:]
        size = None if any(d is None for d in rest) else math.prod(rest)
        return t.with_shape((t.shape[0], size))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def onnx(self, ctx, inputs, opts):
        return ctx.b.op("Flatten", [inputs[0]], axis=1)

    def tflite(self, ctx, inputs, opts):
        if ctx.in_types[0].rank == 2:
            return inputs[0]
        if ctx.out_type.shape[0] is not None and None in ctx.in_types[0].shape:
            raise ctx.unsupported("a flatten whose batch is static but other dims are not")
        return ctx.b.reshape(inputs[0], ctx.out_type.shape)

    def vjp(self, ctx, inputs, output, cot, opts):
        if not is_float(ctx.in_types[0].dtype):
            return [None]
        return [_reshape_back(cot, ctx.in_types[0].shape, keep_batch=True)]

    cases: ClassVar[list[Case]] = [
        Case("rank3", lambda x: flatten(x), [TensorType((None, 3, 4))]),
        Case("rank4", lambda x: flatten(x), [TensorType((None, 2, 3, 2))]),
        Case("rank2_identity", lambda x: flatten(x), [TensorType((None, 5))]),
    ]


@layer_api
def flatten(x: Axon, *, name: str | None = None) -> Axon:
    """Flatten all but the batch axis, e.g. a conv feature map before a dense layer."""
    return make_node("flatten", [x], {}, name=name)


def _fc(b: Any, x: int, w: np.ndarray) -> int:
    """x . w over the last axis ({in, out} matrix w) as FULLY_CONNECTED."""
    t = b.type_of(x)
    weights = b.const(np.ascontiguousarray(w.T))
    options = b.options("FullyConnected", keepNumDims=True)
    return b.op(
        "FULLY_CONNECTED",
        [x, weights, -1],
        t.with_shape((*t.shape[:-1], w.shape[1])),
        options=options,
    )


# ---------------------------------------------------------------------------
# reshape


def _check_new_shape(v: Any) -> tuple[int | str, ...]:
    if not isinstance(v, (tuple, list)):
        raise TypeError(f"expected a tuple of ints, 'batch' and 'auto', got {v!r}")
    out: list[int | str] = []
    for d in v:
        if d in ("batch", "auto"):
            out.append(d)
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0:
            out.append(int(d))
        else:
            raise ValueError(
                f"expected a tuple of non-negative ints, 'batch' and 'auto', got {tuple(v)!r}"
            )
    if out.count("auto") > 1:
        raise ValueError(f"at most one 'auto' dimension is allowed, got {tuple(v)!r}")
    return tuple(out)


def _fill_auto(dims: list[Any], total: int, what: str) -> list[Any]:
    """Resolve an 'auto' entry of `dims` (ints otherwise) so their product is `total`."""
    known = math.prod(d for d in dims if d != "auto")
    if "auto" in dims:
        if known == 0 or total % known:
            raise ShapeError(
                f"cannot reshape {what} of {total} elements into {_fmt(dims)}: "
                f"{total} is not a multiple of {known}"
            )
        return [total // known if d == "auto" else d for d in dims]
    if known != total:
        raise ShapeError(
            f"cannot reshape {what} of {total} elements into {_fmt(dims)} ({known} elements); "
            "the sizes must match"
        )
    return dims


def _fmt(dims: Any) -> str:
    return "{" + ", ".join("?" if d is None else str(d) for d in dims) + "}"


@register
class Reshape(Op):
    name = "reshape"
    family = "shape"
    doc = "Reshapes to `new_shape` (batch axis included); 'batch' keeps the input's batch dim."
    options: ClassVar[dict[str, Option]] = {
        "new_shape": Option(
            check=_check_new_shape,
            doc="the full output shape; entries are ints, 'batch' (input dim 0) or 'auto' (-1)",
        )
    }

    def infer(self, types, opts, node):
        (t,) = types
        spec = list(opts["new_shape"])
        if "batch" in spec and t.rank == 0:
            raise ShapeError("'batch' needs an input with a batch axis, got a scalar")
        if all(d is not None for d in t.shape):
            dims = ["auto" if d == "auto" else t.shape[0] if d == "batch" else d for d in spec]
            return t.with_shape(tuple(_fill_auto(dims, math.prod(t.shape), f"an input {t!r}")))
        if spec.count("batch") == 1 and all(d is not None for d in t.shape[1:]):
            # The dynamic batch dim maps onto itself: check the remaining sizes only.
            i = spec.index("batch")
            rest = _fill_auto(
                spec[:i] + spec[i + 1 :],
                math.prod(t.shape[1:]),
                f"the non-batch axes {_fmt(t.shape[1:])}",
            )
            return t.with_shape((*rest[:i], t.shape[0], *rest[i:]))
        dims = [None if d == "auto" else t.shape[0] if d == "batch" else d for d in spec]
        return t.with_shape(tuple(dims))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        spec = opts["new_shape"]
        dims = ["auto" if d == "auto" else x.shape[0] if d == "batch" else d for d in spec]
        shape = _fill_auto(dims, x.size, f"an input of shape {_fmt(x.shape)}")
        return x.reshape(shape)

    def onnx(self, ctx, inputs, opts):
        b = ctx.b
        spec = opts["new_shape"]
        literal_zero = 0 in spec
        if not literal_zero and "batch" not in spec[1:]:
            # Reshape's 0 copies the input dim at that index: dim 0 is the batch.
            dims = [0 if d == "batch" else -1 if d == "auto" else d for d in spec]
            return b.op("Reshape", [inputs[0], b.ints(dims, "new_shape")])
        batch = b.op("Shape", [inputs[0]], start=0, end=1)
        pieces = [
            batch if d == "batch" else b.ints([-1 if d == "auto" else d], "dim") for d in spec
        ]
        shape = b.op("Concat", pieces, axis=0)
        return b.op("Reshape", [inputs[0], shape], allowzero=int(literal_zero))

    def tflite(self, ctx, inputs, opts):
        """RESHAPE with the batch written as -1 (its only unknown dim)."""
        if 0 in ctx.out_type.shape or 0 in ctx.in_types[0].shape:
            raise ctx.unsupported("zero-sized dims: LiteRT has no empty tensors")
        if sum(d is None for d in ctx.out_type.shape) > 1:
            raise ctx.unsupported(f"more than one dynamic dim in {ctx.out_type.shape}")
        return ctx.b.reshape(inputs[0], ctx.out_type.shape)

    def vjp(self, ctx, inputs, output, cot, opts):
        t = ctx.in_types[0]
        if not is_float(t.dtype):
            return [None]
        return [_reshape_back(cot, t.shape, keep_batch=opts["new_shape"][:1] == ("batch",))]

    cases: ClassVar[list[Case]] = [
        Case("batch_3x4", lambda x: reshape(x, ("batch", 3, 4)), [TensorType((None, 12))]),
        Case("batch_auto", lambda x: reshape(x, ("batch", "auto", 2)), [TensorType((None, 3, 4))]),
        Case("batch_last", lambda x: reshape(x, (2, 3, "batch")), [TensorType((None, 6))]),
        Case(
            "batch_middle_auto",
            lambda x: reshape(x, (2, "batch", "auto")),
            [TensorType((None, 2, 3))],
        ),
        Case("zero_sized_dim", lambda x: reshape(x, ("batch", 0, 3)), [TensorType((None, 0))]),
    ]


@layer_api
def reshape(x: Axon, new_shape: Any, *, name: str | None = None) -> Axon:
    """Reshape to `new_shape`, which includes the batch axis: e.g. ("batch", "auto", 2)."""
    return make_node("reshape", [x], {"new_shape": new_shape}, name=name)


# ---------------------------------------------------------------------------
# transpose


def _check_permutation(v: Any) -> tuple[int, ...] | None:
    if v is None:
        return None
    if not isinstance(v, (tuple, list)) or not all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in v
    ):
        raise TypeError(f"expected None or a list of axes, got {v!r}")
    return tuple(int(a) for a in v)


def _resolve_permutation(perm: tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    if perm is None:
        return tuple(reversed(range(rank)))
    axes = tuple(a + rank if a < 0 else a for a in perm)
    if sorted(axes) != list(range(rank)):
        raise ShapeError(
            f"expected a permutation of the {rank} axes 0..{rank - 1} (batch axis included), "
            f"got {list(perm)}"
        )
    return axes


@register
class Transpose(Op):
    name = "transpose"
    family = "shape"
    doc = "Permutes the axes, batch axis included; no permutation reverses every axis."
    options: ClassVar[dict[str, Option]] = {
        "permutation": Option(
            None, _check_permutation, "the new order of all axes (batch included); None reverses"
        )
    }

    def infer(self, types, opts, node):
        (t,) = types
        axes = _resolve_permutation(opts["permutation"], t.rank)
        return t.with_shape(tuple(t.shape[a] for a in axes))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        return np.transpose(x, _resolve_permutation(opts["permutation"], x.ndim))

    def onnx(self, ctx, inputs, opts):
        perm = _resolve_permutation(opts["permutation"], ctx.in_types[0].rank)
        return ctx.b.op("Transpose", [inputs[0]], perm=list(perm))

    def tflite(self, ctx, inputs, opts):
        perm = _resolve_permutation(opts["permutation"], ctx.in_types[0].rank)
        return ctx.b.transpose(inputs[0], [int(p) for p in perm])

    def vjp(self, ctx, inputs, output, cot, opts):
        if not is_float(ctx.in_types[0].dtype):
            return [None]
        perm = _resolve_permutation(opts["permutation"], ctx.in_types[0].rank)
        return [anp.transpose(cot, tuple(int(i) for i in np.argsort(perm)))]

    cases: ClassVar[list[Case]] = [
        Case("perm_021", lambda x: transpose(x, [0, 2, 1]), [TensorType((None, 3, 4))]),
        Case("reverse_all", lambda x: transpose(x), [TensorType((None, 3, 4))]),
        Case("perm_rank4", lambda x: transpose(x, [0, 3, 1, 2]), [TensorType((None, 2, 3, 4))]),
    ]


@layer_api
def transpose(x: Axon, permutation: list[int] | None = None, *, name: str | None = None) -> Axon:
    """Permute the axes (the permutation includes the batch axis; None reverses all axes)."""
    return make_node("transpose", [x], {"permutation": permutation}, name=name)


# ---------------------------------------------------------------------------
# pad


def _check_config(v: Any) -> tuple[tuple[int, int], ...]:
    err = f"expected a list of (lo, hi) integer pairs, one per spatial dim, got {v!r}"
    if not isinstance(v, (list, tuple)):
        raise TypeError(err)
    pairs = int_pairs(v)
    if pairs is None:
        raise ValueError(err)
    return pairs


@register
class Pad(Op):
    name = "pad"
    family = "shape"
    doc = "Pads the spatial dims with a constant; (lo, hi) per dim, negative values crop."
    options: ClassVar[dict[str, Option]] = {
        "config": Option(check=_check_config, doc="(lo, hi) padding for each spatial dim"),
        "value": Option(0.0, check_float(), "the fill value (cast to the input dtype)"),
        "channels": Option("last", check_channels, "'last' (NHWC) or 'first' (NCHW)"),
    }

    def _pads(self, rank: int, opts: dict[str, Any]) -> list[tuple[int, int]]:
        config = opts["config"]
        if rank < 2 or len(config) != rank - 2:
            raise ShapeError(
                f"padding config has {len(config)} (lo, hi) pairs; expected one per spatial dim "
                f"of the rank-{rank} input ({max(rank - 2, 0)})"
            )
        pads = [(0, 0)] * rank
        for axis, pair in zip(spatial_axes(rank, opts["channels"]), config, strict=True):
            pads[axis] = pair
        return pads

    def infer(self, types, opts, node):
        (t,) = types
        shape = []
        for d, (lo, hi) in zip(t.shape, self._pads(t.rank, opts), strict=True):
            if d is not None and d + lo + hi < 0:
                raise ShapeError(f"padding ({lo}, {hi}) crops a dim of size {d} below zero")
            shape.append(None if d is None else d + lo + hi)
        return t.with_shape(tuple(shape))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        pads = self._pads(x.ndim, opts)
        value = np.asarray(opts["value"]).astype(x.dtype)
        out = np.pad(x, [(max(lo, 0), max(hi, 0)) for lo, hi in pads], constant_values=value)
        crop = tuple(
            slice(max(-lo, 0), out.shape[i] - max(-hi, 0)) for i, (lo, hi) in enumerate(pads)
        )
        return out[crop]

    def onnx(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        pads = self._pads(t.rank, opts)
        flat = [lo for lo, _ in pads] + [hi for _, hi in pads]
        value = b.const(np.asarray(opts["value"]).astype(to_numpy_dtype(t.dtype)), hint="value")
        return b.op("Pad", [inputs[0], b.ints(flat, "pads"), value], mode="constant")

    def tflite(self, ctx, inputs, opts):
        """PADV2 with the fill value for the positive pads, SLICE for the negative ones."""
        b, t = ctx.b, ctx.in_types[0]
        pads = self._pads(t.rank, opts)
        x = inputs[0]
        grow = [[max(lo, 0), max(hi, 0)] for lo, hi in pads]
        if any(v for pair in grow for v in pair):
            shape = tuple(None if d is None else d + lo + hi for d, (lo, hi) in zip(t.shape, grow))
            value = b.const(np.asarray(opts["value"]).astype(to_numpy_dtype(t.dtype)), hint="value")
            paddings = b.const(np.asarray(grow, np.int32), hint="paddings")
            x = b.op("PADV2", [x, paddings, value], t.with_shape(shape))
        if any(lo < 0 or hi < 0 for lo, hi in pads):
            have = b.type_of(x).shape
            begin = [max(-lo, 0) for lo, _ in pads]
            size = [
                -1 if d is None else d - max(-lo, 0) - max(-hi, 0)
                for d, (lo, hi) in zip(have, pads)
            ]
            x = b.op("SLICE", [x, b.ints(begin, "begin"), b.ints(size, "size")], ctx.out_type)
        return x

    def vjp(self, ctx, inputs, output, cot, opts):
        """The opposite padding: crop what was padded, pad with zeros what was cropped."""
        if not is_float(ctx.in_types[0].dtype):
            return [None]
        config = [(-lo, -hi) for lo, hi in opts["config"]]
        return [apply("pad", [cot], {"config": config, "channels": opts["channels"]})]

    cases: ClassVar[list[Case]] = [
        Case("nhwc", lambda x: pad(x, [(1, 2), (0, 1)]), [TensorType((None, 3, 4, 2))]),
        Case(
            "nchw_value",
            lambda x: pad(x, [(2, 1), (1, 1)], 1.5, channels="first"),
            [TensorType((None, 2, 3, 4))],
        ),
        Case("1d_crop", lambda x: pad(x, [(-1, 2)]), [TensorType((None, 5, 3))]),
    ]


@layer_api
def pad(
    x: Axon,
    config: Any,
    value: float | None = None,
    *,
    name: str | None = None,
    **opts: Any,
) -> Axon:
    """Pad the spatial dims by `config` ((lo, hi) per dim) with `value` (None = 0.0).

    Options: channels ("last" or "first").
    """
    if value is not None:
        opts["value"] = value
    return make_node("pad", [x], {"config": config, **opts}, name=name)


# ---------------------------------------------------------------------------
# resize

_F32_EPS = 2.0**-23


def _linear_kernel(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - x)


def _cubic_kernel(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5."""
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


def _lanczos_kernel(radius: int) -> Callable[[np.ndarray], np.ndarray]:
    def kernel(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius) / (np.pi**2 * x**2)
        return np.where(x > radius, 0.0, np.where(x > 1e-3, y, 1.0))

    return kernel


_KERNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bilinear": _linear_kernel,
    "bicubic": _cubic_kernel,
    "lanczos3": _lanczos_kernel(3),
    "lanczos5": _lanczos_kernel(5),
}


def resize_weights(in_size: int, out_size: int, method: str, antialias: bool) -> np.ndarray:
    """The {in, out} matrix that resamples one axis (output = input . weights).

    Output sample j sits at the half-pixel centre (j + 0.5) * in/out - 0.5; its
    weights are the kernel at the distances to every input sample, the kernel
    widened by in/out when downsampling with antialias, then divided by their sum
    (so the borders are renormalised); weights under 1000 f32 eps become zero.
    """
    inv_scale = in_size / out_size
    kernel_scale = max(1.0, inv_scale) if antialias else 1.0
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * inv_scale - 0.5
    dist = np.abs(centres[None, :] - np.arange(in_size, dtype=np.float64)[:, None]) / kernel_scale
    raw = _KERNELS[method](dist)
    total = raw.sum(axis=0, keepdims=True)
    return np.where(np.abs(raw) > 1000 * _F32_EPS, raw / np.where(total != 0.0, total, 1.0), 0.0)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output sample: floor((dst + 0.5) * in/out), in f32 as Nx does."""
    inv_scale = np.float32(in_size / out_size)
    src = np.floor((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale)
    return np.minimum(src.astype(np.int64), in_size - 1)


@register
class Resize(Op):
    name = "resize"
    family = "shape"
    doc = "Resamples the spatial dims to `resize_shape` (nearest, bilinear, bicubic, lanczos)."
    options: ClassVar[dict[str, Option]] = {
        "resize_shape": Option(
            check=check_int_or_tuple(1), doc="the output size of each spatial dim"
        ),
        "method": Option(
            "nearest",
            check_choice("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5"),
            "the sampling method",
        ),
        "antialias": Option(True, check_bool, "widen the kernel when downsampling"),
        "channels": Option("last", check_channels, "'last' (NHWC) or 'first' (NCHW)"),
    }

    def _sizes(self, rank: int, opts: dict[str, Any]) -> list[tuple[int, int]]:
        """(axis, output size) for each spatial axis."""
        if rank < 3:
            raise ShapeError(
                f"expected an input of rank >= 3 (batch, spatial..., channels), got rank {rank}"
            )
        axes = spatial_axes(rank, opts["channels"])
        size = opts["resize_shape"]
        if isinstance(size, int):
            size = (size,) * len(axes)
        if len(size) != len(axes):
            raise ShapeError(
                f"resize_shape {tuple(size)} has {len(size)} entries; expected one per spatial "
                f"dim of the rank-{rank} input ({len(axes)})"
            )
        return list(zip(axes, size, strict=True))

    def infer(self, types, opts, node):
        (t,) = types
        shape = list(t.shape)
        for axis, out in self._sizes(t.rank, opts):
            if shape[axis] == 0:
                raise ShapeError(f"cannot resize an empty spatial dim (axis {axis}) to {out}")
            shape[axis] = out
        return t.with_shape(tuple(shape))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        out = x if opts["method"] == "nearest" else x.astype(np.float64)
        for axis, size in self._sizes(x.ndim, opts):
            n = out.shape[axis]
            if n == size:
                continue  # Axon skips axes whose size does not change
            if opts["method"] == "nearest":
                out = np.take(out, nearest_indices(n, size), axis=axis)
            else:
                w = resize_weights(n, size, opts["method"], opts["antialias"])
                out = np.moveaxis(np.moveaxis(out, axis, -1) @ w, -1, axis)
        return out.astype(x.dtype)

    def onnx(self, ctx, inputs, opts):
        """Separable resampling with the reference's own per-axis tables, computed now
        from the static spatial sizes: nearest is a Gather, the kernels a MatMul
        (ONNX Resize has neither Axon's antialias widening nor its renormalised borders)."""
        b, t = ctx.b, ctx.in_types[0]
        x = inputs[0]
        nearest = opts["method"] == "nearest"
        work = t.dtype if nearest or t.dtype in ("f32", "f64") else "f64"
        if work != t.dtype:
            x = b.cast(x, work)
        for axis, size in self._sizes(t.rank, opts):
            n = t.shape[axis]
            if n is None:
                raise ShapeError(
                    f"resize needs a static size for spatial axis {axis} to build its "
                    f"sampling tables, got input shape {_fmt(t.shape)}"
                )
            if n == size:
                continue
            if nearest:
                x = b.op("Gather", [x, b.ints(nearest_indices(n, size), "indices")], axis=axis)
                continue
            w = b.const(resize_weights(n, size, opts["method"], opts["antialias"]), work, "weights")
            last = t.rank - 1
            perm = list(range(t.rank))
            perm[axis], perm[last] = last, axis  # a swap is its own inverse
            if axis != last:
                x = b.op("Transpose", [x], perm=perm)
            x = b.op("MatMul", [x, w])
            if axis != last:
                x = b.op("Transpose", [x], perm=perm)
        return x if work == t.dtype else b.cast(x, t.dtype)

    def tflite(self, ctx, inputs, opts):
        """The ONNX rule's separable tables: GATHER for nearest, FULLY_CONNECTED for kernels."""
        b, t = ctx.b, ctx.in_types[0]
        if t.dtype not in ("f32",) and opts["method"] != "nearest":
            raise ctx.unsupported(f"{t.dtype} input: TFLite resizes f32 tensors")
        x = inputs[0]
        for axis, size in self._sizes(t.rank, opts):
            n = t.shape[axis]
            if n is None:
                raise ctx.unsupported(f"a dynamic spatial axis {axis}")
            if n == size:
                continue
            shape = list(b.type_of(x).shape)
            shape[axis] = size
            if opts["method"] == "nearest":
                idx = b.ints(nearest_indices(n, size), "indices")
                x = b.op(
                    "GATHER",
                    [x, idx],
                    t.with_shape(tuple(shape)),
                    options=b.options("Gather", axis=axis),
                )
                continue
            w = resize_weights(n, size, opts["method"], opts["antialias"]).astype(np.float32)
            x = b.on_last_axis(x, axis, lambda v, w=w: _fc(b, v, w))
        return x

    def vjp(self, ctx, inputs, output, cot, opts):
        """Each axis is x . W for an {in, out} matrix W (nearest: the one-hot matrix of
        its source indices), so the cotangent goes back through W's transpose, axis by
        axis in reverse order; for nearest that scatter-adds onto the sampled inputs."""
        t = ctx.in_types[0]
        if not is_float(t.dtype):
            return [None]
        for axis, size in reversed(self._sizes(t.rank, opts)):
            n = t.shape[axis]
            if n is None:
                raise ShapeError(
                    f"the resize gradient needs a static size for spatial axis {axis}, got "
                    f"input shape {_fmt(t.shape)}"
                )
            if n == size:
                continue
            if opts["method"] == "nearest":
                w = np.zeros((n, size))
                w[nearest_indices(n, size), np.arange(size)] = 1.0
            else:
                w = resize_weights(n, size, opts["method"], opts["antialias"])
            perm = list(range(t.rank))
            perm[axis], perm[-1] = perm[-1], axis  # a swap is its own inverse
            moved = anp.transpose(cot, perm)
            cot = anp.transpose(anp.matmul(moved, w.T.astype(to_numpy_dtype(t.dtype))), perm)
        return [cot]

    cases: ClassVar[list[Case]] = [
        Case("nearest_up", lambda x: resize(x, (5, 5)), [TensorType((None, 3, 3, 2))]),
        Case(
            "nearest_down_first",
            lambda x: resize(x, (2, 3), channels="first"),
            [TensorType((None, 2, 4, 6))],
        ),
        Case(
            "bilinear_down",
            lambda x: resize(x, (4, 4), method="bilinear"),
            [TensorType((None, 6, 6, 2))],
        ),
        Case(
            "bilinear_no_antialias",
            lambda x: resize(x, (4, 3), method="bilinear", antialias=False),
            [TensorType((None, 6, 5, 1))],
        ),
        Case(
            "bicubic_up",
            lambda x: resize(x, (6, 7), method="bicubic"),
            [TensorType((None, 3, 4, 2))],
        ),
        Case(
            "lanczos3_1d", lambda x: resize(x, (9,), method="lanczos3"), [TensorType((None, 5, 2))]
        ),
        Case(
            "lanczos5_down_first",
            lambda x: resize(x, (3, 4), method="lanczos5", channels="first"),
            [TensorType((None, 2, 7, 4))],
        ),
        Case(
            "bicubic_3d_mixed",
            lambda x: resize(x, (2, 5, 3), method="bicubic", antialias=False),
            [TensorType((None, 4, 3, 3, 2))],
        ),
        Case(
            "nearest_3d_first",
            lambda x: resize(x, (3, 2, 5), channels="first"),
            [TensorType((None, 2, 2, 4, 3))],
        ),
    ]


@layer_api
def resize(x: Axon, resize_shape: Any, *, name: str | None = None, **opts: Any) -> Axon:
    """Resize the spatial dims to `resize_shape` (a tuple, one size per spatial dim).

    Options: method ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5"),
    antialias (widen the kernel when downsampling), channels ("last" or "first").
    """
    return make_node("resize", [x], {"resize_shape": resize_shape, **opts}, name=name)
