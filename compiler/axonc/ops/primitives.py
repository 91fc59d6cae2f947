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

from .. import numpy as anp
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
from ..errors import DTypeError, ShapeError
from ..registry import Case, Op, Option, check_bool, check_int, register
from ..shape_inference import make_node
from ..tracing import apply
from ._primitive_data import BINARY, REDUCE, UNARY, check_index, decode_index, encode_index

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
# gradient (vjp) helpers. Rules build the cotangents with axonc.numpy on symbolic tensors.


def _is_float_tensor(x: Any) -> bool:
    return is_float(x.type.dtype)


def _as_dtype_of(g: Any, x: Any) -> Any:
    """`g` cast to `x`'s dtype (no node when they agree)."""
    return g if g.type.dtype == x.type.dtype else anp.astype(g, x.type.dtype)


def _sum_to(g: Any, shape: tuple) -> Any:
    """Undo numpy broadcasting: sum `g` over the axes broadcasting added to reach `shape`.

    Leading extra axes are summed away and the axes where `shape` has 1 (and `g`
    does not) are summed keeping them; a None (dynamic) dim of `shape` matches
    `g`'s dim there.
    """
    lead = g.ndim - len(shape)
    if lead:
        g = anp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return anp.sum(g, axis=axes, keepdims=True) if axes else g


def _operand_cot(x: Any, g: Any) -> Any:
    """The cotangent of a broadcast operand `x` of an element-wise op: None unless float."""
    if not _is_float_tensor(x):
        return None
    return _as_dtype_of(_sum_to(g, x.shape), x)


# ---------------------------------------------------------------------------
# ONNX lowering helpers. Rules compute what the reference computes, in f32 where
# the reference rounds an f64 result to f32; integer rules are exact (wrapping
# like numpy). onnxruntime's CPU kernels lack some dtypes (probed on 1.2x):
# those are computed in a wider type and cast back, which is exact (modular
# arithmetic for sums/products, order-preserving widening for max/min).

# An integer (or pred) dtype computed in a wider type, bit-exact after the cast back.
_WIDER = {"s8": "s32", "s16": "s32", "u8": "s32", "u16": "s32", "u32": "s64", "u64": "s64"}
_ORT_LACKS = {
    "Max": {"s16", "u16"},
    "MatMul": {"s8", "s16", "u8", "u16"},
    "Einsum": {"s8", "s16", "u8", "u16", "u32", "u64"},
    "ReduceSum": {"s8", "s16", "u8", "u16", "u32", "u64"},
    "Where": {"s16", "u16", "u64"},
    "ArgMax": {"s16", "u16", "u32"},
}
# unary float functions onnxruntime has no f64 kernel for: computed in f32 (~1e-7 relative)
_F32_ONLY = {"tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "erf"}
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)


# ---------------------------------------------------------------------------
# TFLite lowering helpers. LiteRT's kernels compute floats in f32 and integers in
# s32/s64 (element-wise ops); other dtypes are refused at export, never approximated.

_TFL_INTS = ("s32", "s64")
_TFL_ARITH = {"add": "ADD", "subtract": "SUB", "multiply": "MUL"}
_TFL_COMPARE = {
    "equal": "EQUAL",
    "not_equal": "NOT_EQUAL",
    "less": "LESS",
    "less_equal": "LESS_EQUAL",
    "greater": "GREATER",
    "greater_equal": "GREATER_EQUAL",
}
# Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, within f32 parity
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _tfl_check(ctx: Any, *dtypes: str, ints: bool = True) -> None:
    """Refuse dtypes LiteRT's kernels do not compute (f16, f64, narrow and unsigned ints)."""
    ok = ("f32", "pred", *(_TFL_INTS if ints else ()))
    bad = sorted({d for d in dtypes if d not in ok})
    if bad:
        raise ctx.unsupported(
            f"{', '.join(bad)} tensors: LiteRT computes this op in {'/'.join(ok)}"
        )


def _tfl_truthy(b: Any, x: int) -> int:
    """`x != 0` as a bool tensor."""
    t = b.type_of(x)
    if t.dtype == "pred":
        return x
    return b.compare("NOT_EQUAL", x, b.scalar(0, x))


def _tfl_erf(b: Any, x: int) -> int:
    ax = b.unary("ABS", x)
    t = b.binary(
        "DIV",
        b.scalar(1.0, x),
        b.binary("ADD", b.scalar(1.0, x), b.binary("MUL", ax, b.scalar(_ERF_P, x))),
    )
    poly = b.scalar(_ERF_A[-1], x)
    for a in reversed(_ERF_A[:-1]):
        poly = b.binary("ADD", b.binary("MUL", poly, t), b.scalar(a, x))
    poly = b.binary("MUL", poly, t)
    y = b.binary(
        "SUB",
        b.scalar(1.0, x),
        b.binary("MUL", poly, b.unary("EXP", b.unary("NEG", b.binary("MUL", x, x)))),
    )
    return b.binary("MUL", b.unary("SIGN", x), y)


def _tfl_unary_float(b: Any, short: str, x: int) -> int:
    """TFLite operators for the float unary functions, on an f32 tensor."""
    direct = {
        "exp": "EXP",
        "log": "LOG",
        "sqrt": "SQRT",
        "sin": "SIN",
        "cos": "COS",
        "tanh": "TANH",
    }
    if short in direct:
        return b.unary(direct[short], x)
    one = b.scalar(1.0, x)
    if short == "expm1":
        return b.binary("SUB", b.unary("EXP", x), one)
    if short == "exp2":
        return b.unary("EXP", b.binary("MUL", x, b.scalar(_LN2, x)))
    if short == "log1p":
        return b.unary("LOG", b.binary("ADD", x, one))
    if short in ("log2", "log10"):
        return b.binary(
            "MUL", b.unary("LOG", x), b.scalar(1 / (_LN2 if short == "log2" else _LN10), x)
        )
    if short == "tan":
        # sign(x) sin|x| / sin(pi/2 - |x|), pi/2 in two parts so the denominator stays
        # accurate near the pole (cos would lose its relative precision there)
        ax = b.unary("ABS", x)
        hi = float(np.float32(math.pi / 2))
        d = b.binary("ADD", b.binary("SUB", b.scalar(hi, x), ax), b.scalar(math.pi / 2 - hi, x))
        ratio = b.binary("DIV", b.unary("SIN", ax), b.unary("SIN", d))
        return b.binary("MUL", b.unary("SIGN", x), ratio)
    if short in ("arcsin", "arccos"):
        root = b.unary("SQRT", b.binary("SUB", one, b.binary("MUL", x, x)))
        pair = [x, root] if short == "arcsin" else [root, x]
        return b.op("ATAN2", pair, b.type_of(x))
    if short == "arctan":
        return b.op(
            "ATAN2", [x, b.binary("ADD", b.binary("MUL", x, b.scalar(0.0, x)), one)], b.type_of(x)
        )
    if short in ("sinh", "cosh"):
        e, inv = b.unary("EXP", x), b.unary("EXP", b.unary("NEG", x))
        both = b.binary("SUB" if short == "sinh" else "ADD", e, inv)
        return b.binary("MUL", both, b.scalar(0.5, x))
    return _tfl_erf(b, x)


def _to(b: Any, x: str, src: str, dst: str) -> str:
    """`x` (of dtype `src`) as dtype `dst`; no node when they agree."""
    return x if src == dst else b.cast(x, dst)


def _work(dtype: str, op: str) -> str:
    """The dtype to run ONNX `op` in for `dtype` (a wider one where onnxruntime lacks it)."""
    return _WIDER[dtype] if dtype in _ORT_LACKS.get(op, ()) else dtype


def truthy(b: Any, x: str, dtype: str) -> str:
    """`x != 0` as pred (NaN is true, as numpy's bool())."""
    if dtype == "pred":
        return x
    return b.op("Not", [b.op("Equal", [x, scalar(b, 0, dtype)])])


def where(b: Any, c: str, x: str, y: str, dtype: str) -> str:
    """Where(c, x, y) for two values of `dtype` (pred and some ints through a wider type)."""
    work = "u8" if dtype == "pred" else _work(dtype, "Where")
    out = b.op("Where", [c, _to(b, x, dtype, work), _to(b, y, dtype, work)])
    return _to(b, out, work, dtype)


def _ordered(b: Any, x: str, dtype: str) -> tuple[str, Callable[[str], str]]:
    """`x` in a dtype onnxruntime can order (max/argmax), and the map back.

    u64 has no wider type: subtracting 2**63 (wrapping) then reading the bits as
    s64 preserves the order.
    """
    if dtype == "u64":
        offset = scalar(b, 2**63, "u64")
        y = b.cast(b.op("Sub", [x, offset]), "s64")
        return y, lambda v: b.op("Add", [b.cast(v, "u64"), offset])
    work = "u8" if dtype == "pred" else _work(dtype, "ArgMax")
    return _to(b, x, dtype, work), lambda v: _to(b, v, work, dtype)


