"""Activation layers: Axon's 22 element-wise activations and `activation(x, name)`.

Each activation is an op of its own (op_name = its name, as in Axon, so a
`dense(..., activation="relu")` adds a separate `relu_0` node). Formulas and
defaults follow Axon.Activations; see spec/ops.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import numpy as anp
from ..dtypes import TensorType
from ..errors import OptionError, ShapeError
from ..ir import Axon
from ..registry import Case, Op, Option, check_float, check_int, layer_api, register
from ..shape_inference import make_node

_erf = np.vectorize(math.erf, otypes=[np.float64])

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _log_sumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x, 0.0)


def _hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.clip(alpha * x + beta, 0.0, 1.0)


# name -> (formula(x, **opts), options, doc). Formulas compute in float64 and the
# result is cast back to the input dtype.
_ALPHA = {"alpha": Option(1.0, check_float(), "the negative-side scale")}
_AXIS = {"axis": Option(-1, check_int(), "the axis to normalise over")}
_HARD = {
    "alpha": Option(0.2, check_float(), "slope"),
    "beta": Option(0.2, check_float(), "offset"),
}

ACTIVATIONS: dict[str, tuple[Callable[..., np.ndarray], dict[str, Option], str]] = {
    "celu": (
        lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(x / alpha)),
        _ALPHA,
        "Continuously-differentiable ELU: x if x > 0 else alpha * (exp(x / alpha) - 1).",
    ),
    "elu": (
        lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(x)),
        _ALPHA,
        "Exponential linear unit: x if x > 0 else alpha * (exp(x) - 1).",
    ),
    "exp": (lambda x: np.exp(x), {}, "Exponential: exp(x)."),
    "gelu": (
        lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
        {},
        "Gaussian error linear unit, exact erf form: 0.5 x (1 + erf(x / sqrt 2)).",
    ),
    "hard_sigmoid": (
        _hard_sigmoid,
        _HARD,
        "Hard sigmoid: clip(alpha x + beta, 0, 1); Axon's defaults alpha = beta = 0.2.",
    ),
    "hard_silu": (
        lambda x, alpha, beta: x * _hard_sigmoid(x, alpha, beta),
        _HARD,
        "Hard SiLU: x * hard_sigmoid(x).",
    ),
    "hard_tanh": (lambda x: np.clip(x, -1.0, 1.0), {}, "Hard tanh: clip(x, -1, 1)."),
    "leaky_relu": (
        lambda x, alpha: np.where(x > 0, x, alpha * x),
        {"alpha": Option(0.01, check_float(), "the negative-side slope")},
        "Leaky ReLU: x if x > 0 else alpha * x (alpha 0.01).",
    ),
    "linear": (lambda x: x, {}, "Identity."),
    "log_sigmoid": (lambda x: -_softplus(-x), {}, "log(sigmoid(x)) = -softplus(-x)."),
    "log_softmax": (_log_softmax, _AXIS, "log(softmax(x)) along `axis`."),
    "log_sumexp": (
        _log_sumexp,
        _AXIS,
        "log(sum(exp(x))) along `axis`, keeping the reduced axis (size 1).",
    ),
    "mish": (lambda x: x * np.tanh(_softplus(x)), {}, "Mish: x * tanh(softplus(x))."),
    "relu": (lambda x: np.maximum(x, 0.0), {}, "Rectified linear unit: max(x, 0)."),
    "relu6": (lambda x: np.clip(x, 0.0, 6.0), {}, "ReLU capped at 6: clip(x, 0, 6)."),
    "selu": (
        lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
        {},
        "Scaled ELU with the self-normalising constants (1.0507, 1.67326).",
    ),
    "sigmoid": (_sigmoid, {}, "Logistic sigmoid: 1 / (1 + exp(-x))."),
    "silu": (lambda x: x * _sigmoid(x), {}, "Sigmoid linear unit (swish): x * sigmoid(x)."),
    "softmax": (_softmax, _AXIS, "Softmax along `axis` (default the last)."),
    "softplus": (_softplus, {}, "Softplus: log(1 + exp(x))."),
    "softsign": (lambda x: x / (1.0 + np.abs(x)), {}, "Softsign: x / (1 + |x|)."),
    "tanh": (lambda x: np.tanh(x), {}, "Hyperbolic tangent."),
}


def _lower(b: Any, act: str, x: str, opts: dict[str, Any], dtype: str) -> str:
    """ONNX nodes computing activation `act` of `x` (float dtype `dtype`)."""
    one = b.const(1.0, dtype, "one")
    half = b.const(0.5, dtype, "half")
    if act == "celu":
        return b.op("Celu", [x], alpha=float(opts["alpha"]))
    if act == "elu":
        return b.op("Elu", [x], alpha=float(opts["alpha"]))
    if act == "gelu":
        scaled = b.op("Mul", [x, b.const(1 / math.sqrt(2.0), dtype, "inv_sqrt2")])
        erf = b.op("Erf", [scaled])
        return b.op("Mul", [b.op("Mul", [x, half]), b.op("Add", [erf, one])])
    if act in ("hard_sigmoid", "hard_silu"):
        hs = b.op("HardSigmoid", [x], alpha=float(opts["alpha"]), beta=float(opts["beta"]))
        return hs if act == "hard_sigmoid" else b.op("Mul", [x, hs])
    if act == "hard_tanh":
        return b.clip(x, -1.0, 1.0, dtype)
    if act == "leaky_relu":
        return b.op("LeakyRelu", [x], alpha=float(opts["alpha"]))
    if act == "log_sigmoid":
        return b.op("Neg", [b.op("Softplus", [b.op("Neg", [x])])])
    if act == "log_softmax":
        return b.op("LogSoftmax", [x], axis=opts["axis"])
    if act == "log_sumexp":
        return b.reduce("ReduceLogSumExp", x, [opts["axis"]], keepdims=True)
    if act == "mish":
        return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])])
    if act == "relu6":
        return b.clip(x, 0.0, 6.0, dtype)
    if act == "selu":
        return b.op("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if act == "silu":
        return b.op("Mul", [x, b.op("Sigmoid", [x])])
    if act == "softmax":
        return b.op("Softmax", [x], axis=opts["axis"])
    simple = {
        "exp": "Exp",
        "linear": "Identity",
        "relu": "Relu",
        "sigmoid": "Sigmoid",
        "softplus": "Softplus",
        "softsign": "Softsign",
        "tanh": "Tanh",
    }
    return b.op(simple[act], [x])


def _softplus_tflite(b: Any, x: int) -> int:
    """max(x, 0) + log(1 + exp(-|x|)): softplus without overflow (TFLite has no SOFTPLUS)."""
    tail = b.unary(
        "LOG", b.binary("ADD", b.unary("EXP", b.unary("NEG", b.unary("ABS", x))), b.scalar(1.0, x))
    )
    return b.binary("ADD", b.binary("MAXIMUM", x, b.scalar(0.0, x)), tail)


def _where_positive(b: Any, x: int, negative: int) -> int:
    """x where x > 0, else `negative`."""
    cond = b.compare("GREATER", x, b.scalar(0.0, x))
    return b.op("SELECT_V2", [cond, x, negative], b.type_of(x))


def _lower_tflite(b: Any, act: str, x: int, opts: dict[str, Any]) -> int:
    """TFLite operators computing activation `act` of the float tensor `x`."""
    simple = {
        "exp": "EXP",
        "relu": "RELU",
        "relu6": "RELU6",
        "sigmoid": "LOGISTIC",
        "tanh": "TANH",
        "hard_tanh": "RELU_N1_TO_1",
    }
    if act in simple:
        return b.unary(simple[act], x)
    if act == "linear":
        return x
    if act == "gelu":
        return b.unary("GELU", x, b.options("Gelu", approximate=False))
    if act == "leaky_relu":
        return b.unary("LEAKY_RELU", x, b.options("LeakyRelu", alpha=float(opts["alpha"])))
    if act == "elu" and opts["alpha"] == 1.0:
        return b.unary("ELU", x)
    if act in ("elu", "celu", "selu"):
        alpha = SELU_ALPHA if act == "selu" else opts["alpha"]
        inner = b.binary("MUL", x, b.scalar(1.0 / alpha, x)) if act == "celu" else x
        em1 = b.binary("SUB", b.unary("EXP", inner), b.scalar(1.0, x))
        out = _where_positive(b, x, b.binary("MUL", em1, b.scalar(alpha, x)))
        return b.binary("MUL", out, b.scalar(SELU_SCALE, x)) if act == "selu" else out
    if act in ("hard_sigmoid", "hard_silu"):
        z = b.binary(
            "ADD", b.binary("MUL", x, b.scalar(opts["alpha"], x)), b.scalar(opts["beta"], x)
        )
        hs = b.clip(z, 0.0, 1.0)
        return hs if act == "hard_sigmoid" else b.binary("MUL", x, hs)
    if act == "softplus":
        return _softplus_tflite(b, x)
    if act == "log_sigmoid":
        return b.unary("NEG", _softplus_tflite(b, b.unary("NEG", x)))
    if act == "mish":
        return b.binary("MUL", x, b.unary("TANH", _softplus_tflite(b, x)))
    if act == "silu":
        return b.binary("MUL", x, b.unary("LOGISTIC", x))
    if act == "softsign":
        denom = b.binary("ADD", b.unary("ABS", x), b.scalar(1.0, x))
        return b.binary("DIV", x, denom)
    if act == "softmax":
        return b.softmax(x, opts["axis"])
    if act == "log_softmax":
        return b.on_last_axis(
            x, opts["axis"], lambda v: b.unary("LOG_SOFTMAX", v, b.options("LogSoftmax"))
        )
    # log_sumexp
    axis = opts["axis"]
    m = b.reduce("REDUCE_MAX", x, [axis], keepdims=True)
    total = b.reduce("SUM", b.unary("EXP", b.binary("SUB", x, m)), [axis], keepdims=True)
    return b.binary("ADD", m, b.unary("LOG", total))


def _sig(x: Any) -> Any:
    return 0.5 * (anp.tanh(0.5 * x) + 1.0)


def _vjp(act: str, x: Any, y: Any, cot: Any, opts: dict[str, Any]) -> Any:
    """The cotangent of an activation's input: cot times the derivative at x (y = f(x))."""
    if act in ("log_softmax", "log_sumexp", "softmax"):
        axis = opts["axis"]
        if act == "softmax":
            return y * (cot - anp.sum(cot * y, axis=axis, keepdims=True))
        if act == "log_softmax":
            return cot - anp.exp(y) * anp.sum(cot, axis=axis, keepdims=True)
        return cot * anp.exp(x - y)
    if act in ("celu", "elu", "leaky_relu"):
        alpha = opts["alpha"]
        slope = {
            "celu": lambda: anp.exp(x / alpha),
            "elu": lambda: alpha * anp.exp(x),
            "leaky_relu": lambda: alpha,
        }[act]()
        return cot * anp.where(x > 0, 1.0, slope)
    if act in ("hard_sigmoid", "hard_silu"):
        z = opts["alpha"] * x + opts["beta"]
        d_hs = anp.where((z > 0) & (z < 1), opts["alpha"], 0.0)
        if act == "hard_sigmoid":
            return cot * d_hs
        return cot * (anp.clip(z, 0.0, 1.0) + x * d_hs)
    derivative = {
        "exp": lambda: y,
        "gelu": lambda: (
            0.5 * (1.0 + anp.erf(x * (1 / math.sqrt(2.0))))
            + x * anp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        ),
        "hard_tanh": lambda: anp.where((x > -1) & (x < 1), 1.0, 0.0),
        "linear": lambda: None,
        "log_sigmoid": lambda: 1.0 - _sig(x),
        "mish": lambda: _mish_derivative(x),
        "relu": lambda: anp.where(x > 0, 1.0, 0.0),
        "relu6": lambda: anp.where((x > 0) & (x < 6), 1.0, 0.0),
        "selu": lambda: SELU_SCALE * anp.where(x > 0, 1.0, SELU_ALPHA * anp.exp(x)),
        "sigmoid": lambda: y * (1.0 - y),
        "silu": lambda: _sig(x) * (1.0 + x * (1.0 - _sig(x))),
        "softplus": lambda: _sig(x),
        "softsign": lambda: 1.0 / anp.square(1.0 + anp.abs(x)),
        "tanh": lambda: 1.0 - y * y,
    }[act]()
    return cot if derivative is None else cot * derivative


