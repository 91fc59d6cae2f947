"""Primitives: the numpy-named ops that traced functions (`axonc.numpy`) are made of.

Every primitive is an op named "np.<numpy name>" (so it never clashes with a layer
such as "add"), with numpy's broadcasting and jax.numpy's dtype rules: a float
mixed with an integer gives the float type (never f64 by surprise), integer
inputs to a transcendental function or a true division give f32, a boolean sum
gives s32. Families (unary, binary, comparison, logical, reduction) are generated
from tables; shape ops (reshape, getitem, take, ...) are written out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..dtypes import (
    TensorType,
    broadcast_shapes,
    dtype_name,
    float_or_f32,
    is_float,
    is_int,
    jnp_promote,
    to_numpy_dtype,
)
from ..errors import ShapeError
from ..ir import make_node
from ..registry import Case, Op, Option, check_bool, check_int, register

_erf = np.vectorize(math.erf, otypes=[np.float64])

# ---------------------------------------------------------------------------
# dtype helpers (the promotion rule, jnp_promote, lives in axonc.dtypes)


def _dt(arr: np.ndarray) -> str:
    return dtype_name(np.asarray(arr).dtype)


def _cast(arr: Any, dtype: str) -> np.ndarray:
    return np.asarray(arr).astype(to_numpy_dtype(dtype), copy=False)


# ---------------------------------------------------------------------------
# option checks


def _check_axis(v: Any) -> int:
    return check_int()(v)


def _check_optional_axis(v: Any) -> int | None:
    return None if v is None else check_int()(v)


def _check_axes(v: Any) -> tuple[int, ...] | None:
    """None (every axis), an int, or a tuple of ints."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return tuple(check_int()(a) for a in v)
    return (check_int()(v),)


