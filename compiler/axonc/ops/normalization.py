"""Normalization layers: batch_norm, instance_norm, layer_norm, group_norm, rms_norm.

Semantics follow Axon 0.8.1 (Axon.Layers, observed in tests/fixtures/axon-golden):
`channel_index` (default -1) names the feature axis, every parameter is 1-D `{C}`,
variances are biased, `y = gamma * (x - mean) / sqrt(var + epsilon) + beta`.
batch_norm and instance_norm own running `mean` / `var` state: inference
normalises with it, train mode normalises with batch statistics and reports
`new = momentum * old + (1 - momentum) * batch` (momentum weighs the OLD value,
as in ONNX BatchNormalization, the opposite of PyTorch). Default gamma
initializers are Axon's: glorot_uniform for batch/instance/layer norm, ones for
group_norm and rms_norm. Everything is computed in float64 and cast back to the
input dtype.

ONNX lowering: every op is decomposed into basic ops (ReduceMean, Sub, Mul,
Sqrt, Div, Add) computed in the input dtype, with the {C} parameter vectors
reshaped to broadcast along the channel axis; batch_norm and instance_norm
with running statistics on the ONNX channel axis 1 use BatchNormalization.
ONNX's LayerNormalization normalises over every axis from `axis` on (not the
channel axis alone) and GroupNormalization changed meaning between opsets 18
and 21, so neither is used.

Gradients (`vjp`): with running statistics (inference, `use_running_stats`) the
layer is affine in x, so dx = cot * gamma / sqrt(var + eps) and the state gets
no gradient. With statistics of the input itself (train-mode batch/instance
norm, layer/group/rms norm in both modes) the gradient flows through the mean
and variance as in Axon: with xhat = (x - M(x)) / sqrt(M((x - M(x))^2) + eps)
and M the mean over the normalisation set broadcast back,
dx = (g - M(g) - xhat * M(g * xhat)) / sqrt(var + eps) for g = cot * gamma.
The state update is a side output: no gradient flows into or out of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import TensorType, float_or_f32_np, is_float
from ..errors import DTypeError, ShapeError, StateError
from ..initializers import check_initializer
from ..interpreter import layer_param
from ..ir import Axon
from ..registry import (
    Case,
    Op,
    Option,
    ParamSpec,
    check_bool,
    check_choice,
    check_float,
    check_int,
    layer_api,
    register,
)
from ..shape_inference import make_node


def _norm_axis(t: TensorType, channel_index: int) -> int:
    """The non-negative channel axis, or a ShapeError if `channel_index` is out of range."""
    if not -t.rank <= channel_index < t.rank:
        raise ShapeError(
            f"channel_index {channel_index} is out of range for an input of rank {t.rank} "
            f"(shape {t!r})"
        )
    return channel_index % t.rank


def _num_channels(t: TensorType, channel_index: int) -> int:
    """The static size of the channel axis (the parameters' shape needs it)."""
    c = t.shape[_norm_axis(t, channel_index)]
    if c is None:
        raise ShapeError(
            f"the channel axis (channel_index {channel_index}) of {t!r} is dynamic; "
            "its size must be known to create the layer's parameters"
        )
    return c


def _vector(params: dict[str, Any], key: str, c: int, ctx: Any) -> np.ndarray:
    """A 1-D parameter or state vector of `c` values, as float64."""
    value = np.asarray(layer_param(params, key, ctx), dtype=np.float64)
    if value.size != c:
        raise StateError(
            f"layer {ctx.name!r}: {key!r} has shape {value.shape} but the input has {c} channels; "
            f"expected shape ({c},)"
        )
    return value.reshape(c)


def _broadcast(vec: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Reshape a {C} vector so it broadcasts along `axis` of a rank-`rank` tensor."""
    shape = [1] * rank
    shape[axis] = vec.shape[0]
    return vec.reshape(shape)


def _channel_vectors(
    ctx: Any, params: dict[str, Any], x: np.ndarray, axis: int, *keys: str
) -> list[np.ndarray]:
    """The named per-channel vectors as float64, shaped to broadcast along `axis` of `x`."""
    return [_broadcast(_vector(params, k, x.shape[axis], ctx), x.ndim, axis) for k in keys]


def _onnx_float(ctx: Any, x: str) -> tuple[str, str]:
    """The input value in a float dtype (f32 for non-floats) and that dtype's name."""
    t = ctx.in_types[0]
    dtype = t.dtype if t.dtype in ("f16", "f32", "f64") else "f32"
    return (x if dtype == t.dtype else ctx.b.cast(x, dtype)), dtype


def _onnx_vector(ctx: Any, key: str, dtype: str, rank: int, axis: int) -> str:
    """Parameter/state `key` {C} in `dtype`, shaped to broadcast along `axis` (of `rank` dims)."""
    b = ctx.b
    vec = ctx.param(key)
    if dtype != "f32":
        vec = b.cast(vec, dtype)
    trailing = rank - 1 - axis
    if trailing == 0:
        return vec
    return b.op("Reshape", [vec, b.ints([-1] + [1] * trailing, "channel_shape")])


def _onnx_moments(b: Any, x: str, axes: tuple[int, ...]) -> tuple[str, str, str]:
    """(mean, x - mean, biased variance) over `axes`, kept as size-1 dims."""
    mean = b.reduce("ReduceMean", x, axes, keepdims=True)
    centered = b.op("Sub", [x, mean])
    var = b.reduce("ReduceMean", b.op("Mul", [centered, centered]), axes, keepdims=True)
    return mean, centered, var


def _onnx_normalize(
    b: Any, centered: str, var: str, gamma: str, beta: str, eps: float, dtype: str
) -> str:
    """gamma * centered / sqrt(var + eps) + beta."""
    std = b.op("Sqrt", [b.op("Add", [var, b.const(eps, dtype, "epsilon")])])
    return b.op("Add", [b.op("Mul", [b.op("Div", [centered, std]), gamma]), beta])


def _param_along(ctx: Any, key: str, x: Any, axis: int) -> Any:
    """Parameter/state `key` {C} as a tensor in x's dtype, shaped to broadcast along `axis`."""
    vec = ctx.param(key)
    shape = [1] * x.ndim
    shape[axis] = vec.shape[0]
    return anp.reshape(vec.astype(x.dtype), tuple(shape))


def _sum_except(t: Any, axis: int) -> Any:
    """Sum over every axis but `axis`: a {C} vector."""
    return anp.sum(t, axis=tuple(i for i in range(t.ndim) if i != axis))


def _affine_grads(ctx: Any, cot: Any, normed: Any, axis: int, keys: tuple[str, ...]) -> None:
    """Gradients of gamma (cot * normed summed per channel) and beta (cot summed) if wanted."""
    for key, term in (("gamma", lambda: cot * normed), ("beta", lambda: cot)):
        if key in keys and ctx.wants_param(key):
            grad = _sum_except(term(), axis)
            ctx.add_param_grad(key, grad.astype(ctx.param(key).dtype))


def _standardized_vjp(
    ctx: Any, x: Any, cot: Any, axis: int, eps: float, set_mean: Callable[[Any], Any]
) -> Any:
    """Input cotangent of gamma * xhat + beta, xhat standardised with `set_mean` statistics.

    `set_mean(t)` is the mean of t over each normalisation set, broadcast back to
    t's shape. Also adds the gamma and beta gradients.
    """
    centered = x - set_mean(x)
    inv_std = 1.0 / anp.sqrt(set_mean(centered * centered) + eps)
    xhat = centered * inv_std
    _affine_grads(ctx, cot, xhat, axis, ("gamma", "beta"))
    g = cot * _param_along(ctx, "gamma", x, axis)
    return (inv_std * (g - set_mean(g) - xhat * set_mean(g * xhat))).astype(x.dtype)


def _axes_mean(axes: tuple[int, ...]) -> Callable[[Any], Any]:
    """The set mean over `axes` (kept as size-1 dims, so it broadcasts back)."""
    return lambda t: anp.mean(t, axis=axes, keepdims=True)


# ---- TFLite lowering: f32 element-wise ops; running statistics folded at export --------


def _tfl_float(ctx: Any, x: int) -> int:
    if ctx.in_types[0].dtype != "f32":
        raise ctx.unsupported(f"{ctx.in_types[0].dtype} input: LiteRT normalises f32 tensors")
    return x


def _tfl_vector(b: Any, vec: np.ndarray, rank: int, axis: int) -> int:
    """A {C} vector as an f32 constant shaped to broadcast along `axis`."""
    return b.const(np.asarray(vec, np.float32).reshape((-1,) + (1,) * (rank - 1 - axis)))


def _tfl_standardize(b: Any, x: int, axes: tuple[int, ...], eps: float) -> int:
    """(x - mean) / sqrt(var + eps) over `axes` (biased variance)."""
    centered = b.binary("SUB", x, b.reduce("MEAN", x, axes, keepdims=True))
    var = b.reduce("MEAN", b.binary("MUL", centered, centered), axes, keepdims=True)
    return b.binary("MUL", centered, b.unary("RSQRT", b.binary("ADD", var, b.scalar(eps, x))))


def _tfl_affine(ctx: Any, y: int, rank: int, axis: int) -> int:
    b = ctx.b
    y = b.binary("MUL", y, _tfl_vector(b, ctx.value("gamma"), rank, axis))
    return b.binary("ADD", y, _tfl_vector(b, ctx.value("beta"), rank, axis))


_GAMMA_GLOROT = Option(
    "glorot_uniform", check_initializer, "gamma initializer (Axon's default: glorot_uniform)"
)
_GAMMA_ONES = Option("ones", check_initializer, "gamma initializer (Axon's default: ones)")
_BETA = Option("zeros", check_initializer, "beta initializer")
_CHANNEL_INDEX = Option(-1, check_int(), "the feature (channel) axis; -1 is channels last")
_EPSILON = Option(1e-5, check_float(lo=0.0), "numerical stability term added to the variance")
_MOMENTUM = Option(
    0.1,
    check_float(lo=0.0, hi=1.0),
    "weight of the OLD running value in new = momentum*old + (1-momentum)*batch",
)
_USE_RUNNING_STATS = Option(
    False,
    check_bool,
    "axonc extension: in train mode normalise with the running mean/var and leave them "
    "unchanged (a frozen batch norm inside a trained model)",
)


class _Norm(Op):
    """Shared shape rule: a float input whose channel axis exists; output = input type."""

    family = "normalization"
    min_rank = 1

    def infer(self, types, opts, node):
        (t,) = types
        if not is_float(t.dtype):
            raise DTypeError(f"{self.name} needs a floating-point input, got {t!r}")
        if t.rank < self.min_rank:
            raise ShapeError(
                f"{self.name} needs an input of rank >= {self.min_rank}, got {t!r} (rank {t.rank})"
            )
        _norm_axis(t, opts["channel_index"])
        return t

    def affine_params(self, types: list[Any], opts: dict[str, Any]) -> list[ParamSpec]:
        c = _num_channels(types[0], opts["channel_index"])
        return [
            ParamSpec(("gamma",), (c,), opts["gamma_initializer"]),
            ParamSpec(("beta",), (c,), opts["beta_initializer"]),
        ]


class _StatefulNorm(_Norm):
    """batch_norm / instance_norm: gamma, beta and running mean/var state.

    Train mode (unless `use_running_stats`) normalises with the statistics of
    the current input over `reduction_axes` and reports the running-state update
    via `ctx.set_state`; inference mode (and `use_running_stats=True`) normalises
    with the running statistics and updates nothing.
    """

    options = {
        "gamma_initializer": _GAMMA_GLOROT,
        "beta_initializer": _BETA,
        "channel_index": _CHANNEL_INDEX,
        "epsilon": _EPSILON,
        "momentum": _MOMENTUM,
        "use_running_stats": _USE_RUNNING_STATS,
    }

    # True: statistics per sample (instance norm); False: over the batch too.
    per_instance: ClassVar[bool] = False

    def reduction_axes(self, rank: int, axis: int) -> tuple[int, ...]:
        """Every axis but the channel axis (and the batch axis when per instance)."""
        start = 1 if self.per_instance else 0
        return tuple(i for i in range(start, rank) if i != axis)

    def params(self, types, opts, mode, node):
        c = _num_channels(types[0], opts["channel_index"])
        return [
            *self.affine_params(types, opts),
            ParamSpec(("mean",), (c,), "zeros", kind="state"),
            ParamSpec(("var",), (c,), "ones", kind="state"),
        ]

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        xd = x.astype(np.float64)
        axis = opts["channel_index"] % x.ndim
        gamma, beta, ra_mean, ra_var = _channel_vectors(
            ctx, params, x, axis, "gamma", "beta", "mean", "var"
        )
        if ctx.mode == "train" and not opts["use_running_stats"]:
            axes = self.reduction_axes(x.ndim, axis)
            mean = xd.mean(axis=axes, keepdims=True)
            var = xd.var(axis=axes, keepdims=True)
            m = opts["momentum"]
            state_dtype = np.asarray(params["mean"]).dtype
            for key, old, new in (("mean", ra_mean, mean), ("var", ra_var, var)):
                updated = np.squeeze(m * old + (1.0 - m) * new, axis=axes)
                ctx.set_state(key, updated.astype(state_dtype))
        else:
            mean, var = ra_mean, ra_var
        out = gamma / np.sqrt(var + opts["epsilon"]) * (xd - mean) + beta
        return out.astype(float_or_f32_np(x.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        axis, eps = opts["channel_index"] % x.ndim, opts["epsilon"]
        if ctx.mode == "train" and not opts["use_running_stats"]:
            set_mean = _axes_mean(self.reduction_axes(x.ndim, axis))
            return [_standardized_vjp(ctx, x, cot, axis, eps, set_mean)]
        mean, var = (_param_along(ctx, k, x, axis) for k in ("mean", "var"))
        inv_std = 1.0 / anp.sqrt(var + eps)
        _affine_grads(ctx, cot, (x - mean) * inv_std, axis, ("gamma", "beta"))
        return [(cot * _param_along(ctx, "gamma", x, axis) * inv_std).astype(x.dtype)]

    def onnx(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        x, dtype = _onnx_float(ctx, inputs[0])
        axis, eps = opts["channel_index"] % t.rank, opts["epsilon"]
        if ctx.mode != "train" or opts["use_running_stats"]:
            if axis == 1:
                names = [ctx.param(k) for k in ("gamma", "beta", "mean", "var")]
                if dtype != "f32":
                    names = [b.cast(v, dtype) for v in names]
                return b.op("BatchNormalization", [x, *names], epsilon=float(eps))
            mean, var = (_onnx_vector(ctx, k, dtype, t.rank, axis) for k in ("mean", "var"))
            centered = b.op("Sub", [x, mean])
        else:
            axes = self.reduction_axes(t.rank, axis)
            mean, centered, var = _onnx_moments(b, x, axes)
            c = t.shape[axis]
            state_shape = (t.shape[0], c) if self.per_instance else (c,)
            m = opts["momentum"]
            for key, batch in (("mean", mean), ("var", var)):
                flat = b.op("Reshape", [batch, b.ints([-1, c] if self.per_instance else [c])])
                if dtype != "f32":
                    flat = b.cast(flat, "f32")
                old = b.op("Mul", [ctx.param(key), b.const(m, "f32", "momentum")])
                new = b.op("Mul", [flat, b.const(1.0 - m, "f32", "one_minus_momentum")])
                ctx.set_state(key, b.op("Add", [old, new]), TensorType(state_shape, "f32"))
        gamma, beta = (_onnx_vector(ctx, k, dtype, t.rank, axis) for k in ("gamma", "beta"))
        return _onnx_normalize(b, centered, var, gamma, beta, eps, dtype)

    def tflite(self, ctx, inputs, opts):
        """Running statistics folded into one scale and one shift: x * scale + shift."""
        b, t = ctx.b, ctx.in_types[0]
        x = _tfl_float(ctx, inputs[0])
        axis = opts["channel_index"] % t.rank
        gamma, beta, mean, var = (
            np.asarray(ctx.value(k), np.float64) for k in ("gamma", "beta", "mean", "var")
        )
        scale = gamma / np.sqrt(var + opts["epsilon"])
        y = b.binary("MUL", x, _tfl_vector(b, scale, t.rank, axis))
        return b.binary("ADD", y, _tfl_vector(b, beta - mean * scale, t.rank, axis))


@register
class BatchNorm(_StatefulNorm):
    """Batch normalization over every axis but the channel axis.

    State `mean`/`var` {C}. In train mode the batch variance is the biased one
    and the returned state keeps shape {C} (Axon squeezes every size-1 axis, so
    with C == 1 it would return a scalar; axonc keeps the declared shape).
    `use_running_stats=True` (an axonc option, default False) makes train mode
    normalise with the running statistics and not update them, the explicit way
    to keep a batch norm fixed while the rest of the model trains.
    """

    name = "batch_norm"
    doc = "gamma * (x - mean) / sqrt(var + eps) + beta; train: batch stats, running-stat update."
    cases = [
        Case("rank2", lambda x: batch_norm(x), [TensorType((None, 6))]),
        Case("rank4_channels_last", lambda x: batch_norm(x), [TensorType((None, 4, 4, 3))]),
        Case(
            "rank4_channels_first",
            lambda x: batch_norm(x, channel_index=1),
            [TensorType((None, 3, 4, 4))],
        ),
        Case(
            "momentum_eps",
            lambda x: batch_norm(x, momentum=0.3, epsilon=1e-3),
            [TensorType((None, 2, 5))],
        ),
        Case(
            "use_running_stats",
            lambda x: batch_norm(x, use_running_stats=True),
            [TensorType((None, 4, 3))],
        ),
        Case(
            "rank3_channels_first",
            lambda x: batch_norm(x, channel_index=1),
            [TensorType((None, 3, 5))],
        ),
        Case(
            "rank5_channels_first_dynamic_spatial",
            lambda x: batch_norm(x, channel_index=1, momentum=0.5),
            [TensorType((None, 2, None, 3, 2))],
        ),
        Case("rank5_channels_last", lambda x: batch_norm(x), [TensorType((None, 2, 3, 2, 4))]),
        Case(
            "channel_index_2_of_4",
            lambda x: batch_norm(x, channel_index=2),
            [TensorType((None, 2, 3, 2))],
        ),
    ]


@register
class InstanceNorm(_StatefulNorm):
    """Instance normalization: per-(sample, channel) statistics over the spatial axes.

    Needs rank >= 3. Inference normalises with the running `mean`/`var` {C}.
    Axon quirk, reproduced: the train-mode state update is computed per sample,
    so the returned `mean`/`var` have shape {N, C}, not {C} (Axon additionally
    squeezes size-1 axes, so N == 1 gives {C}; axonc always returns {N, C}).
    Feeding such state back makes the next call raise a StateError, as it fails
    in Axon.
    """

    name = "instance_norm"
    doc = "gamma * (x - mean) / sqrt(var + eps) + beta; train: per-instance spatial stats."
    min_rank = 3
    per_instance = True
    cases = [
        Case("rank4_channels_last", lambda x: instance_norm(x), [TensorType((None, 4, 4, 3))]),
        Case(
            "rank4_channels_first",
            lambda x: instance_norm(x, channel_index=1),
            [TensorType((None, 3, 4, 4))],
        ),
        Case("rank3", lambda x: instance_norm(x), [TensorType((None, 5, 2))]),
        Case(
            "rank5_dynamic_spatial",
            lambda x: instance_norm(x, momentum=0.7),
            [TensorType((None, None, 3, 2, 2))],
        ),
        Case(
            "use_running_stats_channels_first",
            lambda x: instance_norm(x, channel_index=1, use_running_stats=True),
            [TensorType((None, 3, 4))],
        ),
    ]


@register
class LayerNorm(_Norm):
    """Layer normalization: statistics over the channel axis only; same in both modes."""

    name = "layer_norm"
    doc = "gamma * (x - mean) / sqrt(var + eps) + beta with stats over the channel axis."
    options = {
        "gamma_initializer": _GAMMA_GLOROT,
        "beta_initializer": _BETA,
        "channel_index": _CHANNEL_INDEX,
        "epsilon": _EPSILON,
    }
    cases = [
        Case("rank2", lambda x: layer_norm(x), [TensorType((None, 6))]),
        Case("rank3", lambda x: layer_norm(x), [TensorType((None, 3, 4))]),
        Case(
            "rank3_channel_index_1_eps",
            lambda x: layer_norm(x, channel_index=1, epsilon=1e-3),
            [TensorType((None, 4, 3))],
        ),
        Case(
            "rank4_channel_index_1",
            lambda x: layer_norm(x, channel_index=1),
            [TensorType((None, 3, 2, 2))],
        ),
    ]

    def params(self, types, opts, mode, node):
        return self.affine_params(types, opts)

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        xd = x.astype(np.float64)
        axis = opts["channel_index"] % x.ndim
        gamma, beta = _channel_vectors(ctx, params, x, axis, "gamma", "beta")
        mean = xd.mean(axis=axis, keepdims=True)
        var = xd.var(axis=axis, keepdims=True)
        out = gamma / np.sqrt(var + opts["epsilon"]) * (xd - mean) + beta
        return out.astype(float_or_f32_np(x.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        axis = opts["channel_index"] % x.ndim
        return [_standardized_vjp(ctx, x, cot, axis, opts["epsilon"], _axes_mean((axis,)))]

    def onnx(self, ctx, inputs, opts):
        t = ctx.in_types[0]
        x, dtype = _onnx_float(ctx, inputs[0])
        axis = opts["channel_index"] % t.rank
        _, centered, var = _onnx_moments(ctx.b, x, (axis,))
        gamma, beta = (_onnx_vector(ctx, k, dtype, t.rank, axis) for k in ("gamma", "beta"))
        return _onnx_normalize(ctx.b, centered, var, gamma, beta, opts["epsilon"], dtype)

    def tflite(self, ctx, inputs, opts):
        t = ctx.in_types[0]
        axis = opts["channel_index"] % t.rank
        y = _tfl_standardize(ctx.b, _tfl_float(ctx, inputs[0]), (axis,), opts["epsilon"])
        return _tfl_affine(ctx, y, t.rank, axis)


@register
class GroupNorm(_Norm):
    """Group normalization: channels split into `num_groups` contiguous groups.

    Statistics (biased variance) are taken per sample and group over the spatial
    axes and the group's channels; no state, same in both modes. The channel
    count must be divisible by `num_groups`.
    """

    name = "group_norm"
    doc = (
        "Normalise each of num_groups contiguous channel groups per sample, then gamma * x + beta."
    )
    options = {
        "num_groups": Option(check=check_int(1), doc="number of contiguous channel groups"),
        "gamma_initializer": _GAMMA_ONES,
        "beta_initializer": _BETA,
        "channel_index": _CHANNEL_INDEX,
        "epsilon": _EPSILON,
    }
    min_rank = 2
    cases = [
        Case("rank2", lambda x: group_norm(x, 2), [TensorType((None, 6))]),
        Case("rank4_channels_last", lambda x: group_norm(x, 3), [TensorType((None, 4, 4, 6))]),
        Case(
            "rank4_channels_first",
            lambda x: group_norm(x, 3, channel_index=1),
            [TensorType((None, 6, 4, 4))],
        ),
        Case("one_group_rank3", lambda x: group_norm(x, 1), [TensorType((None, 5, 4))]),
        Case(
            "channels_first_dynamic_spatial",
            lambda x: group_norm(x, 2, channel_index=1, epsilon=1e-3),
            [TensorType((None, 4, None, 3))],
        ),
        Case(
            "channels_last_dynamic_spatial",
            lambda x: group_norm(x, 4),
            [TensorType((None, None, 3, 8))],
        ),
    ]

    def infer(self, types, opts, node):
        t = super().infer(types, opts, node)
        c = t.shape[_norm_axis(t, opts["channel_index"])]
        if c is not None:
            _check_groups(c, opts["num_groups"])
        return t

    def params(self, types, opts, mode, node):
        return self.affine_params(types, opts)

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        axis = opts["channel_index"] % x.ndim
        c, g = x.shape[axis], opts["num_groups"]
        _check_groups(c, g)
        gamma, beta = _channel_vectors(ctx, params, x, axis, "gamma", "beta")
        grouped = x.astype(np.float64).reshape((*x.shape[:axis], g, c // g, *x.shape[axis + 1 :]))
        axes = tuple(i for i in range(1, grouped.ndim) if i != axis)
        mean = grouped.mean(axis=axes, keepdims=True)
        var = grouped.var(axis=axes, keepdims=True)
        normed = ((grouped - mean) / np.sqrt(var + opts["epsilon"])).reshape(x.shape)
        return (normed * gamma + beta).astype(float_or_f32_np(x.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        axis = opts["channel_index"] % x.ndim
        c, g = x.shape[axis], opts["num_groups"]
        # Per-channel means over the spatial axes ((N, C), channels last), averaged within
        # each group by a block matrix: every channel of a group covers equally many
        # elements, so this is the group mean, and no dynamic dim is ever reshaped.
        averaging = np.kron(np.eye(g), np.full((c // g, c // g), g / c)).astype(x.dtype)
        spatial = tuple(i for i in range(1, x.ndim) if i != axis)
        shape = [1] * x.ndim
        shape[axis] = c
        if axis:
            shape[0] = -1

        def set_mean(t: Any) -> Any:
            per_channel = anp.mean(t, axis=spatial) if spatial else t
            return anp.reshape(anp.matmul(per_channel, averaging), tuple(shape))

        return [_standardized_vjp(ctx, x, cot, axis, opts["epsilon"], set_mean)]

    def onnx(self, ctx, inputs, opts):
        # Split the channel axis into (groups, rest) with the following axes merged into
        # "rest": the statistics cover the same elements, and only the leading dims
        # (copied with 0) and one -1 appear in the shape, so dynamic dims are fine.
        b, t = ctx.b, ctx.in_types[0]
        x, dtype = _onnx_float(ctx, inputs[0])
        axis, g = opts["channel_index"] % t.rank, opts["num_groups"]
        grouped = b.op("Reshape", [x, b.ints([0] * axis + [g, -1], "grouped_shape")])
        axes = (*range(1, axis), axis + 1)
        _, centered, var = _onnx_moments(b, grouped, axes)
        std = b.op("Sqrt", [b.op("Add", [var, b.const(opts["epsilon"], dtype, "epsilon")])])
        normed = b.op("Reshape", [b.op("Div", [centered, std]), b.op("Shape", [x])])
        gamma, beta = (_onnx_vector(ctx, k, dtype, t.rank, axis) for k in ("gamma", "beta"))
        return b.op("Add", [b.op("Mul", [normed, gamma]), beta])

    def tflite(self, ctx, inputs, opts):
        """Channels split into (groups, rest), rest merging the axes after the channel axis."""
        b, t = ctx.b, ctx.in_types[0]
        x = _tfl_float(ctx, inputs[0])
        axis, g = opts["channel_index"] % t.rank, opts["num_groups"]
        if any(d is None for d in t.shape[1:]):
            raise ctx.unsupported("a dynamic non-batch dim (the group reshape needs them)")
        rest = int(np.prod(t.shape[axis:])) // g
        grouped = b.reshape(x, (*t.shape[:axis], g, rest))
        y = _tfl_standardize(b, grouped, (*range(1, axis), axis + 1), opts["epsilon"])
        return _tfl_affine(ctx, b.reshape(y, t.shape), t.rank, axis)


def _check_groups(channels: int, groups: int) -> None:
    if channels % groups:
        raise ShapeError(
            f"group_norm: {channels} channels cannot be split into {groups} equal groups; "
            "num_groups must divide the channel count"
        )


@register
class RmsNorm(_Norm):
    """RMS normalization (Axon 0.8+): x / sqrt(mean(x^2) + eps) * (shift + gamma).

    The mean of squares is taken over the channel axis; no centering, no beta, no
    state, same in both modes. `upcast` is Axon's precision option: with
    "normalization" (default) the normalised input is rounded to the input dtype
    before scaling, with "all" it is not (both compute in float64 here, so they
    differ only for inputs narrower than f32).
    """

    name = "rms_norm"
    doc = "x / sqrt(mean(x^2, channel axis) + eps) * (shift + gamma)."
    options = {
        "gamma_initializer": _GAMMA_ONES,
        "channel_index": _CHANNEL_INDEX,
        "epsilon": Option(1e-6, check_float(lo=0.0), "numerical stability term"),
        "shift": Option(0.0, check_float(), "constant added to gamma before scaling"),
        "upcast": Option(
            "normalization",
            check_choice("normalization", "all"),
            "which part is computed in high precision",
        ),
    }
    cases = [
        Case("rank2", lambda x: rms_norm(x), [TensorType((None, 6))]),
        Case("rank3", lambda x: rms_norm(x), [TensorType((None, 3, 6))]),
        Case(
            "shift_channel_index_1",
            lambda x: rms_norm(x, shift=1.0, channel_index=1),
            [TensorType((None, 4, 3))],
        ),
        Case(
            "upcast_all_eps",
            lambda x: rms_norm(x, upcast="all", epsilon=1e-3),
            [TensorType((None, 2, 5))],
        ),
    ]

    def params(self, types, opts, mode, node):
        c = _num_channels(types[0], opts["channel_index"])
        return [ParamSpec(("gamma",), (c,), opts["gamma_initializer"])]

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        xd = x.astype(np.float64)
        axis = opts["channel_index"] % x.ndim
        (gamma,) = _channel_vectors(ctx, params, x, axis, "gamma")
        normed = xd / np.sqrt(np.mean(xd * xd, axis=axis, keepdims=True) + opts["epsilon"])
        if opts["upcast"] == "normalization":
            normed = normed.astype(float_or_f32_np(x.dtype)).astype(np.float64)
        return (normed * (opts["shift"] + gamma)).astype(float_or_f32_np(x.dtype))

    def vjp(self, ctx, inputs, output, cot, opts):
        # y = x * r * s with r = (mean(x^2) + eps)^(-1/2) and s = shift + gamma;
        # dr/dx = -r^3 x / C, so dx = r * g - x * r^3 * mean(g * x) for g = cot * s.
        (x,) = inputs
        axis = opts["channel_index"] % x.ndim
        inv_rms = 1.0 / anp.sqrt(anp.mean(x * x, axis=axis, keepdims=True) + opts["epsilon"])
        _affine_grads(ctx, cot, x * inv_rms, axis, ("gamma",))
        g = cot * (_param_along(ctx, "gamma", x, axis) + opts["shift"])
        mean_gx = anp.mean(g * x, axis=axis, keepdims=True)
        return [(inv_rms * g - x * (inv_rms * inv_rms * inv_rms) * mean_gx).astype(x.dtype)]

    def onnx(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        x, dtype = _onnx_float(ctx, inputs[0])
        axis = opts["channel_index"] % t.rank
        mean_sq = b.reduce("ReduceMean", b.op("Mul", [x, x]), (axis,), keepdims=True)
        rms = b.op("Sqrt", [b.op("Add", [mean_sq, b.const(opts["epsilon"], dtype, "epsilon")])])
        normed = b.op("Div", [x, rms])
        scale = _onnx_vector(ctx, "gamma", dtype, t.rank, axis)
        if opts["shift"]:
            scale = b.op("Add", [scale, b.const(opts["shift"], dtype, "shift")])
        return b.op("Mul", [normed, scale])

    def tflite(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        x = _tfl_float(ctx, inputs[0])
        axis = opts["channel_index"] % t.rank
        mean_sq = b.reduce("MEAN", b.binary("MUL", x, x), (axis,), keepdims=True)
        inv = b.unary("RSQRT", b.binary("ADD", mean_sq, b.scalar(opts["epsilon"], x)))
        scale = np.asarray(ctx.value("gamma"), np.float64) + opts["shift"]
        return b.binary("MUL", b.binary("MUL", x, inv), _tfl_vector(b, scale, t.rank, axis))


@layer_api
def batch_norm(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Batch normalization. Options: gamma_initializer, beta_initializer, channel_index,
    epsilon, momentum, use_running_stats (axonc: train with frozen running stats)."""
    return make_node("batch_norm", [x], opts, name=name)


@layer_api
def instance_norm(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Instance normalization (rank >= 3). Options as batch_norm; train-mode state is {N, C}."""
    return make_node("instance_norm", [x], opts, name=name)


@layer_api
def layer_norm(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Layer normalization over the channel axis. Options: gamma_initializer,
    beta_initializer, channel_index, epsilon."""
    return make_node("layer_norm", [x], opts, name=name)


@layer_api
def group_norm(x: Axon, num_groups: int, *, name: str | None = None, **opts: Any) -> Axon:
    """Group normalization with `num_groups` contiguous channel groups. Options:
    gamma_initializer, beta_initializer, channel_index, epsilon."""
    return make_node("group_norm", [x], {"num_groups": num_groups, **opts}, name=name)


@layer_api
def rms_norm(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """RMS normalization. Options: gamma_initializer, channel_index, epsilon, shift, upcast."""
    return make_node("rms_norm", [x], opts, name=name)