def scalar(b: Any, value: Any, dtype: str) -> str:
    """A scalar constant of `dtype`."""
    return b.const(value, dtype, "c")


def _expm1(b: Any, x: str, dt: str) -> str:
    """exp(x) - 1 by Kahan's trick (u - 1) * x / log(u), exact near 0."""
    u = b.op("Exp", [x])
    um1 = b.op("Sub", [u, scalar(b, 1.0, dt)])
    ratio = b.op("Div", [b.op("Mul", [um1, x]), b.op("Log", [u])])
    out = b.op("Where", [b.op("IsInf", [u]), u, ratio])
    out = b.op("Where", [b.op("Equal", [um1, scalar(b, -1.0, dt)]), um1, out])
    return b.op("Where", [b.op("Equal", [u, scalar(b, 1.0, dt)]), x, out])


def _log1p(b: Any, x: str, dt: str) -> str:
    """log(1 + x) by Kahan's trick log(u) * x / (u - 1), exact near 0."""
    u = b.op("Add", [x, scalar(b, 1.0, dt)])
    log_u = b.op("Log", [u])
    ratio = b.op("Div", [b.op("Mul", [log_u, x]), b.op("Sub", [u, scalar(b, 1.0, dt)])])
    out = b.op("Where", [b.op("IsInf", [u]), log_u, ratio])
    out = b.op("Where", [b.op("Equal", [u, scalar(b, 0.0, dt)]), log_u, out])
    return b.op("Where", [b.op("Equal", [u, scalar(b, 1.0, dt)]), x, out])


def _scaled_log(scale: float) -> Callable[[Any, str, str], str]:
    return lambda b, x, dt: b.op("Mul", [b.op("Log", [x]), scalar(b, scale, dt)])


def _simple(op_type: str) -> Callable[[Any, str, str], str]:
    return lambda b, x, dt: b.op(op_type, [x])


# numpy name -> ONNX nodes computing it in the float dtype `dt`
UNARY_FLOAT_ONNX: dict[str, Callable[[Any, str, str], str]] = {
    "exp": _simple("Exp"),
    "expm1": _expm1,
    "exp2": lambda b, x, dt: b.op("Pow", [scalar(b, 2.0, dt), x]),
    "log": _simple("Log"),
    "log1p": _log1p,
    "log2": _scaled_log(1 / math.log(2.0)),
    "log10": _scaled_log(1 / math.log(10.0)),
    "sqrt": _simple("Sqrt"),
    "sin": _simple("Sin"),
    "cos": _simple("Cos"),
    "tan": _simple("Tan"),
    "arcsin": _simple("Asin"),
    "arccos": _simple("Acos"),
    "arctan": _simple("Atan"),
    "sinh": _simple("Sinh"),
    "cosh": _simple("Cosh"),
    "tanh": _simple("Tanh"),
    "erf": _simple("Erf"),
}


def _sign_bit(b: Any, x: str, dt: str) -> str:
    """Whether x is negative or -0 (1/x < 0 tells -0 from +0); false for NaN."""
    zero = scalar(b, 0.0, dt)
    reciprocal = b.op("Div", [scalar(b, 1.0, dt), x])
    return b.op("Or", [b.op("Less", [x, zero]), b.op("Less", [reciprocal, zero])])


def _arctan2(b: Any, y: str, x: str, dt: str) -> str:
    """atan2(y, x) from Atan with numpy's quadrants, signed zeros and infinities."""
    zero, pi = scalar(b, 0.0, dt), scalar(b, math.pi, dt)
    y_neg = _sign_bit(b, y, dt)
    signed_pi = b.op("Where", [y_neg, b.op("Neg", [pi]), pi])
    base = b.op("Atan", [b.op("Div", [y, x])])
    out = b.op("Where", [b.op("Less", [x, zero]), b.op("Add", [base, signed_pi]), base])
    # x = +-0: +-pi/2 by the sign of y (y / -0 would flip it)
    half_pi = scalar(b, math.pi / 2, dt)
    x_zero = b.op("And", [b.op("Equal", [x, zero]), b.op("Not", [b.op("IsNaN", [y])])])
    out = b.op("Where", [x_zero, b.op("Where", [y_neg, b.op("Neg", [half_pi]), half_pi]), out])
    # both zero: +-0 for x = +0, +-pi for x = -0
    both_zero = b.op("And", [b.op("Equal", [x, zero]), b.op("Equal", [y, zero])])
    out = b.op("Where", [both_zero, b.op("Where", [_sign_bit(b, x, dt), signed_pi, y]), out])
    # both infinite: +-pi/4 or +-3pi/4
    quarter = b.op(
        "Where",
        [b.op("Less", [x, zero]), scalar(b, 3 * math.pi / 4, dt), scalar(b, math.pi / 4, dt)],
    )
    quarter = b.op("Where", [y_neg, b.op("Neg", [quarter]), quarter])
    both_inf = b.op("And", [b.op("IsInf", [x]), b.op("IsInf", [y])])
    return b.op("Where", [both_inf, quarter, out])


def _float_divmod(b: Any, a: str, c: str, dt: str, want: str) -> str:
    """numpy's npy_divmod for floats: the floor quotient or the remainder (sign of c)."""
    zero, one = scalar(b, 0.0, dt), scalar(b, 1.0, dt)
    mod = b.op("Mod", [a, c], fmod=1)
    fix = b.op(
        "And",
        [
            b.op("Not", [b.op("Equal", [mod, zero])]),
            b.op("Xor", [b.op("Less", [c, zero]), b.op("Less", [mod, zero])]),
        ],
    )
    if want == "remainder":
        out = b.op("Where", [fix, b.op("Add", [mod, c]), mod])
        signed_zero = b.op("Where", [b.op("Less", [c, zero]), scalar(b, -0.0, dt), zero])
        return b.op("Where", [b.op("Equal", [mod, zero]), signed_zero, out])
    quotient = b.op("Div", [a, c])
    div = b.op("Div", [b.op("Sub", [a, mod]), c])
    div = b.op("Where", [fix, b.op("Sub", [div, one]), div])
    floor = b.op("Floor", [div])
    up = b.op("Greater", [b.op("Sub", [div, floor]), scalar(b, 0.5, dt)])
    floor = b.op("Where", [up, b.op("Add", [floor, one]), floor])
    # a zero quotient takes the sign of a / c
    floor = b.op("Where", [b.op("Equal", [div, zero]), b.op("Mul", [quotient, zero]), floor])
    return b.op("Where", [b.op("Equal", [c, zero]), quotient, floor])


def _int_divmod(b: Any, a: str, c: str, dt: str, want: str) -> str:
    """numpy's integer floor division / remainder: x // 0 = x % 0 = 0, MIN // -1 = MIN.

    ONNX Div truncates and a zero (or MIN / -1) divisor traps, so the divisor is made
    safe first and the floor correction applied explicitly.
    """
    zero, one = scalar(b, 0, dt), scalar(b, 1, dt)
    by_zero = b.op("Equal", [c, zero])
    unsafe = by_zero
    if dt[0] == "s":
        by_minus_one = b.op("Equal", [c, scalar(b, -1, dt)])
        unsafe = b.op("Or", [by_zero, by_minus_one])
    safe = where(b, unsafe, one, c, dt)
    if want == "remainder":
        return b.op("Mod", [a, safe], fmod=0)  # x % 1 == 0, the answer for 0 and -1
    q = b.op("Div", [a, safe])
    if dt[0] == "s":
        r = b.op("Sub", [a, b.op("Mul", [q, safe])])
        fix = b.op(
            "And",
            [
                b.op("Not", [b.op("Equal", [r, zero])]),
                b.op("Xor", [b.op("Less", [r, zero]), b.op("Less", [safe, zero])]),
            ],
        )
        q = where(b, fix, b.op("Sub", [q, one]), q, dt)
        q = where(b, by_minus_one, b.op("Sub", [zero, a]), q, dt)
    return where(b, by_zero, zero, q, dt)


def _int_power(b: Any, a: str, e: str, dt: str) -> str:
    """a ** e for integers by square-and-multiply over every bit of e (wrapping as numpy).

    ONNX Pow computes integer powers through floating point, which is not exact
    once the result overflows (numpy wraps); e < 0 is an error in numpy.
    """
    work = _WIDER.get(dt, dt)
    base = _to(b, a, dt, work)
    result = scalar(b, 1, work)  # the first Where broadcasts it to the result's shape
    two = scalar(b, 2, dt)
    bits = int(dt[1:]) - (1 if dt[0] == "s" else 0)
    for i in range(bits):
        odd = b.cast(b.op("Mod", [e, two], fmod=0), "pred")
        result = b.op("Where", [odd, b.op("Mul", [result, base]), result])
        if i < bits - 1:
            base = b.op("Mul", [base, base])
            e = b.op("Div", [e, two])
    return _to(b, result, work, dt)


