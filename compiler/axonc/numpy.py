"""`axonc.numpy` (`import axonc.numpy as anp`): numpy's functions for traced functions.

Inside `ax.nx` / `ax.layer` functions these record primitives on traced tensors,
as jax.numpy does; called with no traced tensor they compute at once on numpy
arrays through the same ops' numpy rules, so a loss written with `anp` runs
eagerly or traced. Names and signatures are numpy's (plus `erf`); dtypes follow
jax.numpy without x64 (integer inputs to transcendental functions and true
division give f32, Python floats take the other operand's float dtype).
"""

from __future__ import annotations

import builtins as _builtins
from collections.abc import Sequence
from typing import Any

import numpy as _np

from .dtypes import dtype_name, to_numpy_dtype
from .errors import TraceError
from .ops._primitive_data import BINARY, REDUCE, UNARY
from .tracing import Tensor, apply, as_indices, coerce

__all__ = [
    "Tensor",
    "abs",
    "absolute",
    "all",
    "amax",
    "amin",
    "any",
    "arange",
    "argmax",
    "argmin",
    "array",
    "asarray",
    "astype",
    "broadcast_to",
    "clip",
    "concatenate",
    "dot",
    "expand_dims",
    "full",
    "full_like",
    "matmul",
    "max",
    "mean",
    "min",
    "mod",
    "ndim",
    "ones",
    "ones_like",
    "prod",
    "reshape",
    "shape",
    "squeeze",
    "stack",
    "std",
    "sum",
    "take",
    "tensordot",
    "transpose",
    "true_divide",
    "var",
    "where",
    "zeros",
    "zeros_like",
    *UNARY,
    *BINARY,
]


def _unary(short: str) -> Any:
    op = f"np.{short}"

    def fn(x: Any, /) -> Any:
        return apply(op, [x])

    fn.__name__ = short
    fn.__doc__ = UNARY[short][2]
    return fn


def _binary(short: str) -> Any:
    op = f"np.{short}"

    def fn(x1: Any, x2: Any, /) -> Any:
        return apply(op, [x1, x2])

    fn.__name__ = short
    fn.__doc__ = BINARY[short][2]
    return fn


exp = _unary("exp")
expm1 = _unary("expm1")
exp2 = _unary("exp2")
log = _unary("log")
log1p = _unary("log1p")
log2 = _unary("log2")
log10 = _unary("log10")
sqrt = _unary("sqrt")
sin = _unary("sin")
cos = _unary("cos")
tan = _unary("tan")
arcsin = _unary("arcsin")
arccos = _unary("arccos")
arctan = _unary("arctan")
sinh = _unary("sinh")
cosh = _unary("cosh")
tanh = _unary("tanh")
erf = _unary("erf")
negative = _unary("negative")
abs = _unary("abs")
sign = _unary("sign")
square = _unary("square")
floor = _unary("floor")
ceil = _unary("ceil")
rint = _unary("rint")
logical_not = _unary("logical_not")
isnan = _unary("isnan")
isinf = _unary("isinf")
isfinite = _unary("isfinite")
add = _binary("add")
subtract = _binary("subtract")
multiply = _binary("multiply")
divide = _binary("divide")
floor_divide = _binary("floor_divide")
remainder = _binary("remainder")
power = _binary("power")
arctan2 = _binary("arctan2")
maximum = _binary("maximum")
minimum = _binary("minimum")
equal = _binary("equal")
not_equal = _binary("not_equal")
less = _binary("less")
less_equal = _binary("less_equal")
greater = _binary("greater")
greater_equal = _binary("greater_equal")
logical_and = _binary("logical_and")
logical_or = _binary("logical_or")
logical_xor = _binary("logical_xor")

absolute = abs
true_divide = divide
mod = remainder


def _with_dtype(a: Any, dtype: Any) -> Any:
    return a if dtype is None else astype(a, dtype)


def sum(a: Any, axis: Any = None, dtype: Any = None, *, keepdims: bool = False) -> Any:
    """Sum over `axis` (None = every axis); booleans count as s32."""
    return apply("np.sum", [_with_dtype(a, dtype)], {"axis": axis, "keepdims": keepdims})


