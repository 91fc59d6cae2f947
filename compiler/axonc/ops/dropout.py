"""Dropout layers: dropout, spatial_dropout, alpha_dropout, feature_alpha_dropout.

As in Axon 0.8.1: options `rate` (default 0.5, 0 <= rate < 1) and `seed`. In
inference mode a dropout layer is the identity and owns no parameters at all
(Axon does not even initialise it). In train mode it owns a state tensor `key`
(u32[2], initial value Nx.Random.key(seed) = [seed >> 32, seed & 0xFFFFFFFF],
i.e. [0, seed] for seeds below 2^32); each call draws its mask from that key and
reports the advanced key with `ctx.set_state("key", ...)`, so repeated train
calls give fresh masks and a run is reproducible from the seed.

The random stream is numpy's Philox keyed by the key (Axon uses Nx's threefry,
so masks agree with Axon in distribution, not bit for bit). The uniforms are
rounded to float32 and a mask element keeps its input when
`float32(uniform) < float32(1 - rate)`, so a float32 backend fed the same
uniforms makes exactly the same decisions.

ONNX: inference mode lowers to Identity. The train-mode graph takes the
uniforms as a noise input `<layer>/noise` of the mask's shape (drawn by the
host runtime with `draw(key, shape)` and cast to float32) and does not output a new
key: the graph cannot run Philox, so the host runtime advances the key itself
(the `next_key` that `draw` returns), exactly as the reference does. The
noise input's only dynamic dim is the batch, so a train-mode export needs the
other dims of the input static.

Gradients: inference mode is the identity, so the cotangent passes through.
In train mode the gradient must use exactly the forward pass's mask. The mask
is a function of the layer's uniforms, so the gradient graph does not copy a
mask; it reads the same uniforms again through the primitive `dropout_noise`
(options: the dropout layer's path and whether its mask is spatial):
- reference: it draws `draw(key, shape)` from that layer's `key` state, the
  very call the forward makes, without reporting a new key, so forward and
  backward see identical uniforms (and a finite-difference check, which keeps
  the state fixed, sees the same mask on every evaluation);
- ONNX: it is the layer's noise graph input `<layer>/noise`. The forward
  rule and `dropout_noise` both obtain it with `ctx.noise(..., layer=)`, which creates
  the input on first use and returns the same one afterwards, so a graph
  holding both has ONE noise input per layer, fed by the host as before.
The VJP then recomputes keep = noise < 1 - rate (in float32, as the forward)
and applies the derivative of `apply` on the kept / dropped branches. The key
is integer state: no gradient flows into it.

`seed` defaults to None, which draws a fresh 32-bit seed when the layer is
created (Axon draws `:erlang.system_time()`), so two dropout layers never share
masks by accident; the drawn seed is stored in the layer's options, so a built
(or saved) model is reproducible. Pass `seed=` for repeatable experiments.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import TensorType
from ..errors import GraphError, ShapeError, StateError
from ..interpreter import layer_param
from ..ir import Axon
from ..registry import Case, Op, Option, ParamSpec, check_bool, layer_api, register
from ..shape_inference import make_node
from ..tracing import apply as apply_primitive
from .activation import SELU_ALPHA, SELU_SCALE
from .special import container

# SELU's negative saturation value -alpha * scale, used by the alpha dropouts.
ALPHA_P = -SELU_ALPHA * SELU_SCALE


def _check_rate(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a number, got {v!r}")
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"the dropout rate must be >= 0 and < 1, got {v}")
    return v


def _check_seed(v: Any) -> int:
    if v is None:
        return secrets.randbits(32)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"expected an integer seed or None, got {v!r}")
    if not 0 <= int(v) < 2**64:
        raise ValueError(f"expected a seed in [0, 2**64), got {v}")
    return int(v)


def draw(key: Any, noise_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Uniform [0, 1) samples of `noise_shape` and the next key, both from the key's stream.

    The stream is Philox keyed by the 64-bit number key[0] << 32 | key[1]; its first
    two 32-bit words become the next key, the rest the samples.
    """
    k = np.asarray(key).astype(np.uint64).reshape(-1)
    gen = np.random.Generator(np.random.Philox(key=(int(k[0]) << 32) | int(k[1])))
    next_key = gen.integers(0, 2**32, size=2, dtype=np.uint32)
    return gen.random(noise_shape), next_key