def _check_shape_spec(v: Any) -> tuple[int | None, ...]:
    """A target shape: ints >= -1; None keeps the input's dim (reshape) or is dynamic."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v,)
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a shape (a tuple of ints, -1 or None), got {v!r}")
    out = []
    for d in v:
        if d is None:
            out.append(None)
        else:
            d = check_int(-1)(d)
            out.append(d)
    return tuple(out)


def _check_dtype(v: Any) -> str:
    try:
        return dtype_name(v)
    except ShapeError as exc:
        raise ValueError(str(exc)) from None


def _check_optional_dtype(v: Any) -> str | None:
    return None if v is None else _check_dtype(v)


def _check_number(v: Any) -> int | float | bool:
    if isinstance(v, np.generic):
        v = v.item()
    if not isinstance(v, (bool, int, float)):
        raise TypeError(f"expected a number, got {v!r}")
    return v


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return axis % rank


def _norm_axes(axes: tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    out = tuple(_norm_axis(a, rank) for a in axes)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axes}")
    return out


def _merge_dim(a: int | None, b: int | None, what: str) -> int | None:
    if a is not None and b is not None and a != b:
        raise ShapeError(f"{what}: dimension {a} does not match {b}")
    return a if a is not None else b


class Primitive(Op):
    """Shared attributes of the primitives."""

    family = "primitives"
    primitive = True


# ---------------------------------------------------------------------------
# unary element-wise ops: name -> (numpy function, kind, doc)
# kind "float": ints give f32, computed in f64 and rounded; "numeric": same dtype,
# booleans rejected; "round": numeric, identity on ints; "pred": any dtype -> pred.

UNARY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str, str]] = {
    "exp": (np.exp, "float", "e to the power x."),
    "expm1": (np.expm1, "float", "exp(x) - 1, accurate near 0."),
    "exp2": (np.exp2, "float", "2 to the power x."),
    "log": (np.log, "float", "Natural logarithm."),
    "log1p": (np.log1p, "float", "log(1 + x), accurate near 0."),
    "log2": (np.log2, "float", "Base-2 logarithm."),
    "log10": (np.log10, "float", "Base-10 logarithm."),
    "sqrt": (np.sqrt, "float", "Square root."),
    "sin": (np.sin, "float", "Sine."),
    "cos": (np.cos, "float", "Cosine."),
    "tan": (np.tan, "float", "Tangent."),
    "arcsin": (np.arcsin, "float", "Inverse sine."),
    "arccos": (np.arccos, "float", "Inverse cosine."),
    "arctan": (np.arctan, "float", "Inverse tangent."),
    "sinh": (np.sinh, "float", "Hyperbolic sine."),
    "cosh": (np.cosh, "float", "Hyperbolic cosine."),
    "tanh": (np.tanh, "float", "Hyperbolic tangent."),
    "erf": (_erf, "float", "The error function (not in numpy; scipy.special.erf)."),
    "negative": (np.negative, "numeric", "-x."),
    "abs": (np.abs, "numeric", "|x|."),
    "sign": (np.sign, "numeric", "-1, 0 or 1 by the sign of x."),
    "square": (np.square, "numeric", "x * x."),
    "floor": (np.floor, "round", "Largest integer <= x."),
    "ceil": (np.ceil, "round", "Smallest integer >= x."),
    "rint": (np.rint, "round", "Nearest integer, halves to even."),
    "logical_not": (np.logical_not, "pred", "not x (non-zero is true)."),
    "isnan": (np.isnan, "test", "Whether x is NaN."),
    "isinf": (np.isinf, "test", "Whether x is +-inf."),
    "isfinite": (np.isfinite, "test", "Whether x is neither NaN nor infinite."),
}


class Unary(Primitive):
    """An element-wise function of one tensor."""

    fn: Callable[[np.ndarray], np.ndarray]
    kind: str = "float"

    def out_dtype(self, dtype: str) -> str:
        if self.kind in ("pred", "test"):
            return "pred"
        if self.kind == "float":
            return float_or_f32(dtype)
        if dtype == "pred":
            raise ShapeError(f"{self.name} expects a numeric tensor, got a boolean (pred) one")
        return dtype

    def infer(self, types, opts, node):
        (t,) = types
        return t.with_dtype(self.out_dtype(t.dtype))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        out = self.out_dtype(_dt(x))
        fn = type(self).fn
        if self.kind == "float":
            return _cast(fn(x.astype(np.float64)), out)
        if self.kind == "round" and out != "pred" and not is_float(out):
            return x.copy()
        if self.kind == "test" and not is_float(_dt(x)):
            return _cast(fn(x.astype(np.float64)), "pred")
        return _cast(fn(x), out)


# ---------------------------------------------------------------------------
# binary element-wise ops with broadcasting: name -> (numpy function, kind, doc)
# kind "arith": promoted dtype, booleans rejected; "float": like arith but ints give
# f32; "minmax": promoted dtype, booleans allowed; "compare" / "logical": -> pred.

BINARY: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str, str]] = {
    "add": (np.add, "arith", "x1 + x2."),
    "subtract": (np.subtract, "arith", "x1 - x2."),
    "multiply": (np.multiply, "arith", "x1 * x2."),
    "divide": (np.true_divide, "float", "x1 / x2 (true division; integers give f32)."),
    "floor_divide": (np.floor_divide, "arith", "x1 // x2 (floor division)."),
    "remainder": (np.remainder, "arith", "x1 % x2, with the sign of x2 (Python's mod)."),
    "power": (np.power, "arith", "x1 ** x2."),
    "arctan2": (np.arctan2, "float", "The angle of the point (x2, x1), in (-pi, pi]."),
    "maximum": (np.maximum, "minmax", "Element-wise maximum (NaN propagates)."),
    "minimum": (np.minimum, "minmax", "Element-wise minimum (NaN propagates)."),
    "equal": (np.equal, "compare", "x1 == x2."),
    "not_equal": (np.not_equal, "compare", "x1 != x2."),
    "less": (np.less, "compare", "x1 < x2."),
    "less_equal": (np.less_equal, "compare", "x1 <= x2."),
    "greater": (np.greater, "compare", "x1 > x2."),
    "greater_equal": (np.greater_equal, "compare", "x1 >= x2."),
    "logical_and": (np.logical_and, "logical", "x1 and x2 (non-zero is true)."),
    "logical_or": (np.logical_or, "logical", "x1 or x2 (non-zero is true)."),
    "logical_xor": (np.logical_xor, "logical", "x1 xor x2 (non-zero is true)."),
}


class Binary(Primitive):
    """An element-wise function of two tensors, broadcast together."""

    arity = 2
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    kind: str = "arith"

    def dtypes(self, a: str, b: str) -> tuple[str, str]:
        """(the dtype both operands are cast to, the result dtype)."""
        if self.kind == "logical":
            return "pred", "pred"
        common = jnp_promote(a, b)
        if self.kind == "compare":
            return common, "pred"
        if self.kind == "float":
            return float_or_f32(common), float_or_f32(common)
        if self.kind == "arith" and common == "pred":
            raise ShapeError(
                f"{self.name} of two boolean (pred) tensors is not defined; "
                "cast with .astype first or use a logical_* function"
            )
        return common, common

    def infer(self, types, opts, node):
        a, b = types
        _, out = self.dtypes(a.dtype, b.dtype)
        return TensorType(broadcast_shapes(a.shape, b.shape), out)

    def forward(self, ctx, inputs, params, opts):
        a, b = (np.asarray(x) for x in inputs)
        common, out = self.dtypes(_dt(a), _dt(b))
        fn = type(self).fn
        if self.kind == "float":
            return _cast(fn(a.astype(np.float64), b.astype(np.float64)), out)
        return _cast(fn(_cast(a, common), _cast(b, common)), out)


# ---------------------------------------------------------------------------
# reductions: name -> (numpy function, kind, doc)
# kind "sum": booleans give s32; "mean": ints give f32; "same": keeps the dtype;
# "pred": -> pred; "arg": index (s32), one axis or all.

REDUCE: dict[str, tuple[Callable[..., np.ndarray], str, str]] = {
    "sum": (np.sum, "sum", "Sum over `axis` (None = every axis)."),
    "prod": (np.prod, "sum", "Product over `axis`."),
    "mean": (np.mean, "mean", "Mean over `axis`."),
    "max": (np.max, "same", "Maximum over `axis` (NaN propagates)."),
    "min": (np.min, "same", "Minimum over `axis` (NaN propagates)."),
    "any": (np.any, "pred", "Whether any element over `axis` is true."),
    "all": (np.all, "pred", "Whether every element over `axis` is true."),
    "argmax": (np.argmax, "arg", "Index (s32) of the first maximum along `axis` (None = flat)."),
    "argmin": (np.argmin, "arg", "Index (s32) of the first minimum along `axis` (None = flat)."),
}


class Reduce(Primitive):
    """A reduction over some axes, keeping them as size 1 with `keepdims`."""

    fn: Callable[..., np.ndarray]
    kind: str = "sum"

    def out_dtype(self, dtype: str) -> str:
        if self.kind == "sum":
            return "s32" if dtype == "pred" else dtype
        if self.kind == "mean":
            return float_or_f32(dtype)
        if self.kind == "pred":
            return "pred"
        if self.kind == "arg":
            return "s32"
        return dtype

    def infer(self, types, opts, node):
        (t,) = types
        keep, axis = opts["keepdims"], opts["axis"]
        if self.kind == "arg" and axis is not None:
            axes: tuple[int, ...] = (_norm_axis(axis, t.rank),)
        else:
            axes = _norm_axes(axis, t.rank)
        for a in axes:
            if t.shape[a] == 0 and self.kind in ("same", "arg"):
                raise ShapeError(f"{self.name} of an empty axis {a} has no identity")
        if keep:
            shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
        else:
            shape = tuple(d for i, d in enumerate(t.shape) if i not in axes)
        return TensorType(shape, self.out_dtype(t.dtype))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        out = self.out_dtype(_dt(x))
        fn = type(self).fn
        axis, keep = opts["axis"], opts["keepdims"]
        if self.kind == "arg":
            return _cast(fn(x, axis=axis, keepdims=keep), out)
        if self.kind in ("sum", "mean") and is_float(out):
            return _cast(fn(x.astype(np.float64), axis=axis, keepdims=keep), out)
        if self.kind == "sum":
            return _cast(fn(x, axis=axis, keepdims=keep, dtype=to_numpy_dtype(out)), out)
        return _cast(fn(x, axis=axis, keepdims=keep), out)


_REDUCE_OPTIONS = {
    "axis": Option(None, _check_axes, "the axes to reduce; None = every axis"),
    "keepdims": Option(False, check_bool, "keep reduced axes as size 1"),
}
_ARG_OPTIONS = {
    "axis": Option(None, _check_optional_axis, "the axis; None = over the flattened tensor"),
    "keepdims": Option(False, check_bool, "keep the reduced axis as size 1"),
}


# Input ranges that keep the declared cases finite (domains of log, arcsin, division, ...).
_POSITIVE = (0.5, 2.0)
_DOMAIN = {
    **dict.fromkeys(("log", "log1p", "log2", "log10", "sqrt"), _POSITIVE),
    **dict.fromkeys(("arcsin", "arccos"), (-0.9, 0.9)),
    **dict.fromkeys(("divide", "floor_divide", "remainder", "power"), _POSITIVE),
}


def _unary_case(op: str, short: str) -> Case:
    return Case(
        "rank2",
        lambda x, o=op: make_node(o, [x]),
        [TensorType((None, 5))],
        float_range=_DOMAIN.get(short),
    )


def _define(table: dict, base: type[Primitive], extra: dict[str, Any]) -> None:
    for short, (fn, kind, doc) in table.items():
        name = f"np.{short}"
        attrs: dict[str, Any] = {
            "name": name,
            "doc": doc,
            "fn": staticmethod(fn),
            "kind": kind,
            **extra,
        }
        if base is Unary:
            attrs["cases"] = [_unary_case(name, short)]
        elif base is Binary:
            attrs["cases"] = [
                Case(
                    "broadcast",
                    lambda a, b, o=name: make_node(o, [a, b]),
                    [TensorType((None, 1, 4)), TensorType((3, 1))],
                    float_range=_DOMAIN.get(short),
                )
            ]
        else:
            one_axis = 1 if kind == "arg" else (1,)
            attrs["cases"] = [
                Case("all", lambda x, o=name: make_node(o, [x]), [TensorType((None, 3, 4))]),
                Case(
                    "axis1_keep",
                    lambda x, o=name, a=one_axis: make_node(o, [x], {"axis": a, "keepdims": True}),
                    [TensorType((None, 3, 4))],
                ),
            ]
        if base is Reduce:
            attrs["options"] = _ARG_OPTIONS if kind == "arg" else _REDUCE_OPTIONS
        register(type(f"NP_{short}", (base,), attrs))


_define(UNARY, Unary, {})
_define(BINARY, Binary, {})
_define(REDUCE, Reduce, {})


# ---------------------------------------------------------------------------
# structural ops


@register
class Where(Primitive):
    name = "np.where"
    doc = "x where condition is true (non-zero), else y; all three broadcast together."
    arity = 3

    def infer(self, types, opts, node):
        c, x, y = types
        return TensorType(
            broadcast_shapes(c.shape, x.shape, y.shape), jnp_promote(x.dtype, y.dtype)
        )

    def forward(self, ctx, inputs, params, opts):
        c, x, y = (np.asarray(v) for v in inputs)
        out = jnp_promote(_dt(x), _dt(y))
        return _cast(np.where(c.astype(bool), _cast(x, out), _cast(y, out)), out)

    cases = [
        Case(
            "broadcast",
            lambda c, x, y: make_node("np.where", [c, x, y]),
            [TensorType((None, 4), "s32"), TensorType((None, 4)), TensorType((1,))],
            int_inputs={0: 2},
        )
    ]


def _matmul_shape(a: tuple, b: tuple, what: str) -> tuple:
    if not a or not b:
        raise ShapeError(f"{what}: operands must have rank >= 1, got shapes {a} and {b}")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    _merge_dim(a2[-1], b2[-2], f"{what}: contracted dimensions of {a} and {b}")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = (*out[:-2], out[-1]) if len(b) > 1 else out[:-1]
    return out


@register
class Matmul(Primitive):
    name = "np.matmul"
    doc = "Matrix product with numpy's rules: batch dims broadcast, 1-D operands promoted."
    arity = 2

    def infer(self, types, opts, node):
        a, b = types
        return TensorType(_matmul_shape(a.shape, b.shape, "matmul"), jnp_promote(a.dtype, b.dtype))

    def forward(self, ctx, inputs, params, opts):
        a, b = (np.asarray(v) for v in inputs)
        out = jnp_promote(_dt(a), _dt(b))
        if is_float(out):
            return _cast(np.matmul(a.astype(np.float64), b.astype(np.float64)), out)
        return _cast(np.matmul(_cast(a, out), _cast(b, out)), out)

    cases = [
        Case(
            "batched",
            lambda a, b: make_node("np.matmul", [a, b]),
            [TensorType((None, 2, 3)), TensorType((3, 4))],
        ),
        Case(
            "vector",
            lambda a, b: make_node("np.matmul", [a, b]),
            [TensorType((None, 3)), TensorType((3,))],
        ),
    ]


def _check_tensordot_axes(v: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise TypeError(f"expected a pair of axis lists ([a axes], [b axes]), got {v!r}")
    a, b = (_check_axes(x) or () for x in v)
    if len(a) != len(b):
        raise ValueError(f"the two axis lists must have the same length, got {v!r}")
    return a, b


@register
class Tensordot(Primitive):
    name = "np.tensordot"
    doc = "Sum of products over the paired axes of a and b; remaining a axes then b axes."
    arity = 2
    options = {"axes": Option(check=_check_tensordot_axes, doc="([a axes], [b axes])")}

    def infer(self, types, opts, node):
        a, b = types
        ax_a = _norm_axes(opts["axes"][0], a.rank)
        ax_b = _norm_axes(opts["axes"][1], b.rank)
        for i, j in zip(ax_a, ax_b):
            _merge_dim(a.shape[i], b.shape[j], f"tensordot axes {i} and {j}")
        shape = tuple(d for i, d in enumerate(a.shape) if i not in ax_a) + tuple(
            d for j, d in enumerate(b.shape) if j not in ax_b
        )
        return TensorType(shape, jnp_promote(a.dtype, b.dtype))

    def forward(self, ctx, inputs, params, opts):
        a, b = (np.asarray(v) for v in inputs)
        out = jnp_promote(_dt(a), _dt(b))
        work = np.float64 if is_float(out) else to_numpy_dtype(out)
        axes = [list(opts["axes"][0]), list(opts["axes"][1])]
        return _cast(np.tensordot(a.astype(work), b.astype(work), axes=axes), out)

    cases = [
        Case(
            "dot3d",
            lambda a, b: make_node("np.tensordot", [a, b], {"axes": ([-1], [-2])}),
            [TensorType((None, 2, 3)), TensorType((4, 3, 5))],
        )
    ]


def _known(shape: tuple) -> bool:
    return all(d is not None for d in shape)


def _reshape_target(shape: tuple, target: tuple) -> tuple:
    """The target with each None replaced by the input's dim at that position."""
    out = []
    for i, d in enumerate(target):
        if d is None:
            if i >= len(shape):
                raise ShapeError(
                    f"reshape: target dim {i} is None (keep the input's dim) but the input "
                    f"{shape} has no dim {i}"
                )
            d = shape[i]
        out.append(d)
    return tuple(out)