def _nan_propagating(b: Any, op_type: str, x: str, y: str) -> str:
    """Max/Min where a NaN operand gives NaN (numpy's maximum/minimum)."""
    out = b.op(op_type, [x, y])
    out = b.op("Where", [b.op("IsNaN", [y]), y, out])
    return b.op("Where", [b.op("IsNaN", [x]), x, out])


# ---------------------------------------------------------------------------
# unary element-wise ops (UNARY: name -> (numpy function, kind, doc))

_ROUND_ONNX = {"floor": "Floor", "ceil": "Ceil", "rint": "Round"}  # Round: halves to even


def _zero_gradient(anp: Any, x: Any, y: Any, g: Any) -> Any:
    """Piecewise-constant functions (sign, floor, ...): a zero cotangent (as jax)."""
    return anp.zeros_like(x)


_LN2, _LN10, _TWO_OVER_SQRT_PI = math.log(2.0), math.log(10.0), 2.0 / math.sqrt(math.pi)

# numpy name -> the input cotangent given (anp, x, y = f(x), g = the output cotangent)
UNARY_VJP: dict[str, Callable[[Any, Any, Any, Any], Any]] = {
    "exp": lambda anp, x, y, g: g * y,
    "expm1": lambda anp, x, y, g: g * (y + 1.0),
    "exp2": lambda anp, x, y, g: g * y * _LN2,
    "log": lambda anp, x, y, g: g / x,
    "log1p": lambda anp, x, y, g: g / (x + 1.0),
    "log2": lambda anp, x, y, g: g / (x * _LN2),
    "log10": lambda anp, x, y, g: g / (x * _LN10),
    "sqrt": lambda anp, x, y, g: g * 0.5 / y,
    "sin": lambda anp, x, y, g: g * anp.cos(x),
    "cos": lambda anp, x, y, g: -g * anp.sin(x),
    "tan": lambda anp, x, y, g: g * (1.0 + y * y),
    "arcsin": lambda anp, x, y, g: g / anp.sqrt(1.0 - x * x),
    "arccos": lambda anp, x, y, g: -g / anp.sqrt(1.0 - x * x),
    "arctan": lambda anp, x, y, g: g / (1.0 + x * x),
    "sinh": lambda anp, x, y, g: g * anp.cosh(x),
    "cosh": lambda anp, x, y, g: g * anp.sinh(x),
    "tanh": lambda anp, x, y, g: g * (1.0 - y * y),
    "erf": lambda anp, x, y, g: g * _TWO_OVER_SQRT_PI * anp.exp(-(x * x)),
    "negative": lambda anp, x, y, g: -g,
    "abs": lambda anp, x, y, g: g * anp.sign(x),  # 0 at x = 0, as jax
    "sign": _zero_gradient,
    "square": lambda anp, x, y, g: g * (2.0 * x),
    "floor": _zero_gradient,
    "ceil": _zero_gradient,
    "rint": _zero_gradient,
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

    def vjp(self, ctx, inputs, output, cot, opts):
        """cot times f'(x); boolean results (tests, logical_not) and integer inputs get None."""
        (x,) = inputs
        if self.kind in ("pred", "test") or not _is_float_tensor(x):
            return [None]
        return [_as_dtype_of(UNARY_VJP[self.name[3:]](anp, x, output, cot), x)]

    def onnx(self, ctx, inputs, opts):
        return self._onnx(ctx, inputs, opts)

    def _onnx(self, ctx, inputs, opts):
        b, (x,), src, out = ctx.b, inputs, ctx.in_types[0].dtype, ctx.out_type.dtype
        short = self.name[3:]
        if self.kind == "float":
            work = "f64" if out == "f64" and short not in _F32_ONLY else "f32"
            y = UNARY_FLOAT_ONNX[short](b, _to(b, x, src, work), work)
            return _to(b, y, work, out)
        if self.kind == "test":
            if not is_float(src):  # integers and booleans are always finite
                finite = b.op("Equal", [x, x])
                return finite if short == "isfinite" else b.op("Not", [finite])
            x = _to(b, x, src, "f32" if src == "f16" else src)
            if short == "isfinite":
                return b.op("Not", [b.op("Or", [b.op("IsNaN", [x]), b.op("IsInf", [x])])])
            return b.op("IsNaN" if short == "isnan" else "IsInf", [x])
        if short == "logical_not":
            return b.op("Not", [truthy(b, x, src)])
        if self.kind == "round":
            return x if not is_float(src) else b.op(_ROUND_ONNX[short], [x])
        if short == "negative":
            return b.op("Sub", [scalar(b, 0, src), x]) if src[0] == "u" else b.op("Neg", [x])
        if short == "square":
            return b.op("Mul", [x, x])
        if short == "sign" and is_float(src):  # NaN stays NaN
            return b.op("Where", [b.op("IsNaN", [x]), x, b.op("Sign", [x])])
        return b.op({"abs": "Abs", "sign": "Sign"}[short], [x])

    def tflite(self, ctx, inputs, opts):
        b, (x,), src, out = ctx.b, inputs, ctx.in_types[0].dtype, ctx.out_type.dtype
        short = self.name[3:]
        _tfl_check(ctx, src, out)
        if self.kind == "float":
            return _tfl_unary_float(b, short, b.cast(x, "f32"))
        if self.kind == "test":
            if src != "f32":
                return b.compare("EQUAL" if short == "isfinite" else "NOT_EQUAL", x, x)
            if short == "isnan":
                return b.compare("NOT_EQUAL", x, x)
            inf = b.scalar(np.inf, x)
            return b.compare("LESS" if short == "isfinite" else "EQUAL", b.unary("ABS", x), inf)
        if short == "logical_not":
            return b.unary("LOGICAL_NOT", _tfl_truthy(b, x))
        if self.kind == "round":
            return (
                x
                if src != "f32"
                else b.unary({"floor": "FLOOR", "ceil": "CEIL", "rint": "ROUND"}[short], x)
            )
        if short == "square":
            return b.binary("MUL", x, x)
        if short == "sign" and src == "f32":
            return b.unary("SIGN", x)
        if short == "sign":
            zero = b.scalar(0, x)
            pos = b.cast(b.compare("GREATER", x, zero), src)
            neg = b.cast(b.compare("LESS", x, zero), src)
            return b.binary("SUB", pos, neg)
        return b.unary({"abs": "ABS", "negative": "NEG"}[short], x)


# ---------------------------------------------------------------------------
# binary element-wise ops with broadcasting (BINARY)

_ARITH_ONNX = {"add": "Add", "subtract": "Sub", "multiply": "Mul"}
_LOGICAL_ONNX = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}
_COMPARE_ONNX = {
    "less": "Less",
    "less_equal": "LessOrEqual",
    "greater": "Greater",
    "greater_equal": "GreaterOrEqual",
}


def _tie_share(anp: Any, mine: Any, other: Any, y: Any) -> Any:
    """maximum/minimum: 1 where this operand is the result, 0.5 on a tie, else 0 (as jax)."""
    return anp.where(mine == y, anp.where(other == y, 0.5, 1.0), 0.0)


def _power_vjp(anp: Any, a: Any, b: Any, y: Any, g: Any) -> tuple[Any, Any]:
    """d(a**b): b * a**(b-1) (0 where b = 0) and a**b * log(a) (log(1) where a = 0), as jax."""
    da = anp.where(b == 0, 0.0, b * anp.power(a, b - 1))
    db = y * anp.log(anp.where(a == 0, 1.0, a))
    return g * da, g * db


def _arctan2_vjp(anp: Any, a: Any, b: Any, y: Any, g: Any) -> tuple[Any, Any]:
    """atan2(a, b): d/da = b / (a^2 + b^2), d/db = -a / (a^2 + b^2)."""
    r2 = a * a + b * b
    return g * b / r2, -g * a / r2