def _keep_threshold(rate: float) -> np.float32:
    """The float32 keep probability the float32 uniforms are compared with."""
    return np.float32(1.0 - rate)


def noise_shape(shape: tuple, spatial: bool) -> tuple:
    """The mask's shape: the input's, or with channels 1 for the spatial variants (Axon)."""
    return (*shape[:-1], 1) if spatial else tuple(shape)


def _static_noise_shape(ctx: Any, spatial: bool) -> tuple:
    """The ONNX noise input's shape; a GraphError unless only the batch dim is dynamic."""
    shape = noise_shape(ctx.in_types[0].shape, spatial)
    if None in shape[1:]:
        raise GraphError(
            f"layer {ctx.name!r}: a train-mode ONNX graph takes the dropout noise as an "
            f"input whose only dynamic dim is the batch, but the mask shape is {shape}; "
            "give the input static non-batch dims (a template) to export it"
        )
    return shape


def _check_layer_path(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = (v,)
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(k, str) and k for k in v):
        raise TypeError(f"expected a layer path of non-empty strings (('dropout_0',)), got {v!r}")
    return tuple(v)


@register
class DropoutNoise(Op):
    """The uniforms a train-mode dropout layer draws its mask from (see the module doc).

    Gradient graphs use it to rebuild the forward pass's mask exactly; its input
    only gives the shape (the batch size), so it has no gradient.
    """

    name = "dropout_noise"
    family = "dropout"
    doc = "The f32 uniforms of dropout layer `layer`'s train-mode mask (the mask's shape)."
    arity = 1
    options = {
        "layer": Option(check=_check_layer_path, doc="path of the dropout layer (('dropout_0',))"),
        "spatial": Option(False, check_bool, "the mask has channels 1 (spatial variants)"),
    }
    cases = [
        Case(
            "with_its_dropout",
            lambda x: container(
                (dropout(x, rate=0.3, seed=11, name="drop"), dropout_noise(x, ("drop",)))
            ),
            [TensorType((None, 5))],
            modes=("train",),
        ),
    ]

    def infer(self, types, opts, node):
        (t,) = types
        if t.rank < 1:
            raise ShapeError(f"dropout_noise needs an input of rank >= 1, got {t!r}")
        return TensorType(noise_shape(t.shape, opts["spatial"]), "f32")

    def forward(self, ctx, inputs, params, opts):
        value: Any = ctx.root
        for k in (*opts["layer"], "key"):
            if not isinstance(value, Mapping) or k not in value:
                raise StateError(
                    f"dropout_noise reads the train-mode key of layer {'/'.join(opts['layer'])!r}, "
                    "but the state has none; initialise the model state in train mode"
                )
            value = value[k]
        shape = noise_shape(np.shape(inputs[0]), opts["spatial"])
        return draw(value, shape)[0].astype(np.float32)

    def onnx(self, ctx, inputs, opts):
        return ctx.noise(_static_noise_shape(ctx, opts["spatial"]), layer=opts["layer"])

    def vjp(self, ctx, inputs, output, cot, opts):
        return [None]


def dropout_noise(x: Axon, layer: tuple[str, ...], *, spatial: bool = False) -> Axon:
    """A node holding the uniforms of dropout layer `layer` (for gradient graphs)."""
    return make_node("dropout_noise", [x], {"layer": layer, "spatial": spatial})