@register
class Reshape(Primitive):
    name = "np.reshape"
    doc = (
        "The same elements in a new shape; one dim may be -1 (inferred), a None dim keeps "
        "the input's dim at that position (Axon's :batch), so t.reshape(t.shape[0], -1) works."
    )
    options = {"shape": Option(check=_check_shape_spec, doc="the new shape; -1 inferred")}

    def infer(self, types, opts, node):
        (t,) = types
        target = opts["shape"]
        if sum(1 for d in target if d == -1) > 1:
            raise ShapeError(f"reshape: at most one dim may be -1, got {target}")
        kept = {i for i, d in enumerate(target) if d is None}
        dims = _reshape_target(t.shape, target)
        if any(d is None for i, d in enumerate(t.shape) if i not in kept):
            return t.with_shape(tuple(None if d == -1 else d for d in dims))
        # every dynamic input dim is kept in place, so the rest must match in size
        size = math.prod(d for i, d in enumerate(t.shape) if i not in kept)
        fixed = math.prod(d for i, d in enumerate(dims) if i not in kept and d != -1)
        if -1 in dims:
            if fixed == 0 or size % fixed:
                raise ShapeError(f"cannot reshape a tensor of shape {t.shape} into {target}")
            return t.with_shape(tuple(size // fixed if d == -1 else d for d in dims))
        if size != fixed:
            raise ShapeError(f"cannot reshape a tensor of shape {t.shape} into {target}")
        return t.with_shape(dims)

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        return np.reshape(x, _reshape_target(x.shape, opts["shape"]))

    cases = [
        Case(
            "flatten",
            lambda x: make_node("np.reshape", [x], {"shape": (-1, 12)}),
            [TensorType((None, 3, 4))],
        ),
        Case(
            "keep_batch",
            lambda x: make_node("np.reshape", [x], {"shape": (None, 2, -1)}),
            [TensorType((None, 3, 4))],
        ),
    ]


def _check_perm(v: Any) -> tuple[int, ...] | None:
    return None if v is None else tuple(check_int()(a) for a in v)


@register
class Transpose(Primitive):
    name = "np.transpose"
    doc = "Permute the axes (None = reverse them all)."
    options = {"axes": Option(None, _check_perm, "the permutation; None reverses the axes")}

    def perm(self, rank: int, axes: tuple | None) -> tuple[int, ...]:
        if axes is None:
            return tuple(reversed(range(rank)))
        perm = tuple(_norm_axis(a, rank) for a in axes)
        if sorted(perm) != list(range(rank)):
            raise ShapeError(f"transpose axes {axes} are not a permutation of {rank} axes")
        return perm

    def infer(self, types, opts, node):
        (t,) = types
        return t.with_shape(tuple(t.shape[i] for i in self.perm(t.rank, opts["axes"])))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        return np.transpose(x, self.perm(x.ndim, opts["axes"]))

    cases = [
        Case(
            "perm",
            lambda x: make_node("np.transpose", [x], {"axes": (0, 2, 1)}),
            [TensorType((None, 3, 4))],
        )
    ]


@register
class ExpandDims(Primitive):
    name = "np.expand_dims"
    doc = "Insert size-1 axes at the given positions of the result."
    options = {"axis": Option(check=lambda v: _check_axes(v), doc="position(s) of the new axes")}

    def infer(self, types, opts, node):
        (t,) = types
        rank = t.rank + len(opts["axis"])
        axes = _norm_axes(opts["axis"], rank)
        dims = iter(t.shape)
        return t.with_shape(tuple(1 if i in axes else next(dims) for i in range(rank)))

    def forward(self, ctx, inputs, params, opts):
        return np.expand_dims(inputs[0], opts["axis"])

    cases = [
        Case(
            "middle",
            lambda x: make_node("np.expand_dims", [x], {"axis": 1}),
            [TensorType((None, 3))],
        )
    ]


@register
class Squeeze(Primitive):
    name = "np.squeeze"
    doc = "Remove size-1 axes (the given ones, or every size-1 axis)."
    options = {"axis": Option(None, _check_axes, "axes to remove; None = every size-1 axis")}

    def axes(self, shape: tuple, axis: tuple | None) -> tuple[int, ...]:
        if axis is None:
            if any(d is None for d in shape):
                raise ShapeError(
                    f"squeeze without axis is ambiguous on shape {shape} with dynamic dims; "
                    "give axis"
                )
            return tuple(i for i, d in enumerate(shape) if d == 1)
        axes = _norm_axes(axis, len(shape))
        for a in axes:
            if shape[a] not in (1, None):
                raise ShapeError(f"cannot squeeze axis {a} of size {shape[a]} (shape {shape})")
        return axes

    def infer(self, types, opts, node):
        (t,) = types
        axes = self.axes(t.shape, opts["axis"])
        return t.with_shape(tuple(d for i, d in enumerate(t.shape) if i not in axes))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        return np.squeeze(x, self.axes(x.shape, opts["axis"]))

    cases = [
        Case(
            "axis",
            lambda x: make_node("np.squeeze", [x], {"axis": 1}),
            [TensorType((None, 1, 3))],
        )
    ]


@register
class BroadcastTo(Primitive):
    name = "np.broadcast_to"
    doc = "Broadcast to a shape; a None target dim keeps the input's (dynamic) dim there."
    options = {"shape": Option(check=_check_shape_spec, doc="the target shape")}

    def target(self, shape: tuple, target: tuple) -> tuple:
        if len(target) < len(shape):
            raise ShapeError(f"cannot broadcast shape {shape} to the lower rank {target}")
        lead = len(target) - len(shape)
        out = []
        for i, d in enumerate(target):
            if d is None:
                if i < lead:
                    raise ShapeError(f"broadcast_to: target dim {i} is None but the input has none")
                d = shape[i - lead]
            elif d < 0:
                raise ShapeError(f"broadcast_to: negative dim in {target}")
            out.append(d)
        out = tuple(out)
        try:
            ok = broadcast_shapes(shape, out) == out
        except ShapeError:
            ok = False
        if not ok:
            raise ShapeError(f"cannot broadcast shape {shape} to {target}")
        return out

    def infer(self, types, opts, node):
        (t,) = types
        return t.with_shape(self.target(t.shape, opts["shape"]))

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        return np.broadcast_to(x, self.target(x.shape, opts["shape"])).copy()

    cases = [
        Case(
            "batch",
            lambda x: make_node("np.broadcast_to", [x], {"shape": (None, 4, 3)}),
            [TensorType((None, 1, 3))],
        )
    ]


@register
class Concatenate(Primitive):
    name = "np.concatenate"
    doc = "Join tensors along an existing axis."
    arity = None
    options = {"axis": Option(0, _check_axis, "the axis to join along")}

    def infer(self, types, opts, node):
        if not types:
            raise ShapeError("concatenate needs at least one tensor")
        rank = types[0].rank
        if any(t.rank != rank for t in types):
            raise ShapeError(f"concatenate: ranks differ: {[t.shape for t in types]}")
        if rank == 0:
            raise ShapeError("concatenate: zero-rank tensors cannot be concatenated")
        axis = _norm_axis(opts["axis"], rank)
        dims = []
        for i in range(rank):
            col = [t.shape[i] for t in types]
            if i == axis:
                dims.append(None if None in col else sum(col))
            else:
                d = None
                for x in col:
                    d = _merge_dim(d, x, f"concatenate dim {i}")
                dims.append(d)
        return TensorType(tuple(dims), jnp_promote(*(t.dtype for t in types)))

    def forward(self, ctx, inputs, params, opts):
        out = jnp_promote(*(_dt(x) for x in inputs))
        return np.concatenate([_cast(x, out) for x in inputs], axis=opts["axis"])

    cases = [
        Case(
            "last",
            lambda a, b: make_node("np.concatenate", [a, b], {"axis": -1}),
            [TensorType((None, 2)), TensorType((None, 3))],
        )
    ]


@register
class Stack(Primitive):
    name = "np.stack"
    doc = "Join same-shaped tensors along a new axis."
    arity = None
    options = {"axis": Option(0, _check_axis, "position of the new axis")}

    def infer(self, types, opts, node):
        if not types:
            raise ShapeError("stack needs at least one tensor")
        rank = types[0].rank
        if any(t.rank != rank for t in types):
            raise ShapeError(f"stack: shapes differ: {[t.shape for t in types]}")
        dims = []
        for i in range(rank):
            d = None
            for t in types:
                d = _merge_dim(d, t.shape[i], f"stack dim {i}")
            dims.append(d)
        axis = _norm_axis(opts["axis"], rank + 1)
        dims.insert(axis, len(types))
        return TensorType(tuple(dims), jnp_promote(*(t.dtype for t in types)))

    def forward(self, ctx, inputs, params, opts):
        out = jnp_promote(*(_dt(x) for x in inputs))
        return np.stack([_cast(x, out) for x in inputs], axis=opts["axis"])

    cases = [
        Case(
            "new_last",
            lambda a, b: make_node("np.stack", [a, b], {"axis": -1}),
            [TensorType((None, 3)), TensorType((None, 3))],
        )
    ]


@register
class Take(Primitive):
    name = "np.take"
    doc = "Gather along an axis by integer indices (None = from the flattened tensor)."
    arity = 2
    options = {"axis": Option(None, _check_optional_axis, "the axis; None = flattened")}

    def infer(self, types, opts, node):
        a, idx = types
        if not is_int(idx.dtype):
            raise ShapeError(f"take: indices must be integers, got {idx.dtype}")
        if opts["axis"] is None:
            return TensorType(idx.shape, a.dtype)
        axis = _norm_axis(opts["axis"], a.rank)
        return TensorType((*a.shape[:axis], *idx.shape, *a.shape[axis + 1 :]), a.dtype)

    def forward(self, ctx, inputs, params, opts):
        a, idx = (np.asarray(v) for v in inputs)
        return np.take(a, idx, axis=opts["axis"])

    cases = [
        Case(
            "rows",
            lambda a, i: make_node("np.take", [a, i], {"axis": 0}),
            [TensorType((5, 3)), TensorType((None, 2), "s32")],
            int_inputs={1: 5},
        )
    ]


@register
class Astype(Primitive):
    name = "np.astype"
    doc = "Cast to a dtype (float to int truncates toward zero, as numpy and ONNX Cast)."
    options = {"dtype": Option(check=_check_dtype, doc="the target dtype")}

    def infer(self, types, opts, node):
        return types[0].with_dtype(opts["dtype"])

    def forward(self, ctx, inputs, params, opts):
        return _cast(inputs[0], opts["dtype"])

    cases = [
        Case(
            "to_s32",
            lambda x: make_node("np.astype", [x], {"dtype": "s32"}),
            [TensorType((None, 3))],
        )
    ]


@register
class FullLike(Primitive):
    name = "np.full_like"
    doc = "A tensor of the input's shape filled with one value (dtype: given or the input's)."
    options = {
        "fill_value": Option(check=_check_number, doc="the value"),
        "dtype": Option(None, _check_optional_dtype, "the dtype; None = the input's"),
    }

    def infer(self, types, opts, node):
        return types[0].with_dtype(opts["dtype"] or types[0].dtype)

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        dtype = opts["dtype"] or _dt(x)
        return np.full(x.shape, opts["fill_value"], dtype=to_numpy_dtype(dtype))

    cases = [
        Case(
            "ones",
            lambda x: make_node("np.full_like", [x], {"fill_value": 1.0}),
            [TensorType((None, 3))],
        )
    ]


# ---------------------------------------------------------------------------
# basic indexing: x[index] with ints, slices, None (new axis) and Ellipsis.
# The index is stored as JSON-able data: an int, None, "..." or
# {"start": s, "stop": e, "step": k} per entry.


def _check_index(v: Any) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of index entries, got {v!r}")
    out: list[Any] = []
    for e in v:
        if e is None or e == "...":
            out.append(e)
        elif isinstance(e, (int, np.integer)) and not isinstance(e, bool):
            out.append(int(e))
        elif isinstance(e, dict) and set(e) == {"start", "stop", "step"}:
            for k in ("start", "stop", "step"):
                x = e[k]
                if x is not None and (isinstance(x, bool) or not isinstance(x, int)):
                    raise TypeError(f"slice {k} must be an int or None, got {x!r}")
            if e["step"] == 0:
                raise ValueError("slice step cannot be zero")
            out.append(dict(e))
        else:
            raise TypeError(f"index entries are ints, None, '...' or slice dicts, got {e!r}")
    if sum(1 for e in out if e == "...") > 1:
        raise ValueError("an index can only have a single ellipsis ('...')")
    return tuple(out)


def encode_index(key: Any) -> tuple:
    """A Python index (int, slice, None, Ellipsis or a tuple of them) as option data."""
    if not isinstance(key, tuple):
        key = (key,)
    out: list[Any] = []
    for e in key:
        if e is Ellipsis:
            out.append("...")
        elif isinstance(e, slice):
            out.append({"start": e.start, "stop": e.stop, "step": e.step})
        else:
            out.append(e)
    return _check_index(out)


def _decode_index(index: tuple) -> tuple:
    return tuple(
        Ellipsis
        if e == "..."
        else slice(e["start"], e["stop"], e["step"])
        if isinstance(e, dict)
        else e
        for e in index
    )


def _slice_len(e: dict, d: int | None) -> int | None:
    if d is not None:
        return len(range(*slice(e["start"], e["stop"], e["step"]).indices(d)))
    if e["start"] is None and e["stop"] is None and e["step"] in (None, 1):
        return None
    return None


@register
class Getitem(Primitive):
    name = "np.getitem"
    doc = "Basic indexing x[...] with ints, slices, None (new axis) and Ellipsis."
    options = {"index": Option(check=_check_index, doc="the index entries")}

    def infer(self, types, opts, node):
        (t,) = types
        index = list(opts["index"])
        used = sum(1 for e in index if e is not None and e != "...")
        if used > t.rank:
            raise ShapeError(f"too many indices ({used}) for a tensor of rank {t.rank}")
        if "..." in index:
            i = index.index("...")
            index[i : i + 1] = [{"start": None, "stop": None, "step": None}] * (t.rank - used)
        else:
            index += [{"start": None, "stop": None, "step": None}] * (t.rank - used)
        dims: list[int | None] = []
        axis = 0
        for e in index:
            if e is None:
                dims.append(1)
                continue
            d = t.shape[axis]
            if isinstance(e, dict):
                dims.append(_slice_len(e, d))
            elif d is not None and not -d <= e < d:
                raise ShapeError(f"index {e} is out of range for axis {axis} of size {d}")
            axis += 1
        return t.with_shape(tuple(dims))

    def forward(self, ctx, inputs, params, opts):
        return np.array(np.asarray(inputs[0])[_decode_index(opts["index"])])

    cases = [
        Case(
            "mixed",
            lambda x: make_node(
                "np.getitem", [x], {"index": encode_index((Ellipsis, slice(1, None), None, 0))}
            ),
            [TensorType((None, 3, 4))],
        )
    ]