def _mish_derivative(x: Any) -> Any:
    sp = anp.log1p(anp.exp(-anp.abs(x))) + anp.maximum(x, 0.0)
    t = anp.tanh(sp)
    return t + x * (1.0 - t * t) * _sig(x)


class Activation(Op):
    """Shared rules of the element-wise activations (one subclass per activation)."""

    family = "activation"
    formula: Callable[..., np.ndarray]

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        if not np.issubdtype(x.dtype, np.floating):
            return [None]
        return [_vjp(self.name, x, output, cot, opts)]

    def onnx(self, ctx, inputs, opts):
        (x,) = inputs
        t = ctx.in_types[0]
        dtype = t.dtype if t.dtype in ("f16", "f32", "f64") else "f32"
        if dtype != t.dtype:
            x = ctx.b.cast(x, dtype)
        return _lower(ctx.b, self.name, x, opts, dtype)

    def tflite(self, ctx, inputs, opts):
        (x,) = inputs
        t = ctx.in_types[0]
        if t.dtype == "f64":
            raise ctx.unsupported("f64 activations: LiteRT's kernels compute in f32")
        return _lower_tflite(
            ctx.b, self.name, ctx.b.cast(x, t.dtype if t.dtype == "f16" else "f32"), opts
        )

    def infer(self, types, opts, node):
        (t,) = types
        if "axis" in opts:
            axis = opts["axis"]
            if not -t.rank <= axis < t.rank:
                raise ShapeError(f"axis {axis} is out of range for an input of rank {t.rank}")
            if self.name == "log_sumexp":
                shape = list(t.shape)
                shape[axis] = 1
                return TensorType(tuple(shape), t.dtype)
        return t

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        out = type(self).formula(x.astype(np.float64), **opts)
        return np.asarray(out).astype(x.dtype if x.dtype.kind == "f" else np.float32)