# numpy name -> (cot of x1, cot of x2) at the output's shape given (anp, x1, x2, y, g);
# the rule un-broadcasts them to each operand.
BINARY_VJP: dict[str, Callable[[Any, Any, Any, Any, Any], tuple[Any, Any]]] = {
    "add": lambda anp, a, b, y, g: (g, g),
    "subtract": lambda anp, a, b, y, g: (g, -g),
    "multiply": lambda anp, a, b, y, g: (g * b, g * a),
    "divide": lambda anp, a, b, y, g: (g / b, -g * y / b),
    # piecewise constant in both operands (zero almost everywhere, as jax)
    "floor_divide": lambda anp, a, b, y, g: (anp.zeros_like(a), anp.zeros_like(b)),
    # a - floor(a / b) * b
    "remainder": lambda anp, a, b, y, g: (g, -g * anp.floor_divide(a, b)),
    "power": _power_vjp,
    "arctan2": _arctan2_vjp,
    "maximum": lambda anp, a, b, y, g: (g * _tie_share(anp, a, b, y), g * _tie_share(anp, b, a, y)),
    "minimum": lambda anp, a, b, y, g: (g * _tie_share(anp, a, b, y), g * _tie_share(anp, b, a, y)),
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

    def vjp(self, ctx, inputs, output, cot, opts):
        """Each float operand's cotangent, summed over the axes it was broadcast along;
        comparisons and logical ops (boolean results) get None."""
        a, b = inputs
        if self.kind in ("compare", "logical"):
            return [None, None]
        ga, gb = BINARY_VJP[self.name[3:]](anp, a, b, output, cot)
        return [_operand_cot(a, ga), _operand_cot(b, gb)]

    def onnx(self, ctx, inputs, opts):
        return self._onnx(ctx, inputs, opts)

    def _onnx(self, ctx, inputs, opts):
        b, short = ctx.b, self.name[3:]
        (ta, tc), (x, y) = (t.dtype for t in ctx.in_types), inputs
        common, out = self.dtypes(ta, tc)
        if self.kind == "logical":
            return b.op(_LOGICAL_ONNX[short], [truthy(b, x, ta), truthy(b, y, tc)])
        if self.kind == "float":
            # integers: divide in f64 and round once, as the reference does
            work = "f32" if common in ("f16", "f32") or short == "arctan2" else "f64"
            x, y = _to(b, x, ta, work), _to(b, y, tc, work)
            z = b.op("Div", [x, y]) if short == "divide" else _arctan2(b, x, y, work)
            return _to(b, z, work, out)
        x, y = _to(b, x, ta, common), _to(b, y, tc, common)
        if self.kind == "compare":
            if short == "equal":
                return b.op("Equal", [x, y])
            if short == "not_equal":
                return b.op("Not", [b.op("Equal", [x, y])])
            if common == "pred":
                x, y = b.cast(x, "u8"), b.cast(y, "u8")
            return b.op(_COMPARE_ONNX[short], [x, y])
        if self.kind == "minmax":
            if common == "pred":
                return b.op("Or" if short == "maximum" else "And", [x, y])
            op_type = "Max" if short == "maximum" else "Min"
            if is_float(common):
                return _nan_propagating(b, op_type, x, y)
            work = _work(common, "Max")
            z = b.op(op_type, [_to(b, x, common, work), _to(b, y, common, work)])
            return _to(b, z, work, common)
        if short in ("floor_divide", "remainder"):
            if not is_float(common):
                return _int_divmod(b, x, y, common, short)
            work = "f32" if common == "f16" else common  # numpy's half loops run in f32
            z = _float_divmod(b, _to(b, x, common, work), _to(b, y, common, work), work, short)
            return _to(b, z, work, common)
        if short == "power":
            return b.op("Pow", [x, y]) if is_float(common) else _int_power(b, x, y, common)
        return b.op(_ARITH_ONNX[short], [x, y])

    def tflite(self, ctx, inputs, opts):
        b, short = ctx.b, self.name[3:]
        (ta, tc), (x, y) = (t.dtype for t in ctx.in_types), inputs
        common, out = self.dtypes(ta, tc)
        _tfl_check(ctx, ta, tc, common, out)
        if self.kind == "logical":
            x, y = _tfl_truthy(b, x), _tfl_truthy(b, y)
            if short == "logical_xor":
                return b.compare("NOT_EQUAL", x, y)
            return b.compare("LOGICAL_AND" if short == "logical_and" else "LOGICAL_OR", x, y)
        if self.kind == "float":
            x, y = b.cast(x, "f32"), b.cast(y, "f32")
            if short == "divide":
                return b.binary("DIV", x, y)
            # ATAN2 takes operands of one shape: broadcast each against the other
            zero = b.scalar(0.0, x)
            x, y = (b.binary("ADD", v, b.binary("MUL", w, zero)) for v, w in ((x, y), (y, x)))
            return b.binary("ATAN2", x, y)
        x, y = b.cast(x, common), b.cast(y, common)
        if self.kind == "compare":
            if common == "pred":
                x, y = b.cast(x, "s32"), b.cast(y, "s32")
            return b.compare(_TFL_COMPARE[short], x, y)
        if self.kind == "minmax":
            if common == "pred":
                return b.compare("LOGICAL_OR" if short == "maximum" else "LOGICAL_AND", x, y)
            return b.binary("MAXIMUM" if short == "maximum" else "MINIMUM", x, y)
        if short in ("floor_divide", "remainder"):
            return b.binary("FLOOR_DIV" if short == "floor_divide" else "FLOOR_MOD", x, y)
        if short == "power":
            if common == "s64":
                raise ctx.unsupported("s64 power: LiteRT's POW takes f32 and s32")
            return b.binary("POW", x, y)
        return b.binary(_TFL_ARITH[short], x, y)


# ---------------------------------------------------------------------------
# reductions (REDUCE)


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

    def vjp(self, ctx, inputs, output, cot, opts):
        """sum/mean spread the cotangent back; prod divides out each element (zeros handled
        exactly); max/min share it equally among the elements equal to the result (as jax);
        any/all/argmax/argmin and integer inputs get None."""
        (x,) = inputs
        if self.kind in ("pred", "arg") or not _is_float_tensor(x):
            return [None]
        short = self.name[3:]
        axes = _norm_axes(opts["axis"], x.ndim)
        if not axes:  # reducing no axis is the identity
            return [_as_dtype_of(cot, x)]
        g = cot if opts["keepdims"] else anp.expand_dims(cot, axes)
        if short in ("max", "min"):
            y = output if opts["keepdims"] else anp.expand_dims(output, axes)
            hits = (x == y).astype(cot.dtype)
            return [_as_dtype_of(hits * (g / anp.sum(hits, axis=axes, keepdims=True)), x)]
        g = _spread(g, x, axes)
        if short == "mean":
            count = _count(x, axes)
            g = g / count
        elif short == "prod":
            zero = x == 0
            x_nz = anp.where(zero, 1.0, x)
            p_nz = anp.prod(x_nz, axis=axes, keepdims=True)
            zeros = anp.sum(zero.astype(x.type.dtype), axis=axes, keepdims=True)
            # no zero: prod / x; one zero: the product of the others at it; more: 0
            others = anp.where(zeros == 0, p_nz / x_nz, anp.where(zero & (zeros == 1), p_nz, 0.0))
            g = g * others
        return [_as_dtype_of(g, x)]

    def onnx(self, ctx, inputs, opts):
        return self._onnx(ctx, inputs, opts)

    def _onnx(self, ctx, inputs, opts):
        b, (x,), t, out = ctx.b, inputs, ctx.in_types[0], ctx.out_type.dtype
        short, keep = self.name[3:], opts["keepdims"]
        if self.kind == "arg":
            return self._onnx_arg(b, x, t, opts["axis"], keep)
        axes = _norm_axes(opts["axis"], t.rank)
        if self.kind == "pred":
            x = truthy(b, x, t.dtype)
            if not axes:
                return x
            # any: some true; all: none false (counted, so an empty reduction is right)
            if short == "all":
                x = b.op("Not", [x])
            count = b.reduce("ReduceSum", b.cast(x, "s64"), axes, keep)
            hit = b.op("Greater", [count, scalar(b, 0, "s64")])
            return hit if short == "any" else b.op("Not", [hit])
        if not axes:  # reducing no axis only converts the dtype
            return _to(b, x, t.dtype, out)
        if self.kind == "same":
            return self._onnx_extreme(b, x, t.dtype, axes, keep)
        if self.kind == "mean":
            work = "f32" if t.dtype in ("f16", "f32") else "f64"
        elif is_float(out):
            work = "f32" if out == "f16" else out
        else:
            work = _work(out, "ReduceSum")
        op_type = {"sum": "ReduceSum", "prod": "ReduceProd", "mean": "ReduceMean"}[short]
        y = b.reduce(op_type, _to(b, x, t.dtype, work), axes, keep)
        return _to(b, y, work, out)

    def tflite(self, ctx, inputs, opts):
        b, (x,), t, out = ctx.b, inputs, ctx.in_types[0], ctx.out_type.dtype
        short, keep = self.name[3:], opts["keepdims"]
        _tfl_check(ctx, t.dtype, out)
        if self.kind == "arg":
            axis = opts["axis"]
            if axis is None:
                x, axis = b.reshape(x, (-1,) if None not in t.shape else (None,)), 0
                if t.rank != 1 and None in t.shape:
                    raise ctx.unsupported("argmax/argmin over a flattened dynamic tensor")
            axis = _norm_axis(axis, b.type_of(x).rank)
            shape = [d for i, d in enumerate(b.type_of(x).shape) if i != axis]
            kind = "ARG_MAX" if short == "argmax" else "ARG_MIN"
            opt = b.options(
                "ArgMax" if short == "argmax" else "ArgMin", outputType=b.s.TensorType.INT32
            )
            idx = b.op(
                kind, [x, b.ints([axis], "axis")], TensorType(tuple(shape), "s32"), options=opt
            )
            return b.reshape(idx, ctx.out_type.shape) if keep else idx
        axes = _norm_axes(opts["axis"], t.rank)
        if self.kind == "pred":
            x = _tfl_truthy(b, x)
            if not axes:
                return x
            return b.reduce("REDUCE_ANY" if short == "any" else "REDUCE_ALL", x, axes, keep)
        x = b.cast(x, out)
        if not axes:
            return x
        kind = {
            "sum": "SUM",
            "prod": "REDUCE_PROD",
            "mean": "MEAN",
            "max": "REDUCE_MAX",
            "min": "REDUCE_MIN",
        }[short]
        return b.reduce(kind, x, axes, keep)

    def _onnx_extreme(self, b, x, dtype, axes, keep):
        """ReduceMax/ReduceMin with numpy's NaN propagation."""
        op_type = "ReduceMax" if self.name == "np.max" else "ReduceMin"
        y, back = _ordered(b, x, dtype)
        out = back(b.reduce(op_type, y, axes, keep))
        if not is_float(dtype):
            return out
        nan = b.reduce("ReduceMax", b.cast(b.op("IsNaN", [x]), "f32"), axes, keep)
        has_nan = b.op("Greater", [nan, scalar(b, 0.0, "f32")])
        return b.op("Where", [has_nan, scalar(b, np.nan, dtype), out])

    def _onnx_arg(self, b, x, t, axis, keep):
        """ArgMax/ArgMin (first occurrence; the first NaN wins, as in numpy) as s32."""
        op_type = "ArgMax" if self.name == "np.argmax" else "ArgMin"
        flat = axis is None
        if flat:
            x, axis = b.op("Reshape", [x, b.ints([-1])]), 0
        axis = _norm_axis(axis, 1 if flat else t.rank)
        y, _ = _ordered(b, x, t.dtype)
        idx = b.op(op_type, [y], axis=axis, keepdims=int(keep and not flat))
        if is_float(t.dtype):
            nan = b.cast(b.op("IsNaN", [x]), "f32")
            first_nan = b.op("ArgMax", [nan], axis=axis, keepdims=int(keep and not flat))
            any_nan = b.reduce("ReduceMax", nan, [axis], bool(keep and not flat))
            has_nan = b.op("Greater", [any_nan, scalar(b, 0.0, "f32")])
            idx = b.op("Where", [has_nan, first_nan, idx])
        if flat and keep:
            idx = b.op("Reshape", [idx, b.ints([1] * t.rank)])
        return b.cast(idx, "s32")


def _spread(g: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """`g` (size 1 along the reduced `axes`) broadcast back to `x`'s shape.

    broadcast_to when the reduced dims are static (its None target dims keep g's
    dynamic dims); adding zeros shaped like `x` when one of them is dynamic.
    """
    if all(x.shape[a] is not None for a in axes):
        return anp.broadcast_to(g, tuple(d if i in axes else None for i, d in enumerate(x.shape)))
    return g + anp.zeros_like(x, g.type.dtype)


def _count(x: Any, axes: tuple[int, ...]) -> Any:
    """How many elements a reduction over `axes` of `x` combines (a tensor if dynamic)."""
    dims = [x.shape[a] for a in axes]
    if None not in dims:
        return math.prod(dims)
    return anp.sum(anp.ones_like(x), axis=axes, keepdims=True)


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

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent goes to the selected branch (zero elsewhere); the condition gets None."""
        c, x, y = inputs
        return [
            None,
            _operand_cot(x, anp.where(c, cot, 0.0)),
            _operand_cot(y, anp.where(c, 0.0, cot)),
        ]

    def onnx(self, ctx, inputs, opts):
        return self._onnx(ctx, inputs, opts)

    def _onnx(self, ctx, inputs, opts):
        b, (c, x, y), (tc, tx, ty) = ctx.b, inputs, (t.dtype for t in ctx.in_types)
        out = ctx.out_type.dtype
        return where(b, truthy(b, c, tc), _to(b, x, tx, out), _to(b, y, ty, out), out)

    def tflite(self, ctx, inputs, opts):
        b, (c, x, y), out = ctx.b, inputs, ctx.out_type
        _tfl_check(ctx, *(t.dtype for t in ctx.in_types), out.dtype)
        return b.op(
            "SELECT_V2", [_tfl_truthy(b, c), b.cast(x, out.dtype), b.cast(y, out.dtype)], out
        )

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """g @ b^T and a^T @ g, summed over broadcast batch dims (1-D operands as matrices)."""
        a, b = inputs
        a2 = anp.expand_dims(a, 0) if a.ndim == 1 else a
        b2 = anp.expand_dims(b, -1) if b.ndim == 1 else b
        g = anp.expand_dims(cot, -1) if b.ndim == 1 else cot
        g = anp.expand_dims(g, -2) if a.ndim == 1 else g
        out = []
        for x, x2, grad, squeeze in (
            (a, a2, lambda: anp.matmul(g, _swap_last(b2)), 0),
            (b, b2, lambda: anp.matmul(_swap_last(a2), g), -1),
        ):
            if not _is_float_tensor(x):
                out.append(None)
                continue
            gx = _sum_to(grad(), x2.shape)
            if x.ndim == 1:
                gx = anp.squeeze(gx, squeeze)
            out.append(_as_dtype_of(gx, x))
        return out

    def onnx(self, ctx, inputs, opts):
        return _contract(ctx, inputs, "MatMul", {})

    def tflite(self, ctx, inputs, opts):
        """BATCH_MATMUL (f32) with 1-D operands promoted to matrices and squeezed back."""
        b, (x, y), (tx, ty) = ctx.b, inputs, ctx.in_types
        _tfl_check(ctx, tx.dtype, ty.dtype, ints=False)
        x, y = b.cast(x, "f32"), b.cast(y, "f32")
        if tx.rank == 1:
            x = b.reshape(x, (1, *tx.shape))
        if ty.rank == 1:
            y = b.reshape(y, (*ty.shape, 1))
        sx, sy = b.type_of(x).shape, b.type_of(y).shape
        lead = broadcast_shapes(sx[:-2], sy[:-2])
        t = TensorType((*lead, sx[-2], sy[-1]), "f32")
        z = b.op("BATCH_MATMUL", [x, y], t, options=b.options("BatchMatMul"))
        return z if t.shape == ctx.out_type.shape else b.reshape(z, ctx.out_type.shape)

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


def _swap_last(x: Any) -> Any:
    """`x` with its last two axes swapped."""
    perm = list(range(x.ndim))
    perm[-2:] = perm[-1], perm[-2]
    return anp.transpose(x, perm)


def _contract(ctx: Any, inputs: list[str], op_type: str, attrs: dict[str, Any]) -> str:
    """MatMul/Einsum in the promoted dtype: wrapping integers, booleans as "any product"."""
    b, out = ctx.b, ctx.out_type.dtype
    if out == "pred":
        work = "s32"
    elif is_float(out):
        work = "f32" if out == "f16" else out
    else:
        work = _work(out, op_type)
    x, y = (_to(b, v, t.dtype, work) for v, t in zip(inputs, ctx.in_types))
    z = b.op(op_type, [x, y], **attrs)
    if out == "pred":
        return b.op("Greater", [z, scalar(b, 0, "s32")])
    return _to(b, z, work, out)


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

    def vjp(self, ctx, inputs, output, cot, opts):
        """Contract the cotangent with the other operand over its free axes, then permute
        the result into the operand's axis order."""
        a, b = inputs
        ax_a, ax_b = _norm_axes(opts["axes"][0], a.ndim), _norm_axes(opts["axes"][1], b.ndim)
        free_a = [i for i in range(a.ndim) if i not in ax_a]
        free_b = [j for j in range(b.ndim) if j not in ax_b]
        n_a = len(free_a)
        out: list[Any] = [None, None]
        if _is_float_tensor(a):
            # axes: a's free ones, then b's contracted ones in b's order (paired a axes)
            ga = anp.tensordot(cot, b, (list(range(n_a, cot.ndim)), free_b))
            src = free_a + [ax_a[ax_b.index(j)] for j in sorted(ax_b)]
            out[0] = _as_dtype_of(anp.transpose(ga, [src.index(i) for i in range(a.ndim)]), a)
        if _is_float_tensor(b):
            # axes: a's contracted ones in a's order (paired b axes), then b's free ones
            gb = anp.tensordot(a, cot, (free_a, list(range(n_a))))
            src = [ax_b[ax_a.index(i)] for i in sorted(ax_a)] + free_b
            out[1] = _as_dtype_of(anp.transpose(gb, [src.index(j) for j in range(b.ndim)]), b)
        return out

    def onnx(self, ctx, inputs, opts):
        ra, rb = (t.rank for t in ctx.in_types)
        ax_a, ax_b = _norm_axes(opts["axes"][0], ra), _norm_axes(opts["axes"][1], rb)
        letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        sa = [next(letters) for _ in range(ra)]
        sb = [next(letters) for _ in range(rb)]
        for i, j in zip(ax_a, ax_b):
            sb[j] = sa[i]
        free = [c for i, c in enumerate(sa) if i not in ax_a]
        free += [c for j, c in enumerate(sb) if j not in ax_b]
        equation = f"{''.join(sa)},{''.join(sb)}->{''.join(free)}"
        return _contract(ctx, inputs, "Einsum", {"equation": equation})

    cases = [
        Case(
            "dot3d",
            lambda a, b: make_node("np.tensordot", [a, b], {"axes": ([-1], [-2])}),
            [TensorType((None, 2, 3)), TensorType((4, 3, 5))],
        )
    ]


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

    def vjp(self, ctx, inputs, output, cot, opts):
        """Reshape the cotangent back: static dims as they are, a dynamic dim the forward
        kept in place as None (keep), one other dynamic dim as -1."""
        (x,) = inputs
        if not _is_float_tensor(x):
            return [None]
        kept = {i for i, d in enumerate(opts["shape"]) if d is None}
        back = [d if d is not None else None if i in kept else -1 for i, d in enumerate(x.shape)]
        if back.count(-1) > 1:
            raise ShapeError(
                f"the gradient of reshape {x.shape} -> {opts['shape']} needs the input's shape "
                "at run time: more than one dynamic dim is not kept in place (give the target a "
                "None at the positions of dynamic dims it keeps)"
            )
        return [_as_dtype_of(anp.reshape(cot, tuple(back)), x)]

    def onnx(self, ctx, inputs, opts):
        b, x, target = ctx.b, inputs[0], opts["shape"]
        if 0 not in target:  # Reshape's 0 copies the input's dim at that position
            return b.op("Reshape", [x, b.ints([0 if d is None else d for d in target])])
        # a literal 0 is a zero-size dim: build the shape, taking kept dims from Shape(x)
        shape = b.op("Shape", [x])
        parts = [
            b.op("Slice", [shape, b.ints([i]), b.ints([i + 1])]) if d is None else b.ints([d])
            for i, d in enumerate(target)
        ]
        return b.op("Reshape", [x, b.op("Concat", parts, axis=0)], allowzero=1)

    def tflite(self, ctx, inputs, opts):
        shape = ctx.out_type.shape
        if 0 in shape or sum(d is None for d in shape) > 1:
            raise ctx.unsupported(f"reshape to {shape}: one dynamic and no zero-sized dim")
        return ctx.b.reshape(inputs[0], shape)

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent transposed by the inverse permutation."""
        (x,) = inputs
        if not _is_float_tensor(x):
            return [None]
        perm = self.perm(x.ndim, opts["axes"])
        inverse = [perm.index(i) for i in range(x.ndim)]
        return [anp.transpose(cot, inverse)]

    def onnx(self, ctx, inputs, opts):
        perm = self.perm(ctx.in_types[0].rank, opts["axes"])
        return ctx.b.op("Transpose", [inputs[0]], perm=list(perm))

    def tflite(self, ctx, inputs, opts):
        perm = self.perm(ctx.in_types[0].rank, opts["axes"])
        return ctx.b.transpose(inputs[0], [int(p) for p in perm])

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent with the new axes squeezed out."""
        (x,) = inputs
        if not _is_float_tensor(x):
            return [None]
        return [anp.squeeze(cot, _norm_axes(opts["axis"], cot.ndim))]

    def onnx(self, ctx, inputs, opts):
        axes = sorted(_norm_axes(opts["axis"], ctx.out_type.rank))
        return ctx.b.op("Unsqueeze", [inputs[0], ctx.b.ints(axes)])

    def tflite(self, ctx, inputs, opts):
        shape = ctx.out_type.shape
        if sum(d is None for d in shape) > 1:
            raise ctx.unsupported(f"a result of shape {shape} with more than one dynamic dim")
        return ctx.b.reshape(inputs[0], shape)

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent with the removed axes put back."""
        (x,) = inputs
        if not _is_float_tensor(x):
            return [None]
        axes = self.axes(x.shape, opts["axis"])
        return [anp.expand_dims(cot, axes) if axes else cot]

    def onnx(self, ctx, inputs, opts):
        axes = self.axes(ctx.in_types[0].shape, opts["axis"])
        if not axes:
            return inputs[0]
        return ctx.b.op("Squeeze", [inputs[0], ctx.b.ints(sorted(axes))])

    def tflite(self, ctx, inputs, opts):
        shape = ctx.out_type.shape
        if sum(d is None for d in shape) > 1:
            raise ctx.unsupported(f"a result of shape {shape} with more than one dynamic dim")
        return ctx.b.reshape(inputs[0], shape)

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent summed over the broadcast axes."""
        (x,) = inputs
        return [_operand_cot(x, cot)]

    def onnx(self, ctx, inputs, opts):
        self.target(ctx.in_types[0].shape, opts["shape"])
        # Expand broadcasts both ways: a 1 where the target is None keeps the input's dim
        shape = [1 if d is None else d for d in opts["shape"]]
        return ctx.b.op("Expand", [inputs[0], ctx.b.ints(shape)])

    def tflite(self, ctx, inputs, opts):
        """A multiply by ones of the target's static dims: broadcasting keeps dynamic dims."""
        b, t = ctx.b, ctx.in_types[0]
        self.target(t.shape, opts["shape"])
        _tfl_check(ctx, t.dtype)
        if t.dtype == "pred":
            raise ctx.unsupported("broadcasting a bool tensor")
        ones = np.ones([1 if d is None else d for d in opts["shape"]], to_numpy_dtype(t.dtype))
        return b.op("MUL", [inputs[0], b.const(ones)], ctx.out_type)

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """Each input's part of the cotangent, sliced from the start up to a dynamic size
        and from the end after it (one input may have a dynamic size along the axis)."""
        axis = _norm_axis(opts["axis"], cot.ndim)
        sizes = [x.shape[axis] for x in inputs]
        dynamic = [i for i, d in enumerate(sizes) if d is None]
        if len(dynamic) > 1:
            raise ShapeError(
                f"the gradient of concatenate needs static sizes along axis {axis} for all but "
                f"one input, got {sizes}"
            )
        split = dynamic[0] if dynamic else len(sizes)
        bounds: list[tuple[int | None, int | None]] = []
        start = 0
        for d in sizes[:split]:
            bounds.append((start, start + d))
            start += d
        tail = []
        end = 0
        for d in reversed(sizes[split + 1 :]):
            tail.append((-(end + d), -end or None))
            end += d
        if dynamic:
            bounds.append((start or None, -end or None))
        bounds += reversed(tail)
        lead = (slice(None),) * axis
        return [
            _as_dtype_of(cot[(*lead, slice(lo, hi))], x) if _is_float_tensor(x) else None
            for x, (lo, hi) in zip(inputs, bounds)
        ]

    def onnx(self, ctx, inputs, opts):
        out = ctx.out_type
        values = [_to(ctx.b, v, t.dtype, out.dtype) for v, t in zip(inputs, ctx.in_types)]
        return ctx.b.op("Concat", values, axis=_norm_axis(opts["axis"], out.rank))

    def tflite(self, ctx, inputs, opts):
        b, out = ctx.b, ctx.out_type
        values = [b.cast(v, out.dtype) for v in inputs]
        options = b.options("Concatenation", axis=_norm_axis(opts["axis"], out.rank))
        return b.op("CONCATENATION", values, out, options=options)

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """Each input's slice of the cotangent along the new axis."""
        lead = (slice(None),) * _norm_axis(opts["axis"], cot.ndim)
        return [
            _as_dtype_of(cot[(*lead, i)], x) if _is_float_tensor(x) else None
            for i, x in enumerate(inputs)
        ]

    def onnx(self, ctx, inputs, opts):
        b, out = ctx.b, ctx.out_type
        axis = _norm_axis(opts["axis"], out.rank)
        values = [
            b.op("Unsqueeze", [_to(b, v, t.dtype, out.dtype), b.ints([axis])])
            for v, t in zip(inputs, ctx.in_types)
        ]
        return b.op("Concat", values, axis=axis)

    def tflite(self, ctx, inputs, opts):
        b, out = ctx.b, ctx.out_type
        axis = _norm_axis(opts["axis"], out.rank)
        values = [b.cast(v, out.dtype) for v in inputs]
        options = b.options("Pack", valuesCount=len(values), axis=axis)
        return b.op("PACK", values, out, options=options)

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
            raise DTypeError(f"take: indices must be integers, got {idx.dtype}")
        if opts["axis"] is None:
            return TensorType(idx.shape, a.dtype)
        axis = _norm_axis(opts["axis"], a.rank)
        return TensorType((*a.shape[:axis], *idx.shape, *a.shape[axis + 1 :]), a.dtype)

    def forward(self, ctx, inputs, params, opts):
        a, idx = (np.asarray(v) for v in inputs)
        return np.take(a, idx, axis=opts["axis"])

    def vjp(self, ctx, inputs, output, cot, opts):
        """Scatter-add of the cotangent at the indices (repeated indices add up)."""
        a, idx = inputs
        if not _is_float_tensor(a):
            return [None, None]
        g = _as_dtype_of(cot, a)
        return [apply("np.take_grad", [g, idx, a], {"axis": opts["axis"]}), None]

    def onnx(self, ctx, inputs, opts):
        b, (a, idx), (ta, ti) = ctx.b, inputs, ctx.in_types
        if ti.dtype not in ("s32", "s64"):  # Gather takes s32/s64 indices (negative wrap)
            idx = b.cast(idx, "s64")
        if opts["axis"] is None:
            return b.op("Gather", [b.op("Reshape", [a, b.ints([-1])]), idx], axis=0)
        return b.op("Gather", [a, idx], axis=_norm_axis(opts["axis"], ta.rank))

    def tflite(self, ctx, inputs, opts):
        """GATHER; negative indices count from the end as in numpy (LiteRT rejects them)."""
        b, (a, idx), (ta, _ti) = ctx.b, inputs, ctx.in_types
        if opts["axis"] is None:
            if None in ta.shape:
                raise ctx.unsupported("take from a flattened tensor with a dynamic dim")
            a, axis = b.reshape(a, (math.prod(ta.shape),)), 0
        else:
            axis = _norm_axis(opts["axis"], ta.rank)
        n = b.type_of(a).shape[axis]
        idx = b.cast(idx, "s32")
        if n is None:
            raise ctx.unsupported("take along a dynamic axis")
        idx = b.binary("FLOOR_MOD", idx, b.scalar(n, idx))
        options = b.options("Gather", axis=axis)
        return b.op("GATHER", [a, idx], ctx.out_type, options=options)

    cases = [
        Case(
            "rows",
            lambda a, i: make_node("np.take", [a, i], {"axis": 0}),
            [TensorType((5, 3)), TensorType((None, 2), "s32")],
            int_inputs={1: 5},
        )
    ]


@register
class TakeGrad(Primitive):
    name = "np.take_grad"
    doc = (
        "The transpose of take: zeros with `updates` added at `indices` along `axis` (numpy's "
        "np.add.at; repeated indices add up); `like` gives the size there (axis None: its shape)."
    )
    arity = 3
    options = {"axis": Option(None, _check_optional_axis, "the axis; None = flattened `like`")}

    def infer(self, types, opts, node):
        u, idx, like = types
        if not is_float(u.dtype):
            raise ShapeError(f"take_grad: updates must be floats (a cotangent), got {u.dtype}")
        if not is_int(idx.dtype):
            raise ShapeError(f"take_grad: indices must be integers, got {idx.dtype}")
        if opts["axis"] is None:
            if u.rank != idx.rank:
                raise ShapeError(
                    f"take_grad: updates {u.shape} must have the indices' shape {idx.shape}"
                )
            for a, b in zip(u.shape, idx.shape):
                _merge_dim(a, b, "take_grad: updates and indices")
            return TensorType(like.shape, u.dtype)
        rank = u.rank - idx.rank + 1
        if rank < 1 or like.rank != rank:
            raise ShapeError(
                f"take_grad: updates {u.shape} with indices {idx.shape} give rank {rank}, "
                f"but `like` {like.shape} has rank {like.rank}"
            )
        k = _norm_axis(opts["axis"], rank)
        for a, b in zip(u.shape[k : k + idx.rank], idx.shape):
            _merge_dim(a, b, "take_grad: updates and indices")
        return TensorType((*u.shape[:k], like.shape[k], *u.shape[k + idx.rank :]), u.dtype)

    def forward(self, ctx, inputs, params, opts):
        u, idx, like = (np.asarray(v) for v in inputs)
        axis = opts["axis"]
        if axis is None:
            out = np.zeros(like.size, np.float64)
            np.add.at(out, idx.reshape(-1), u.reshape(-1))
            return _cast(out.reshape(like.shape), _dt(u))
        k = _norm_axis(axis, u.ndim - idx.ndim + 1)
        out = np.zeros((*u.shape[:k], like.shape[k], *u.shape[k + idx.ndim :]), np.float64)
        np.add.at(out, (*(slice(None),) * k, idx), u.astype(np.float64))
        return _cast(out, _dt(u))

    def onnx(self, ctx, inputs, opts):
        """ScatterElements(reduction="add") into zeros, the indices made non-negative and
        expanded to the updates' shape (their dims flattened into one)."""
        from onnx import numpy_helper  # onnx loads at lowering, not when ops register

        b, (u, idx, like) = ctx.b, inputs
        tu, ti, _ = ctx.in_types
        work = "f32" if tu.dtype == "f16" else tu.dtype
        u = _to(b, u, tu.dtype, work)
        idx = b.op("Reshape", [_to(b, idx, ti.dtype, "s64"), b.ints([-1])])
        like_shape = b.op("Shape", [like])
        axis = opts["axis"]
        if axis is None:
            rank, k = 1, 0
            size = b.reduce("ReduceProd", like_shape, [0], True)
            u = b.op("Reshape", [u, b.ints([-1])])
            out_shape = size
        else:
            rank = tu.rank - ti.rank + 1
            k = _norm_axis(axis, rank)
            size = b.op("Slice", [like_shape, b.ints([k]), b.ints([k + 1])])
            u_shape = b.op("Shape", [u])
            parts = []
            if k:
                parts.append(b.op("Slice", [u_shape, b.ints([0]), b.ints([k])]))
            parts.append(b.ints([-1]))
            if k + 1 < rank:
                parts.append(b.op("Slice", [u_shape, b.ints([k + ti.rank]), b.ints([_I64_MAX])]))
            u = b.op("Reshape", [u, b.op("Concat", parts, axis=0)])
            out_shape = b.op(
                "Concat",
                [
                    *([b.op("Slice", [u_shape, b.ints([0]), b.ints([k])])] if k else []),
                    size,
                    *(
                        [b.op("Slice", [u_shape, b.ints([k + ti.rank]), b.ints([_I64_MAX])])]
                        if k + 1 < rank
                        else []
                    ),
                ],
                axis=0,
            )
        negative = b.op("Less", [idx, scalar(b, 0, "s64")])
        idx = b.op("Where", [negative, b.op("Add", [idx, size]), idx])
        idx = b.op("Reshape", [idx, b.ints([1] * k + [-1] + [1] * (rank - k - 1))])
        idx = b.op("Expand", [idx, b.op("Shape", [u])])
        zero = numpy_helper.from_array(np.zeros((1,), to_numpy_dtype(work)))
        zeros = b.op("ConstantOfShape", [out_shape], value=zero)
        out = b.op("ScatterElements", [zeros, idx, u], axis=k, reduction="add")
        if axis is None:
            out = b.op("Reshape", [out, like_shape])
        return _to(b, out, work, tu.dtype)

    def vjp(self, ctx, inputs, output, cot, opts):
        """take of the cotangent at the same indices; indices and `like` get None."""
        u, idx, _ = inputs
        return [_as_dtype_of(anp.take(cot, idx, axis=opts["axis"]), u), None, None]

    cases = [
        Case(
            "rows",
            lambda u, i, like: make_node("np.take_grad", [u, i, like], {"axis": 0}),
            [TensorType((None, 2, 3)), TensorType((None, 2), "s32"), TensorType((5, 3))],
            int_inputs={1: 5},
        ),
        Case(
            "flat",
            lambda u, i, like: make_node("np.take_grad", [u, i, like]),
            [TensorType((None, 2)), TensorType((None, 2), "s32"), TensorType((4, 3))],
            int_inputs={1: 12},
        ),
        Case(
            "columns_dynamic_batch",
            lambda u, i, like: make_node("np.take_grad", [u, i, like], {"axis": -1}),
            [TensorType((None, 4)), TensorType((4,), "s32"), TensorType((None, 6))],
            int_inputs={1: 6},
        ),
        Case(
            "dynamic_size",
            lambda u, i, like: make_node("np.take_grad", [u, i, like], {"axis": 0}),
            [TensorType((2, 3)), TensorType((2,), "s32"), TensorType((None, 3))],
            int_inputs={1: 1},
        ),
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

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent cast back (float to float); None across integers."""
        (x,) = inputs
        if not (_is_float_tensor(x) and is_float(opts["dtype"])):
            return [None]
        return [_as_dtype_of(cot, x)]

    def onnx(self, ctx, inputs, opts):
        src, dst = ctx.in_types[0].dtype, opts["dtype"]
        if dst == "pred":
            return truthy(ctx.b, inputs[0], src)
        return _to(ctx.b, inputs[0], src, dst)

    def tflite(self, ctx, inputs, opts):
        _src, dst = ctx.in_types[0].dtype, opts["dtype"]
        if dst == "pred":
            return _tfl_truthy(ctx.b, inputs[0])
        return ctx.b.cast(inputs[0], dst)

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

    def vjp(self, ctx, inputs, output, cot, opts):
        """The result does not depend on the input's values."""
        return [None]

    def onnx(self, ctx, inputs, opts):
        from onnx import numpy_helper  # onnx loads at lowering, not when ops register

        value = np.full((1,), opts["fill_value"], dtype=to_numpy_dtype(ctx.out_type.dtype))
        shape = ctx.b.op("Shape", [inputs[0]])
        return ctx.b.op("ConstantOfShape", [shape], value=numpy_helper.from_array(value))

    def tflite(self, ctx, inputs, opts):
        """FILL with the input's run-time shape (SHAPE)."""
        b, t = ctx.b, ctx.in_types[0]
        value = b.const(np.asarray(opts["fill_value"], to_numpy_dtype(ctx.out_type.dtype)))
        shape = b.op(
            "SHAPE",
            [inputs[0]],
            TensorType((t.rank,), "s32"),
            options=b.options("Shape", outType=b.s.TensorType.INT32),
        )
        return b.op("FILL", [shape, value], ctx.out_type)

    cases = [
        Case(
            "ones",
            lambda x: make_node("np.full_like", [x], {"fill_value": 1.0}),
            [TensorType((None, 3))],
        )
    ]


# ---------------------------------------------------------------------------
# basic indexing: x[index] with ints, slices, None (new axis) and Ellipsis, stored
# as option data (encode_index)


def _getitem_axis_cot(g: Any, x: Any, slices: list[slice], axis: int) -> Any:
    """Undo the slicing of `axis`: `g` is `x` sliced by `slices` except that the axes
    before `axis` are already full; the result has `axis` full too."""
    sl, d = slices[axis], x.shape[axis]
    step = 1 if sl.step is None else sl.step

    def zeros(region: slice) -> Any:
        view = (*(slice(None),) * axis, region, *slices[axis + 1 :])
        return anp.zeros_like(x[view], g.type.dtype)

    if d is not None:
        start, stop, step = sl.indices(d)
        length = len(range(start, stop, step))
        start = start if length else 0  # an empty region: all zeros
        if step != 1 and length > 1:
            rows = np.arange(start, stop, step, dtype=np.int32)
            return apply("np.take_grad", [g, rows, x], {"axis": axis})
        before, after = slice(0, start), slice(start + length, d)
        parts = [zeros(before)] if start > 0 else []
        parts.append(g)
        if start + length < d:
            parts.append(zeros(after))
    elif step == 1:
        parts = [zeros(slice(None, sl.start))] if sl.start not in (None, 0) else []
        parts.append(g)
        if sl.stop is not None:
            parts.append(zeros(slice(sl.stop, None)))
    elif step == -1 and sl.start is None and sl.stop is None:
        return g[(*(slice(None),) * axis, slice(None, None, -1))]
    else:
        raise ShapeError(
            f"the gradient of getitem with the strided slice {sl} over the dynamic axis {axis} "
            "is not defined (its positions depend on the run-time size)"
        )
    return parts[0] if len(parts) == 1 else anp.concatenate(parts, axis=axis)


def _slice_len(e: dict, d: int | None) -> int | None:
    if d is not None:
        return len(range(*slice(e["start"], e["stop"], e["step"]).indices(d)))
    if e["start"] is None and e["stop"] is None and e["step"] in (None, 1):
        return None
    return None


def _full_index(index: tuple, rank: int) -> list:
    """The index with its Ellipsis (or the missing trailing axes) as full slices."""
    index = list(index)
    used = sum(1 for e in index if e is not None and e != "...")
    full = [{"start": None, "stop": None, "step": None}] * (rank - used)
    if "..." in index:
        i = index.index("...")
        index[i : i + 1] = full
    else:
        index += full
    return index


@register
class Getitem(Primitive):
    name = "np.getitem"
    doc = "Basic indexing x[...] with ints, slices, None (new axis) and Ellipsis."
    options = {"index": Option(check=check_index, doc="the index entries")}

    def infer(self, types, opts, node):
        (t,) = types
        used = sum(1 for e in opts["index"] if e is not None and e != "...")
        if used > t.rank:
            raise ShapeError(f"too many indices ({used}) for a tensor of rank {t.rank}")
        index = _full_index(opts["index"], t.rank)
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
        return np.array(np.asarray(inputs[0])[decode_index(opts["index"])])

    def vjp(self, ctx, inputs, output, cot, opts):
        """Zeros of the input's shape with the cotangent in the indexed region.

        New axes are squeezed out and int axes restored as size 1; then, axis by axis,
        a step-1 region is padded with zeros shaped like the input's parts before and
        after it (so dynamic dims work), a full reversal is undone by reversing, and
        any other strided region of a static dim is scattered (take_grad).
        """
        (x,) = inputs
        if not _is_float_tensor(x):
            return [None]
        index = _full_index(opts["index"], x.ndim)
        new_axes, position = [], 0
        for e in index:
            if e is None:
                new_axes.append(position)
            if e is None or isinstance(e, dict):
                position += 1
        g = anp.squeeze(cot, tuple(new_axes)) if new_axes else cot
        entries = [e for e in index if e is not None]
        ints = tuple(i for i, e in enumerate(entries) if not isinstance(e, dict))
        if ints:
            g = anp.expand_dims(g, ints)
        # every entry as a slice (an int i is i:i+1), so g[...] and x[...] line up
        slices = [
            slice(e["start"], e["stop"], e["step"])
            if isinstance(e, dict)
            else slice(e, None if e == -1 else e + 1)
            for e in entries
        ]
        for axis, sl in enumerate(slices):
            if sl == slice(None) or sl == slice(None, None, 1):
                continue
            g = _getitem_axis_cot(g, x, slices, axis)
        return [_as_dtype_of(g, x)]

    def onnx(self, ctx, inputs, opts):
        """One Slice (ints are one-element slices), one Squeeze for the ints, one Unsqueeze."""
        b, x, rank = ctx.b, inputs[0], ctx.in_types[0].rank
        starts, ends, axes, steps = [], [], [], []
        ints: list[int] = []
        new_axes: list[int] = []
        axis = position = 0  # input axis, output position
        for e in _full_index(opts["index"], rank):
            if e is None:
                new_axes.append(position)
                position += 1
                continue
            if isinstance(e, dict):
                step = 1 if e["step"] is None else e["step"]
                if (e["start"], e["stop"], step) != (None, None, 1):
                    # None ends clamp to the first/last element in the step's direction
                    starts.append(
                        e["start"] if e["start"] is not None else 0 if step > 0 else _I64_MAX
                    )
                    ends.append(
                        e["stop"] if e["stop"] is not None else _I64_MAX if step > 0 else _I64_MIN
                    )
                    axes.append(axis)
                    steps.append(step)
                position += 1
            else:
                starts.append(e)
                ends.append(_I64_MAX if e == -1 else e + 1)
                axes.append(axis)
                steps.append(1)
                ints.append(axis)
            axis += 1
        if axes:
            x = b.op("Slice", [x, b.ints(starts), b.ints(ends), b.ints(axes), b.ints(steps)])
        if ints:
            x = b.op("Squeeze", [x, b.ints(ints)])
        if new_axes:
            x = b.op("Unsqueeze", [x, b.ints(new_axes)])
        return x

    cases = [
        Case(
            "mixed",
            lambda x: make_node(
                "np.getitem", [x], {"index": encode_index((Ellipsis, slice(1, None), None, 0))}
            ),
            [TensorType((None, 3, 4))],
        )
    ]