class _Dropout(Op):
    """Shared rules: options, the train-only `key` state, identity in inference mode."""

    family = "dropout"
    options = {
        "rate": Option(0.5, _check_rate, "probability of dropping an element, 0 <= rate < 1"),
        "seed": Option(
            None,
            _check_seed,
            "PRNG seed of the initial key; None draws a fresh seed when the layer is created",
        ),
    }
    min_rank: ClassVar[int] = 1
    # True: one mask decision per (batch, spatial position), shared by all channels.
    spatial: ClassVar[bool] = False

    def params(self, types, opts, mode, node):
        if mode == "inference":
            return []
        initializer = {"name": "prng_key", "seed": opts["seed"]}
        return [ParamSpec(("key",), (2,), initializer, dtype="u32", kind="state")]

    def infer(self, types, opts, node):
        (t,) = types
        if t.rank < self.min_rank:
            raise ShapeError(
                f"{self.name} needs an input of rank >= {self.min_rank} "
                f"(batch, spatial..., channels), got {t!r} (rank {t.rank})"
            )
        return t

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        if ctx.mode != "train":
            return x
        key = np.asarray(layer_param(params, "key", ctx))
        if key.shape != (2,):
            raise StateError(
                f"layer {ctx.name!r}: 'key' must be a u32[2] PRNG key, got shape {key.shape}"
            )
        uniform, next_key = draw(key, noise_shape(x.shape, self.spatial))
        keep = np.broadcast_to(uniform.astype(np.float32) < _keep_threshold(opts["rate"]), x.shape)
        ctx.set_state("key", next_key)
        out = self.apply(x.astype(np.float64), keep, opts["rate"])
        return out.astype(x.dtype if x.dtype.kind == "f" else np.float32)

    def vjp(self, ctx, inputs, output, cot, opts):
        (x,) = inputs
        if not np.issubdtype(x.dtype, np.floating):
            return [None]
        if ctx.mode != "train":
            return [cot]
        uniform = apply_primitive(
            "dropout_noise", [x], {"layer": ctx.path, "spatial": self.spatial}
        )
        keep = uniform < _keep_threshold(opts["rate"])
        return [self.apply_vjp(x, keep, cot, opts["rate"]).astype(x.dtype)]

    def apply_vjp(self, x: Any, keep: Any, cot: Any, rate: float) -> Any:
        """The input cotangent of `apply` (symbolic tensors; `keep` broadcasts against x)."""
        return anp.where(keep, cot * (1.0 / (1.0 - rate)), 0.0)

    def onnx(self, ctx, inputs, opts):
        (x,) = inputs
        b = ctx.b
        if ctx.mode != "train":
            return b.op("Identity", [x])
        t = ctx.in_types[0]
        dtype = t.dtype if t.dtype in ("f16", "f32", "f64") else "f32"
        if dtype != t.dtype:
            x = b.cast(x, dtype)
        uniform = ctx.noise(_static_noise_shape(ctx, self.spatial))
        keep = b.op("Less", [uniform, b.const(_keep_threshold(opts["rate"]), "f32", "keep")])
        return self.lower_apply(b, x, keep, opts["rate"], dtype)

    def tflite(self, ctx, inputs, opts):
        """Inference mode: the identity (dropout acts only while training)."""
        return inputs[0]

    def lower_apply(self, b: Any, x: str, keep: str, rate: float, dtype: str) -> str:
        """ONNX nodes of `apply` (the mask `keep` is bool and broadcasts against `x`)."""
        scaled = b.op("Div", [x, b.const(1.0 - rate, dtype, "keep_prob")])
        return b.op("Where", [keep, scaled, b.const(0.0, dtype, "zero")])

    def apply(self, x: np.ndarray, keep: np.ndarray, rate: float) -> np.ndarray:
        """Standard dropout: kept values scaled by 1 / (1 - rate), dropped ones zero."""
        return np.where(keep, x / (1.0 - rate), 0.0)


@register
class Dropout(_Dropout):
    """Dropout: each element is zeroed with probability `rate`, survivors scaled by 1/(1-rate)."""

    name = "dropout"
    doc = "Train mode: elementwise mask, kept x / (1 - rate), dropped 0; inference: identity."
    cases = [
        Case("rank2", lambda x: dropout(x, seed=1), [TensorType((None, 6))]),
        Case("rate0", lambda x: dropout(x, rate=0.0, seed=10), [TensorType((None, 3, 2))]),
        Case(
            "rank4_rate0.2", lambda x: dropout(x, rate=0.2, seed=2), [TensorType((None, 4, 4, 3))]
        ),
    ]


@register
class SpatialDropout(_Dropout):
    """Spatial dropout with Axon's mask: the channel (last) axis of the noise is 1.

    So one keep/drop decision is made per (batch, spatial position) and shared by
    all channels: whole pixels are dropped, NOT whole feature maps as in Keras /
    PyTorch SpatialDropout (Axon 0.8.1 quirk, reproduced). Needs rank >= 3.
    """

    name = "spatial_dropout"
    doc = "Train mode: dropout with one decision per (batch, position) shared across channels."
    min_rank = 3
    spatial = True
    cases = [
        Case("rank3", lambda x: spatial_dropout(x, seed=3), [TensorType((None, 5, 4))]),
        Case("rank4", lambda x: spatial_dropout(x, seed=4), [TensorType((None, 4, 4, 3))]),
        Case(
            "rank3_rate0.2",
            lambda x: spatial_dropout(x, rate=0.2, seed=9),
            [TensorType((None, 7, 4))],
        ),
    ]


