"""The data behind the table-generated primitives, and an index as option data.

`axonc.numpy` (each function's name and doc) and `axonc.tracing` (`x[...]`) need
these too, and the primitives' gradient rules are written with `axonc.numpy`, so
they sit here, below all three, rather than in ops/primitives.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])

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


# ---------------------------------------------------------------------------
# basic indexing: x[index] with ints, slices, None (new axis) and Ellipsis.
# The index is stored as JSON-able data: an int, None, "..." or
# {"start": s, "stop": e, "step": k} per entry.


def check_index(v: Any) -> tuple:
    """Validate encoded index entries (the getitem op's option check)."""
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
    return check_index(out)


def decode_index(index: tuple) -> tuple:
    """The Python index that `encode_index` encoded."""
    return tuple(
        Ellipsis
        if e == "..."
        else slice(e["start"], e["stop"], e["step"])
        if isinstance(e, dict)
        else e
        for e in index
    )