def prod(a: Any, axis: Any = None, dtype: Any = None, *, keepdims: bool = False) -> Any:
    """Product over `axis`."""
    return apply("np.prod", [_with_dtype(a, dtype)], {"axis": axis, "keepdims": keepdims})


def mean(a: Any, axis: Any = None, dtype: Any = None, *, keepdims: bool = False) -> Any:
    """Mean over `axis`; integers give f32."""
    return apply("np.mean", [_with_dtype(a, dtype)], {"axis": axis, "keepdims": keepdims})


def _reduction(short: str) -> Any:
    op = f"np.{short}"

    def fn(a: Any, axis: Any = None, *, keepdims: bool = False) -> Any:
        return apply(op, [a], {"axis": axis, "keepdims": keepdims})

    fn.__name__ = short
    fn.__doc__ = REDUCE[short][2]
    return fn


max = _reduction("max")
min = _reduction("min")
any = _reduction("any")
all = _reduction("all")
argmax = _reduction("argmax")
argmin = _reduction("argmin")
amax, amin = max, min


def var(a: Any, axis: Any = None, *, keepdims: bool = False) -> Any:
    """Population variance (ddof 0): mean((a - mean(a))**2)."""
    centred = subtract(a, mean(a, axis, keepdims=True))
    return mean(square(centred), axis, keepdims=keepdims)


def std(a: Any, axis: Any = None, *, keepdims: bool = False) -> Any:
    """Population standard deviation: sqrt(var(a))."""
    return sqrt(var(a, axis, keepdims=keepdims))


def where(condition: Any, x: Any, y: Any, /) -> Any:
    """x where condition is true, else y (numpy's three-argument form)."""
    cond = _np.asarray(condition, dtype=bool) if isinstance(condition, bool) else condition
    x, y = coerce([x, y])
    return apply("np.where", [cond, x, y])


def clip(a: Any, a_min: Any, a_max: Any) -> Any:
    """min(max(a, a_min), a_max); either bound may be None."""
    if a_min is None and a_max is None:
        raise ValueError("clip: give a_min or a_max (or both)")
    out = a if a_min is None else maximum(a, a_min)
    return out if a_max is None else minimum(out, a_max)


def matmul(x1: Any, x2: Any, /) -> Any:
    """Matrix product; batch dims broadcast, 1-D operands are promoted (numpy's rules)."""
    return apply("np.matmul", [x1, x2])


def tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    """Sum of products over axes: an int N (last N of a with first N of b) or two lists."""
    if isinstance(axes, int):
        rank_a = ndim(a)
        pair = [list(range(rank_a - axes, rank_a)), list(range(axes))]
    else:
        first, second = axes
        pair = [
            [first] if isinstance(first, int) else list(first),
            [second] if isinstance(second, int) else list(second),
        ]
    return apply("np.tensordot", [a, b], {"axes": pair})


def dot(a: Any, b: Any) -> Any:
    """numpy.dot: a product with a scalar, matmul for ranks <= 2 (and N-D by 1-D),
    else the sum over a's last axis and b's second-to-last (every batch dim kept)."""
    ra, rb = ndim(a), ndim(b)
    if ra == 0 or rb == 0:
        return multiply(a, b)
    if (rb <= 2 and ra <= 2) or rb == 1:
        return matmul(a, b)
    return apply("np.tensordot", [a, b], {"axes": [[-1], [-2]]})


def reshape(a: Any, shape: Any) -> Any:
    """The same elements in a new shape; one dim may be -1; a None dim keeps the input's
    dim at that position, so `anp.reshape(t, (t.shape[0], -1))` works with a dynamic batch."""
    return apply("np.reshape", [a], {"shape": shape})


def transpose(a: Any, axes: Sequence[int] | None = None) -> Any:
    """Permute the axes (None reverses them)."""
    return apply("np.transpose", [a], {"axes": axes})


def expand_dims(a: Any, axis: Any) -> Any:
    """Insert size-1 axes at `axis` (an int or a tuple) of the result."""
    return apply("np.expand_dims", [a], {"axis": axis})