@register
class AlphaDropout(_Dropout):
    """Alpha dropout with Axon's constants (elementwise mask).

    With a' = -1.67326 * 1.05070 (SELU's saturation value), keep = 1 - rate,
    a = (keep * a'^2)^(-1/2) and b = -a * a' * rate: out = a * (kept ? x : a') + b.
    This is Axon's `a`, not the SELU paper's (keep * (1 + rate * a'^2))^(-1/2);
    even rate 0 scales x by 1/|a'|, as Axon does.
    """

    name = "alpha_dropout"
    doc = "Train mode: a * (kept ? x : alpha') + b with Axon's constants; inference: identity."
    cases = [
        Case("rank2", lambda x: alpha_dropout(x, seed=5), [TensorType((None, 6))]),
        Case("rank4", lambda x: alpha_dropout(x, rate=0.3, seed=6), [TensorType((None, 4, 4, 3))]),
    ]

    def apply(self, x, keep, rate):
        keep_prob = 1.0 - rate
        a = 1.0 / np.sqrt(keep_prob * ALPHA_P**2)
        b = -a * ALPHA_P * rate
        return a * np.where(keep, x, ALPHA_P) + b

    def apply_vjp(self, x, keep, cot, rate):
        return anp.where(keep, cot * (1.0 / np.sqrt((1.0 - rate) * ALPHA_P**2)), 0.0)

    def lower_apply(self, b, x, keep, rate, dtype):
        keep_prob = 1.0 - rate
        a = 1.0 / np.sqrt(keep_prob * ALPHA_P**2)
        masked = b.op("Where", [keep, x, b.const(ALPHA_P, dtype, "alpha_p")])
        scaled = b.op("Mul", [masked, b.const(a, dtype, "a")])
        return b.op("Add", [scaled, b.const(-a * ALPHA_P * rate, dtype, "b")])


@register
class FeatureAlphaDropout(_Dropout):
    """Feature alpha dropout: spatial_dropout's mask (shared across channels);
    kept values become x / (1 - rate), dropped ones -selu(x). Needs rank >= 3."""

    name = "feature_alpha_dropout"
    doc = "Train mode: kept ? x / (1 - rate) : -selu(x), one decision per (batch, position)."
    min_rank = 3
    spatial = True
    cases = [
        Case("rank3", lambda x: feature_alpha_dropout(x, seed=7), [TensorType((None, 5, 4))]),
        Case("rank4", lambda x: feature_alpha_dropout(x, seed=8), [TensorType((None, 4, 4, 3))]),
    ]

    def apply(self, x, keep, rate):
        selu = SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
        return np.where(keep, x / (1.0 - rate), -selu)

    def apply_vjp(self, x, keep, cot, rate):
        neg_selu_slope = -SELU_SCALE * anp.where(
            x > 0, 1.0, SELU_ALPHA * anp.exp(anp.minimum(x, 0.0))
        )
        return anp.where(keep, cot * (1.0 / (1.0 - rate)), cot * neg_selu_slope)

    def lower_apply(self, b, x, keep, rate, dtype):
        scaled = b.op("Div", [x, b.const(1.0 - rate, dtype, "keep_prob")])
        neg_selu = b.op("Neg", [b.op("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_SCALE)])
        return b.op("Where", [keep, scaled, neg_selu])


@layer_api
def dropout(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Dropout (active in train mode only). Options: rate (0.5), seed."""
    return make_node("dropout", [x], opts, name=name)


@layer_api
def spatial_dropout(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Spatial dropout, Axon-style: drops whole positions (all channels). Options: rate, seed."""
    return make_node("spatial_dropout", [x], opts, name=name)


@layer_api
def alpha_dropout(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Alpha dropout for SELU networks (train mode only). Options: rate, seed."""
    return make_node("alpha_dropout", [x], opts, name=name)


@layer_api
def feature_alpha_dropout(x: Axon, *, name: str | None = None, **opts: Any) -> Axon:
    """Feature alpha dropout (spatial mask, -selu for dropped values). Options: rate, seed."""
    return make_node("feature_alpha_dropout", [x], opts, name=name)