def _define(act: str) -> type[Activation]:
    formula, options, doc = ACTIVATIONS[act]
    cls = type(
        act.title().replace("_", ""),
        (Activation,),
        {
            "name": act,
            "doc": doc,
            "options": options,
            "formula": staticmethod(formula),
            "cases": [
                Case("rank2", lambda x, a=act: activation(x, a), [TensorType((None, 6))]),
                Case("rank3", lambda x, a=act: activation(x, a), [TensorType((None, 2, 5))]),
            ],
        },
    )
    register(cls)

    def layer(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
        return make_node(act, [x], opts, name=name)

    layer.__name__ = act
    layer.__doc__ = f"{doc}\n\nOptions: name" + "".join(f", {k}" for k in options) + "."
    layer_api(layer, name=act)
    return cls


for _act in ACTIVATIONS:
    _define(_act)


@layer_api
def activation(x: Axon, activation: str, *, name: str | None = None, **opts: Any) -> Axon:
    """Apply the activation named `activation` (e.g. "relu", "softmax") as its own layer."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise OptionError(
            f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}"
        )
    return make_node(activation, [x], opts, name=name)


def apply_activation(x: Axon, act: str | None) -> Axon:
    """For layers with an `activation` option: add the activation node after `x`."""
    return x if act is None else activation(x, act)