def squeeze(a: Any, axis: Any = None) -> Any:
    """Remove size-1 axes (`axis`, or every size-1 axis)."""
    return apply("np.squeeze", [a], {"axis": axis})


def broadcast_to(array: Any, shape: Any) -> Any:
    """Broadcast to `shape`; a None dim keeps the input's (dynamic) dim at that position."""
    return apply("np.broadcast_to", [array], {"shape": shape})


def concatenate(arrays: Sequence[Any], axis: int = 0) -> Any:
    """Join tensors along an existing axis."""
    return apply("np.concatenate", list(arrays), {"axis": axis})


def stack(arrays: Sequence[Any], axis: int = 0) -> Any:
    """Join same-shaped tensors along a new axis."""
    return apply("np.stack", list(arrays), {"axis": axis})


def take(a: Any, indices: Any, axis: int | None = None) -> Any:
    """Gather along `axis` by integer indices (None = from the flattened tensor)."""
    return apply("np.take", [a, as_indices(indices)], {"axis": axis})


def astype(x: Any, dtype: Any, /) -> Any:
    """Cast to `dtype` (an axonc name such as "f32" or a numpy dtype)."""
    return apply("np.astype", [x], {"dtype": dtype_name(dtype)})


def full_like(a: Any, fill_value: Any, dtype: Any = None) -> Any:
    """A tensor shaped like `a` filled with `fill_value`."""
    return apply(
        "np.full_like",
        [a],
        {"fill_value": fill_value, "dtype": None if dtype is None else dtype_name(dtype)},
    )


def zeros_like(a: Any, dtype: Any = None) -> Any:
    """Zeros shaped like `a`."""
    return full_like(a, 0, dtype)


def ones_like(a: Any, dtype: Any = None) -> Any:
    """Ones shaped like `a`."""
    return full_like(a, 1, dtype)


def shape(a: Any) -> tuple:
    """The (static) shape; None marks a dynamic dim of a traced tensor."""
    return a.shape if isinstance(a, Tensor) else _np.shape(a)


def ndim(a: Any) -> int:
    """The rank."""
    return a.ndim if isinstance(a, Tensor) else _np.ndim(a)


# Constructors take no tensor, so they return numpy arrays (f32 / s32 by default, as
# jax.numpy); mixed with a traced tensor they become constants.


def asarray(a: Any, dtype: Any = None) -> Any:
    """A traced tensor as is (cast if `dtype`), else a numpy array (lists: f32 / s32)."""
    if isinstance(a, Tensor):
        return a if dtype is None else astype(a, dtype)
    (arr,) = coerce([a])
    return _np.asarray(arr) if dtype is None else _np.asarray(arr).astype(_dt(dtype))


array = asarray


def _dt(dtype: Any) -> _np.dtype:
    return to_numpy_dtype(dtype_name(dtype))


def zeros(shape: Any, dtype: Any = "f32") -> _np.ndarray:
    """A zero array (f32 by default)."""
    _static(shape)
    return _np.zeros(shape, _dt(dtype))


def ones(shape: Any, dtype: Any = "f32") -> _np.ndarray:
    """An array of ones (f32 by default)."""
    _static(shape)
    return _np.ones(shape, _dt(dtype))


def full(shape: Any, fill_value: Any, dtype: Any = None) -> _np.ndarray:
    """An array filled with `fill_value` (its weak dtype when `dtype` is None)."""
    _static(shape)
    if dtype is None:
        dtype = dtype_name(coerce([fill_value])[0].dtype)
    return _np.full(shape, fill_value, _dt(dtype))


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> _np.ndarray:
    """numpy.arange with s32 / f32 defaults."""
    out = _np.arange(start, stop, step) if stop is not None else _np.arange(start)
    if dtype is not None:
        return out.astype(_dt(dtype))
    return out.astype(_np.float32 if out.dtype.kind == "f" else _np.int32)


def _static(shape: Any) -> None:
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    if _builtins.any(d is None or isinstance(d, Tensor) for d in dims):
        raise TraceError(
            f"array constructors need a static shape, got {shape!r}; for a shape with a "
            "dynamic dim use anp.zeros_like / anp.full_like / anp.broadcast_to"
        )
