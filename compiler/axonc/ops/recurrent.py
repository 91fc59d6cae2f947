"""Recurrent layers: lstm, gru, conv_lstm, and the sequence `mask` they consume.

Each RNN is ONE op node whose output is a container `(seq, (c, h))` (gru:
`(seq, (h,))`); the constructors split it with `elem` nodes and return a Python
tuple of graphs, as Axon 0.8 does. Parameter layouts and gate equations follow
Axon exactly (tests/fixtures/axon-golden/README.md, "LSTM", "GRU", "Masking",
"ConvLSTM"): per-gate kernel maps `input_kernel/{wii,...}`, no forget-gate
offset for lstm, GRU with linear-before-reset, ConvLSTM gates i, g, f, o with a
hard-coded forget +1. Without an explicit hidden state the initial state is drawn
at forward time from `recurrent_initializer` with the `seed` option (c and h from
the same seed, hence equal, as in Axon, whose two state layers share one key).
ONNX: lstm/gru map onto ONNX LSTM/GRU when they can (no mask, activations the
RNN ops express), else unroll into a Scan (or inline steps for unroll="static");
a random initial state cannot be exported (it depends on the batch size).
Gradients (`vjp`) unroll the recurrence over the time dim: the forward states are
recomputed step by step with axonc.numpy, then backpropagated through time. That
needs a static time dim; differentiating over a dynamic one is a NoGradientError.
The drawn initial state (op `rnn_initial_state`) and the mask get no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import (
    TensorType,
    is_float,
    same_dim,
    to_numpy_dtype,
    with_f32_params,
    with_f32_params_np,
)
from ..errors import NoGradientError, OptionError, ShapeError
from ..initializers import check_initializer, initialize
from ..interpreter import layer_param
from ..ir import Axon
from ..registry import (
    REQUIRED,
    Case,
    Op,
    Option,
    ParamSpec,
    check_bool,
    check_choice,
    check_int,
    check_int_or_tuple,
    layer_api,
    register,
)
from ..shape_inference import make_node
from ..tracing import Tensor, apply
from ._spatial import check_padding, per_dim, resolve_padding, window_out
from .activation import ACTIVATIONS, _lower_tflite
from .activation import _lower as lower_activation
from .activation import _vjp as activation_vjp
from .conv import Geometry, _tfl_conv, conv_general, conv_vjp
from .special import container, unpack


def _check_activation(v: Any) -> str:
    if not isinstance(v, str) or v not in ACTIVATIONS:
        raise ValueError(f"expected an activation name ({', '.join(ACTIVATIONS)}), got {v!r}")
    return v


def _apply(act: str, x: np.ndarray) -> np.ndarray:
    """Apply a named activation with its default options (Axon calls them with none)."""
    formula, options, _ = ACTIVATIONS[act]
    return formula(x, **{k: o.default for k, o in options.items()})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return _apply("sigmoid", x)


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _merge(a: int | None, b: int | None) -> int | None:
    return a if a is not None else b


def _keep_mask(m: np.ndarray) -> np.ndarray:
    """Axon's `Nx.select(Nx.as_type(mask, :u8), previous, new)`: nonzero as u8 keeps the state."""
    m = np.asarray(m)
    if m.dtype.kind == "f":
        return np.trunc(m) != 0
    return m.astype(np.uint8) != 0


# Options shared by every recurrent op. `state_input` / `mask_input` record which
# optional graph inputs follow `x` (set by the constructors).
_COMMON = {
    "units": Option(REQUIRED, check_int(1), "the number of hidden units"),
    "unroll": Option(
        "dynamic",
        check_choice("dynamic", "static"),
        "loop-preserving or inlined unrolling; the numbers are identical",
    ),
    "use_bias": Option(True, check_bool, "add the gate biases"),
    "kernel_initializer": Option("glorot_uniform", check_initializer, "input/hidden kernel init"),
    "bias_initializer": Option("zeros", check_initializer, "bias init"),
    "recurrent_initializer": Option(
        "glorot_uniform",
        check_initializer,
        "draws the initial (c, h) when no hidden_state graphs are given",
    ),
    "seed": Option(0, check_int(), "seed of the random initial state (Axon: the system time)"),
    "state_input": Option(False, check_bool, "the initial state graphs follow x as inputs"),
}
_GATES = {
    "activation": Option("tanh", _check_activation, "the cell/candidate activation"),
    "gate": Option("sigmoid", _check_activation, "the gate activation"),
    "mask_input": Option(False, check_bool, "the last input is a sequence mask (batch, time)"),
}


class _Recurrent(Op):
    """Shared input handling of lstm, gru and conv_lstm."""

    family = "recurrent"
    arity = None
    n_states: int = 2
    min_rank: int = 3

    def _split(self, items: list[Any], opts: dict[str, Any]) -> tuple[Any, list[Any], Any]:
        """(x, initial states or [], mask or None) from the node's input list."""
        n = 1 + (self.n_states if opts["state_input"] else 0) + int(opts.get("mask_input", False))
        if len(items) != n:
            raise ShapeError(f"expected {n} input(s) for these options, got {len(items)}")
        states = list(items[1 : 1 + self.n_states]) if opts["state_input"] else []
        m = items[-1] if opts.get("mask_input", False) else None
        return items[0], states, m

    def _check_x(self, x: TensorType) -> None:
        if not isinstance(x, TensorType):
            raise ShapeError(f"the input must be a single tensor, got {x!r}")
        if self.min_rank == 3 and x.rank != 3:
            raise ShapeError(
                f"{self.name} expects a rank-3 input (batch, time, features), got {x!r}"
            )
        if x.rank < self.min_rank:
            raise ShapeError(
                f"{self.name} expects an input (batch, time, channels, spatial...) of rank >= "
                f"{self.min_rank}, got {x!r}"
            )

    def _check_states(self, states: list[Any], expected: tuple) -> tuple:
        """Check each given state against `expected` (dims may be None); return the merged shape."""
        shape = expected
        names = ("c", "h") if self.n_states == 2 else ("h",)
        for which, s in zip(names[: len(states)], states, strict=True):
            ok = (
                isinstance(s, TensorType)
                and s.rank == len(shape)
                and all(same_dim(a, b) for a, b in zip(s.shape, shape, strict=True))
            )
            if not ok:
                raise ShapeError(f"initial {which} state must have shape {_fmt(shape)}, got {s!r}")
            shape = tuple(_merge(a, b) for a, b in zip(shape, s.shape, strict=True))
        return shape

    def _check_mask(self, m: Any, batch: int | None, time: int | None) -> None:
        if m is None:
            return
        if not isinstance(m, TensorType):
            raise ShapeError(f"the mask must be a single tensor, got {m!r}")
        if m.rank == 0:
            return
        if m.rank != 2 or not same_dim(m.shape[0], batch) or not same_dim(m.shape[1], time):
            raise ShapeError(
                f"the mask must have shape (batch, time) = {_fmt((batch, time))} or be a scalar, "
                f"got {m!r}"
            )

    def _in_features(self, x: TensorType, what: str = "feature") -> int:
        """The input's dim 2 (features, or conv_lstm's channels), which sizes the kernels."""
        if x.shape[2] is None:
            raise ShapeError(f"{self.name} needs a known {what} dim to size its kernels, got {x!r}")
        return x.shape[2]

    def infer(self, types, opts, node):
        """(batch, time, features) -> ((batch, time, units), n_states x (batch, units))."""
        x, states, m = self._split(types, opts)
        self._check_x(x)
        b, t, _ = x.shape
        state = self._check_states(states, (b, opts["units"]))
        self._check_mask(m, state[0], t)
        dt = with_f32_params(x.dtype)
        return (
            TensorType((state[0], t, opts["units"]), dt),
            (TensorType(state, dt),) * self.n_states,
        )

    def _initial(self, states: list[np.ndarray], shape: tuple[int, ...], opts: dict[str, Any]):
        """Given states as float64, or the random (c, h) from recurrent_initializer and seed."""
        if states:
            return [np.asarray(s, dtype=np.float64) for s in states]
        drawn = initialize(opts["recurrent_initializer"], shape, "f32", opts["seed"])
        return [drawn.astype(np.float64) for _ in range(self.n_states)]

    def _onnx_initial(
        self, ctx: Any, x: str, states: list[str], opts: dict[str, Any], tail: list[str]
    ):
        """ONNX values of the initial states: the given ones, or the deterministic initializer's.

        `tail` holds 1-D int64 values that follow the batch in the state shape. A random
        recurrent_initializer's tensor depends on the batch size and numpy's generator, so
        it is a graph input `<layer>/initial_state` that the runtime draws with the
        layer's initializer and seed (recorded in the model's metadata).
        """
        b, dt = ctx.b, ctx.out_type[0].dtype
        if states:
            types = ctx.in_types[1 : 1 + self.n_states]
            return [_cast_to(b, s, t.dtype, dt) for s, t in zip(states, types, strict=True)]
        state_shape = ctx.out_type[1][0].shape
        spec, seed = opts["recurrent_initializer"], opts["seed"]
        return [_onnx_draw(ctx, x, spec, seed, state_shape, tail, dt)] * self.n_states

    @staticmethod
    def _onnx_params(ctx: Any, dtype: str) -> Callable[..., str]:
        """A getter of this layer's (f32) parameters as ONNX values of `dtype`."""
        return lambda *key: _cast_to(ctx.b, ctx.param(*key), "f32", dtype)

    @staticmethod
    def _inline(ctx: Any, opts: dict[str, Any]) -> bool:
        """Unroll step by step (unroll="static" and a known time dim) rather than Scan."""
        t = ctx.in_types[0].shape[1]
        return opts["unroll"] == "static" and t is not None and t > 0

    @staticmethod
    def _mask_steps(m: Any, batch: int, time: int) -> np.ndarray:
        """A (batch, time) bool array: True where the cell keeps its previous state."""
        if m is None:
            return np.zeros((batch, time), dtype=bool)
        keep = _keep_mask(m)
        return np.broadcast_to(keep if keep.ndim == 2 else keep.reshape(1, 1), (batch, time))


def _onnx_draw(
    ctx: Any, x: str, spec: dict[str, Any], seed: int, shape: tuple, tail: list[str], dt: str
) -> str:
    """An ONNX value (dtype `dt`) of the initial state `spec` draws for `shape` (None = batch).

    A random initializer is host-drawn: a graph input `<layer>/initial_state`. The
    deterministic ones are built from the batch size (x's dim 0) and `tail`, 1-D
    int64 values of the dims that follow it.
    """
    b = ctx.b
    if spec["name"] not in _EXPORTABLE_INITIAL:
        return _cast_to(b, ctx.random_input("initial_state", shape, spec, seed), "f32", dt)
    full = b.op("Concat", [b.op("Shape", [x], start=0, end=1), *tail], axis=0)
    if spec["name"] == "identity":
        # Nx.eye over the last two axes, broadcast over the leading ones
        last2 = b.op("Slice", [full, b.ints([-2]), b.ints([np.iinfo(np.int64).max])])
        zero = b.const(0.0, dt, "zero")
        return b.op("Expand", [b.op("EyeLike", [b.op("Expand", [zero, last2])]), full])
    fill = {"zeros": 0.0, "ones": 1.0}.get(spec["name"], spec.get("value"))
    # the reference draws in f32 before computing in f64
    return b.op("Expand", [b.const(np.float32(fill), dt, "fill"), full])


def _gate_params(
    prefix: str, gates: str, shape: tuple[int, ...], init: Any, group: str
) -> list[ParamSpec]:
    return [ParamSpec((group, f"{prefix}{g}"), shape, init) for g in gates]


def _gate_weights(ctx: Any, params: dict[str, Any], names: list[str], key: str):
    """The named per-gate tensors of one parameter group, as float64."""
    group = layer_param(params, key, ctx)
    return [np.asarray(layer_param(group, n, ctx), dtype=np.float64) for n in names]


# ---------------------------------------------------------------------------
# ONNX lowering helpers. LSTM and GRU without a mask and with activations ONNX's
# RNN ops can express lower to ONNX LSTM / GRU; everything else (masks, other
# activations, ConvLSTM) is unrolled: inlined step by step for unroll="static"
# with a known time dim, else a Scan over the time axis.

# The deterministic recurrent initializers: their (batch, ...) draw is a formula of the shape,
# so an ONNX graph builds it; the others are host-drawn graph inputs.
_EXPORTABLE_INITIAL = ("zeros", "ones", "full", "identity")
# Axon activation -> ONNX RNN activation (the `activations` attribute) and its alpha/beta.
_RNN_ACTIVATIONS = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "softsign": "Softsign",
    "softplus": "Softplus",
    "hard_sigmoid": "HardSigmoid",
    "elu": "Elu",
    "leaky_relu": "LeakyRelu",
    "linear": "Affine",
}


def _rnn_activation_attrs(names: list[str], default: list[str]) -> dict[str, Any] | None:
    """ONNX LSTM/GRU activation attributes for Axon activations `names`, or None if inexpressible.

    ONNX consumes activation_alpha/beta "in the order of the activation functions";
    runtimes differ on whether functions without an alpha take a slot, so the
    attributes are used only when every function that needs one agrees on the
    value, which then fills every slot.
    """
    if any(n not in _RNN_ACTIVATIONS for n in names):
        return None
    alphas, betas = set(), set()
    for n in names:
        opts = {k: float(o.default) for k, o in ACTIVATIONS[n][1].items()}
        if n == "linear":
            opts = {"alpha": 1.0, "beta": 0.0}
        alphas |= {opts["alpha"]} if "alpha" in opts else set()
        betas |= {opts["beta"]} if "beta" in opts else set()
    if len(alphas) > 1 or len(betas) > 1:
        return None
    if names == default:
        return {}
    attrs: dict[str, Any] = {"activations": [_RNN_ACTIVATIONS[n] for n in names]}
    if alphas:
        attrs["activation_alpha"] = [alphas.pop()] * len(names)
    if betas:
        attrs["activation_beta"] = [betas.pop()] * len(names)
    return attrs


def _act(b: Any, name: str, x: str, dtype: str) -> str:
    """ONNX nodes for a named activation with its default options (as `_apply`)."""
    return lower_activation(
        b, name, x, {k: o.default for k, o in ACTIVATIONS[name][1].items()}, dtype
    )


def _body_builder(b: Any) -> Any:
    """A builder for a Scan body whose names stay unique with the outer graph's.

    Its constants are stored as initializers of the outer graph, which the body
    reads from the enclosing scope, as it reads the parameters.
    """
    body = type(b)(b.opset)
    body._names = b._names
    body._consts = b._consts
    body.initializers = b.initializers
    body.scope = f"{b.scope}/loop" if b.scope else "loop"
    return body


Step = Callable[[Any, list[str], list[str]], tuple[list[str], str]]


def _recur(
    ctx: Any,
    seqs: list[tuple[str, str, tuple]],
    init: list[tuple[str, str, tuple]],
    step: Step,
    out_info: tuple[str, tuple],
    inline: bool,
) -> tuple[str, list[str]]:
    """Run `step(builder, per-step inputs, states) -> (new states, output)` over the time axis.

    `seqs` are (value, dtype, per-step shape) sliced along axis 1; `init` the initial
    states as (value, dtype, shape); `out_info` the output's (dtype, per-step shape).
    Returns the outputs stacked on axis 1 and the final states. `inline` unrolls
    step by step (the time dim must be known), else a Scan loops over it.
    """
    from onnx import helper  # onnx loads at lowering, not when ops register

    b = ctx.b
    if inline:
        states = [v for v, _, _ in init]
        outs = []
        for t in range(ctx.in_types[0].shape[1]):
            idx = b.ints([t], hint="step")
            xs = [_squeeze(b, b.op("Gather", [v, idx], axis=1), 1) for v, _, _ in seqs]
            states, out = step(b, xs, states)
            outs.append(b.op("Unsqueeze", [out, b.ints([1])]))
        seq = outs[0] if len(outs) == 1 else b.op("Concat", outs, axis=1)
        return seq, states
    body = _body_builder(b)
    state_in = [body.fresh(f"{body.scope}/state") for _ in init]
    seq_in = [body.fresh(f"{body.scope}/step_input") for _ in seqs]
    new_states, out = step(body, seq_in, list(state_in))
    outputs, seen = [], set(state_in) | set(seq_in)
    for v in [*new_states, out]:
        outputs.append(body.op("Identity", [v]) if v in seen else v)
        seen.add(outputs[-1])
    graph = helper.make_graph(
        body.nodes,
        f"{ctx.name}_step".replace("/", "_"),
        [body.value_info(n, d, s) for n, (_, d, s) in zip(state_in, init, strict=True)]
        + [body.value_info(n, d, s) for n, (_, d, s) in zip(seq_in, seqs, strict=True)],
        [body.value_info(n, d, s) for n, (_, d, s) in zip(outputs[:-1], init, strict=True)]
        + [body.value_info(outputs[-1], *out_info)],
    )
    results = b.op(
        "Scan",
        [*(v for v, _, _ in init), *(v for v, _, _ in seqs)],
        outputs=len(init) + 1,
        body=graph,
        num_scan_inputs=len(seqs),
        scan_input_axes=[1] * len(seqs),
        scan_output_axes=[1],
    )
    return results[-1], results[:-1]


def _keep_onnx(ctx: Any, m: str, mt: TensorType, x: str) -> str:
    """The (batch, time) bool 'keep the previous state' tensor, as `_keep_mask` + broadcast."""
    b = ctx.b
    if is_float(mt.dtype):
        m, zero = b.cast(m, "s64"), b.const(np.int64(0), hint="zero")
    else:
        m = m if mt.dtype == "u8" else b.cast(m, "u8")
        zero = b.const(np.uint8(0), hint="zero")
    keep = b.op("Not", [b.op("Equal", [m, zero])])
    return b.op("Expand", [keep, b.op("Shape", [x], start=0, end=2)])


def _cast_to(b: Any, v: str, have: str, want: str) -> str:
    return v if have == want else b.cast(v, want)


def _unsqueeze(b: Any, v: str, axis: int) -> str:
    return b.op("Unsqueeze", [v, b.ints([axis])])


def _squeeze(b: Any, v: str, axis: int) -> str:
    return b.op("Squeeze", [v, b.ints([axis])])


def _time_major(b: Any, x: str) -> str:
    """(batch, time, features) -> (time, batch, features), ONNX RNNs' layout 0."""
    return b.op("Transpose", [x], perm=[1, 0, 2])


def _batch_major(b: Any, y: str) -> str:
    """ONNX RNN output Y (time, 1, batch, units) -> (batch, time, units)."""
    return b.op("Transpose", [_squeeze(b, y, 1)], perm=[1, 0, 2])


def _packed_kernel(b: Any, kernels: list[str]) -> str:
    """Per-gate (in, U) kernels -> ONNX's (1, gates * U, in)."""
    return _unsqueeze(b, b.op("Transpose", [b.op("Concat", kernels, axis=1)], perm=[1, 0]), 0)


def _packed_bias(b: Any, biases: list[str]) -> str:
    """Per-gate (U,) biases -> ONNX's (1, n * U)."""
    return _unsqueeze(b, b.op("Concat", biases, axis=0), 0)


def _conv_onnx(
    b: Any, x: str, w: str, bias: str | None, strides: tuple, pads: tuple[tuple[int, int], ...]
) -> str:
    """ONNX Conv of a channels-first x with explicit (lo, hi) pads; negative pads crop first."""
    n = len(pads)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        starts = [max(-lo, 0) for lo, _ in pads]
        ends = [hi if hi < 0 else np.iinfo(np.int64).max for _, hi in pads]
        x = b.op("Slice", [x, b.ints(starts), b.ints(ends), b.ints(range(2, 2 + n))])
    onnx_pads = [max(lo, 0) for lo, _ in pads] + [max(hi, 0) for _, hi in pads]
    return b.op("Conv", [x, w, *([bias] if bias else [])], strides=list(strides), pads=onnx_pads)


# ---------------------------------------------------------------------------
# TFLite lowering: the recurrence unrolled over a static time dim (one FULLY_CONNECTED
# for every step's input projection, then per step a FULLY_CONNECTED of the state,
# SPLIT into gates, the activations and SELECT_V2 for masked steps). A dynamic time
# dim and a random initial state (its values depend on the batch size) are not exported.


def _tfl_act(b: Any, name: str, x: int) -> int:
    return _lower_tflite(b, name, x, {k: o.default for k, o in ACTIVATIONS[name][1].items()})


def _tfl_time(ctx: Any) -> int:
    t = ctx.in_types[0].shape[1]
    if t is None or t == 0:
        raise ctx.unsupported("a dynamic or empty time dim (TFLite export unrolls the steps)")
    return t


def _tfl_initial(
    ctx: Any, x: int, states: list[int], opts: dict[str, Any], n: int, tail: tuple = ()
) -> list[int]:
    """The initial states: the given ones, or FILL of a constant initializer to
    (batch, units), or (batch, *tail) when `tail` is given."""
    b = ctx.b
    if states:
        return [b.cast(s, "f32") for s in states]
    spec = opts["recurrent_initializer"]
    if spec["name"] not in ("zeros", "ones", "full"):
        raise ctx.unsupported(
            f"recurrent_initializer {spec['name']!r}: its initial state depends on the batch "
            "size (give the state as an input, or use zeros / ones / full)"
        )
    value = {"zeros": 0.0, "ones": 1.0}.get(spec["name"], spec.get("value"))
    tail = tail or (opts["units"],)
    rank = b.type_of(x).rank
    shape_options = b.options("Shape", outType=b.s.TensorType.INT32)
    shape = b.op("SHAPE", [x], TensorType((rank,), "s32"), options=shape_options)
    batch = b.op("SLICE", [shape, b.ints([0]), b.ints([1])], TensorType((1,), "s32"))
    dims = b.op(
        "CONCATENATION",
        [batch, b.ints(list(tail))],
        TensorType((1 + len(tail),), "s32"),
        options=b.options("Concatenation", axis=0),
    )
    fill = b.const(np.asarray(np.float32(value)))
    out = TensorType((ctx.in_types[0].shape[0], *tail), "f32")
    return [b.op("FILL", [dims, fill], out)] * n


def _tfl_keep(ctx: Any, m: int | None, time: int) -> list[int | None]:
    """Per step, a (batch, 1) bool 'keep the previous state' tensor (None without a mask)."""
    if m is None:
        return [None] * time
    b, mt = ctx.b, ctx.in_types[-1]
    if mt.rank == 0:
        raise ctx.unsupported("a scalar mask")
    m = b.cast(m, "s32")  # float masks truncate toward zero, as the reference's trunc
    keep = b.compare("NOT_EQUAL", m, b.scalar(0, m))
    out = []
    for t in range(time):
        step = b.op(
            "SLICE", [keep, b.ints([0, t]), b.ints([-1, 1])], TensorType((mt.shape[0], 1), "pred")
        )
        out.append(step)
    return out


def _tfl_fc(b: Any, x: int, w: np.ndarray, bias: np.ndarray | None) -> int:
    """x . w (+ bias) over the last axis for an {in, out} matrix w."""
    t = b.type_of(x)
    weights = b.const(np.ascontiguousarray(w.T.astype(np.float32)), hint="kernel")
    bias_t = -1 if bias is None else b.const(np.asarray(bias, np.float32), hint="bias")
    options = b.options("FullyConnected", keepNumDims=t.rank > 2)
    return b.op(
        "FULLY_CONNECTED",
        [x, weights, bias_t],
        t.with_shape((*t.shape[:-1], w.shape[1])),
        options=options,
    )


def _tfl_step(b: Any, xw: int, t: int, width: int) -> int:
    """Step t of a (batch, time, width) tensor as (batch, width)."""
    batch = b.type_of(xw).shape[0]
    piece = b.op(
        "SLICE",
        [xw, b.ints([0, t, 0]), b.ints([-1, 1, width])],
        TensorType((batch, 1, width), "f32"),
    )
    return b.reshape(piece, (batch, width))


def _tfl_split(b: Any, v: int, n: int) -> list[int]:
    t = b.type_of(v)
    piece = t.with_shape((t.shape[0], t.shape[1] // n))
    return list(
        b.op(
            "SPLIT", [b.ints([1], "axis"), v], [piece] * n, options=b.options("Split", numSplits=n)
        )
    )


def _tfl_stack(b: Any, hs: list[int]) -> int:
    """(batch, units) steps stacked into (batch, time, units): RESHAPE + CONCATENATION,
    which ai-edge-quantizer quantizes consistently (its int8 PACK is not)."""
    t = b.type_of(hs[0])
    steps = [b.reshape(h, (t.shape[0], 1, *t.shape[1:])) for h in hs]
    out = TensorType((t.shape[0], len(hs), *t.shape[1:]), "f32")
    return b.op("CONCATENATION", steps, out, options=b.options("Concatenation", axis=1))


def _tfl_weights(ctx: Any, group: str, names: list[str]) -> np.ndarray:
    return np.concatenate([ctx.value(group, n).astype(np.float64) for n in names], axis=-1)


# ---------------------------------------------------------------------------
# Gradients: backpropagation through time over a static time dim. The rules
# recompute the forward states step by step with axonc.numpy (the layer's
# output holds only the last state), then walk the steps backwards. A dynamic
# time dim cannot be unrolled, so its gradient is a NoGradientError.


def _static_time(ctx: Any) -> int:
    """The input's time dim, which must be known to unroll the backward pass."""
    t = ctx.in_types[0].shape[1]
    if t is None:
        raise NoGradientError(
            f"{ctx.node.op} layer {ctx.name!r}: the sequence length (time dim) must be static "
            f"to differentiate, got an input of shape {_fmt(ctx.in_types[0].shape)}; give "
            "ax.input a fixed time dim"
        )
    return t


def _act_fn(name: str) -> Callable[[Any], Any]:
    """A named activation with its default options, recorded as that activation's op."""
    return lambda z: apply(name, [z])


def _act_vjp(name: str, z: Any, y: Any, cot: Any) -> Any:
    """cot times the derivative of activation `name` (default options) at z, y = act(z)."""
    opts = {k: o.default for k, o in ACTIVATIONS[name][1].items()}
    return activation_vjp(name, z, y, cot, opts)


def _keep_steps(m: Any, mt: TensorType) -> Any:
    """The symbolic 'keep the previous state' mask, as `_keep_mask`: (batch, time) or scalar."""
    if is_float(mt.dtype):
        return anp.abs(m) >= 1.0  # trunc(m) != 0
    return m.astype(np.uint8) != 0


def _zero_or(cot: Any, like: Any) -> Any:
    return anp.zeros_like(like) if cot is None else cot


def _split_cot(cot: Any, n_states: int) -> tuple[Any, list[Any]]:
    """(sequence cotangent, per-state cotangents), None for zero, from the output's cotangent."""
    seq, states = (None, None) if cot is None else cot
    states = [None] * n_states if states is None else list(states)
    return seq, states


class _Unrolled:
    """The pieces every recurrent VJP needs: the unrolled inputs, the initial states, the mask."""

    def __init__(self, op: _Recurrent, ctx: Any, inputs: list[Any], opts: dict[str, Any]):
        x, states, m = op._split(inputs, opts)
        self.time = _static_time(ctx)
        self.x = x
        self.given = bool(states)
        if not states:
            drawn = initial_state(
                x.graph,
                opts["units"],
                opts["recurrent_initializer"],
                opts["seed"],
                conv=isinstance(op, ConvLSTM),
            )
            states = [Tensor(drawn, x._trace)] * op.n_states
        self.states = states
        self.keep = None if m is None else _keep_steps(m, ctx.in_types[-1])

    def step_keep(self, step: int) -> Any:
        """The mask at `step`, shaped to broadcast against a (batch, units...) state."""
        if self.keep is None:
            return None
        if self.keep.ndim == 0:
            return self.keep
        return anp.expand_dims(self.keep[:, step], 1)

    def cotangents(self, ctx: Any, dx: list[Any], states: list[Any]) -> list[Any]:
        """The node's input cotangents from per-step x cotangents and initial-state ones.

        The drawn initial state and the mask get none; so does an integer x.
        """
        xt = ctx.in_types[0]
        out = [
            anp.stack(dx, axis=1).astype(to_numpy_dtype(xt.dtype)) if is_float(xt.dtype) else None
        ]
        if self.given:
            types = ctx.in_types[1 : 1 + len(states)]
            out += [c.astype(to_numpy_dtype(t.dtype)) for c, t in zip(states, types, strict=True)]
        return out + ([None] if self.keep is not None else [])


def _gate_grads(
    ctx: Any,
    opts: dict[str, Any],
    gates: str,
    xs: list[Any],
    h_prev: list[Any],
    dz: dict[str, list[Any]],
    biases: dict[str, str],
    dzh: dict[str, list[Any]] | None = None,
) -> None:
    """Per-gate kernel and bias gradients from per-step gate pre-activation cotangents.

    `dzh` (default `dz`) holds the cotangents of the hidden-kernel products where they
    differ from the input ones (GRU's reset-scaled candidate).
    """
    dzh = dz if dzh is None else dzh
    for g in gates:
        if ctx.wants_param("input_kernel", f"wi{g}"):
            ctx.add_param_grad(("input_kernel", f"wi{g}"), _flat_outer(xs, dz[g]))
        if ctx.wants_param("hidden_kernel", f"wh{g}"):
            ctx.add_param_grad(("hidden_kernel", f"wh{g}"), _flat_outer(h_prev, dzh[g]))
        if opts["use_bias"] and ctx.wants_param("bias", biases[g]):
            ctx.add_param_grad(("bias", biases[g]), _batch_sum(dz[g]))


def _sigmoid_t(z: Any) -> Any:
    return _act_fn("sigmoid")(z)


def _masked(keep: Any, old: Any, new: Any) -> Any:
    return new if keep is None else anp.where(keep, old, new)


def _split_masked(keep: Any, cot: Any) -> tuple[Any, Any]:
    """A state's cotangent split into (to the new value, straight to the previous state)."""
    if keep is None:
        return cot, None
    return anp.where(keep, 0.0, cot), anp.where(keep, cot, 0.0)


def _plus(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


def _flat_outer(a: list[Any], b: list[Any]) -> Any:
    """Sum over batch and steps of a[t]^T b[t]: (in, out) from (batch, in), (batch, out) steps."""
    aa = anp.reshape(anp.stack(a, axis=1), (-1, a[0].shape[-1]))
    bb = anp.reshape(anp.stack(b, axis=1), (-1, b[0].shape[-1]))
    return anp.matmul(aa.T, bb)


def _batch_sum(gs: list[Any]) -> Any:
    return anp.sum(anp.reshape(anp.stack(gs, axis=1), (-1, gs[0].shape[-1])), axis=0)


@register
class LSTM(_Recurrent):
    name = "lstm"
    doc = (
        "Long short-term memory over (batch, time, features): i, f, g, o gates, "
        "c' = f c + i g, h' = o act(c'); returns (seq, (c, h))."
    )
    options: ClassVar[dict[str, Option]] = {**_COMMON, **_GATES}

    def params(self, types, opts, mode, node):
        x = types[0]
        self._check_x(x)
        features = self._in_features(x)
        u = opts["units"]
        specs = _gate_params(
            "wi", "ifgo", (features, u), opts["kernel_initializer"], "input_kernel"
        )
        specs += _gate_params("wh", "ifgo", (u, u), opts["kernel_initializer"], "hidden_kernel")
        if opts["use_bias"]:
            specs += _gate_params("b", "ifgo", (u,), opts["bias_initializer"], "bias")
        return specs

    def forward(self, ctx, inputs, params, opts):
        x, states, m = self._split(inputs, opts)
        x = np.asarray(x, dtype=np.float64)
        b, t, _ = x.shape
        u = opts["units"]
        wii, wif, wig, wio = _gate_weights(
            ctx, params, ["wii", "wif", "wig", "wio"], "input_kernel"
        )
        whi, whf, whg, who = _gate_weights(
            ctx, params, ["whi", "whf", "whg", "who"], "hidden_kernel"
        )
        if opts["use_bias"]:
            bi, bf, bg, bo = _gate_weights(ctx, params, ["bi", "bf", "bg", "bo"], "bias")
        else:
            bi = bf = bg = bo = np.zeros(u)
        c, h = self._initial(states, (b, u), opts)
        keep = self._mask_steps(m, b, t)
        gate, act = opts["gate"], opts["activation"]
        seq = np.zeros((b, t, u))
        for step in range(t):
            xt = x[:, step]
            i = _apply(gate, xt @ wii + bi + h @ whi)
            f = _apply(gate, xt @ wif + bf + h @ whf)
            g = _apply(act, xt @ wig + bg + h @ whg)
            o = _apply(gate, xt @ wio + bo + h @ who)
            new_c = f * c + i * g
            new_h = o * _apply(act, new_c)
            k = keep[:, step][:, None]
            c = np.where(k, c, new_c)
            h = np.where(k, h, new_h)
            seq[:, step] = h
        dt = with_f32_params_np(np.asarray(inputs[0]).dtype)
        return (seq.astype(dt), (c.astype(dt), h.astype(dt)))

    def onnx(self, ctx, inputs, opts):
        x, states, m = self._split(inputs, opts)
        b, u, dt = ctx.b, opts["units"], ctx.out_type[0].dtype
        x = _cast_to(b, x, ctx.in_types[0].dtype, dt)
        c0, h0 = self._onnx_initial(ctx, x, states, opts, [b.ints([u])])
        p = self._onnx_params(ctx, dt)
        gate, act = opts["gate"], opts["activation"]
        attrs = _rnn_activation_attrs([gate, act, act], ["sigmoid", "tanh", "tanh"])
        if m is None and attrs is not None and dt == "f32":
            # ONNX LSTM: gates i, o, f, c; W (1, 4U, in), R (1, 4U, U), B (1, 8U) = [Wb, Rb]
            order = "iofg"
            w = _packed_kernel(b, [p("input_kernel", f"wi{g}") for g in order])
            r = _packed_kernel(b, [p("hidden_kernel", f"wh{g}") for g in order])
            bias = ""
            if opts["use_bias"]:
                zeros = b.const(np.zeros(4 * u, np.float32), hint="zeros")
                bias = _packed_bias(b, [*(p("bias", f"b{g}") for g in order), zeros])
            y, y_h, y_c = b.op(
                "LSTM",
                [_time_major(b, x), w, r, bias, "", _unsqueeze(b, h0, 0), _unsqueeze(b, c0, 0)],
                outputs=3,
                hidden_size=u,
                **attrs,
            )
            return (_batch_major(b, y), (_squeeze(b, y_c, 0), _squeeze(b, y_h, 0)))
        wi = b.op("Concat", [p("input_kernel", f"wi{g}") for g in "ifgo"], axis=1)
        wh = b.op("Concat", [p("hidden_kernel", f"wh{g}") for g in "ifgo"], axis=1)
        xw = b.op("MatMul", [x, wi])
        if opts["use_bias"]:
            xw = b.op("Add", [xw, b.op("Concat", [p("bias", f"b{g}") for g in "ifgo"], axis=0)])
        seqs = [(xw, dt, (None, 4 * u))]
        if m is not None:
            seqs.append((_keep_onnx(ctx, m, ctx.in_types[-1], x), "pred", (None,)))

        def step(bb, xs, states):
            c, h = states
            gates = bb.op("Add", [xs[0], bb.op("MatMul", [h, wh])])
            i, f, g, o = bb.op("Split", [gates, bb.ints([u] * 4)], outputs=4, axis=1)
            i, f, o = (_act(bb, gate, v, dt) for v in (i, f, o))
            g = _act(bb, act, g, dt)
            new_c = bb.op("Add", [bb.op("Mul", [f, c]), bb.op("Mul", [i, g])])
            new_h = bb.op("Mul", [o, _act(bb, act, new_c, dt)])
            if m is not None:
                keep = _unsqueeze(bb, xs[1], 1)
                new_c = bb.op("Where", [keep, c, new_c])
                new_h = bb.op("Where", [keep, h, new_h])
            return [new_c, new_h], new_h

        state = (None, u)
        seq, (c, h) = _recur(
            ctx,
            seqs,
            [(c0, dt, state), (h0, dt, state)],
            step,
            (dt, state),
            self._inline(ctx, opts),
        )
        return (seq, (c, h))

    def tflite(self, ctx, inputs, opts):
        x, states, m = self._split(inputs, opts)
        b, u = ctx.b, opts["units"]
        if ctx.in_types[0].dtype == "f64":
            raise ctx.unsupported("f64 input: LiteRT's kernels compute in f32")
        time = _tfl_time(ctx)
        x = b.cast(x, "f32")
        c, h = _tfl_initial(ctx, x, states, opts, 2)
        keep = _tfl_keep(ctx, m, time)
        bias = _tfl_weights(ctx, "bias", [f"b{g}" for g in "ifgo"]) if opts["use_bias"] else None
        xw = _tfl_fc(b, x, _tfl_weights(ctx, "input_kernel", [f"wi{g}" for g in "ifgo"]), bias)
        wh = _tfl_weights(ctx, "hidden_kernel", [f"wh{g}" for g in "ifgo"])
        gate, act = opts["gate"], opts["activation"]
        hs = []
        for t in range(time):
            z = b.binary("ADD", _tfl_step(b, xw, t, 4 * u), _tfl_fc(b, h, wh, None))
            i, f, g, o = _tfl_split(b, z, 4)
            i, f, o = (_tfl_act(b, gate, v) for v in (i, f, o))
            g = _tfl_act(b, act, g)
            new_c = b.binary("ADD", b.binary("MUL", f, c), b.binary("MUL", i, g))
            new_h = b.binary("MUL", o, _tfl_act(b, act, new_c))
            if keep[t] is not None:
                new_c = b.op("SELECT_V2", [keep[t], c, new_c], b.type_of(new_c))
                new_h = b.op("SELECT_V2", [keep[t], h, new_h], b.type_of(new_h))
            c, h = new_c, new_h
            hs.append(h)
        return (_tfl_stack(b, hs), (c, h))

    def vjp(self, ctx, inputs, output, cot, opts):
        """Backpropagation through time over the recomputed states (static time dim only)."""
        run = _Unrolled(self, ctx, inputs, opts)
        gate, act, gates = opts["gate"], opts["activation"], "ifgo"
        fn = {g: act if g == "g" else gate for g in gates}
        wi = {g: ctx.param("input_kernel", f"wi{g}") for g in gates}
        wh = {g: ctx.param("hidden_kernel", f"wh{g}") for g in gates}
        xs = [run.x[:, s] for s in range(run.time)]
        c, h = run.states
        saved = []
        for s, xt in enumerate(xs):
            z = {g: anp.matmul(xt, wi[g]) + anp.matmul(h, wh[g]) for g in gates}
            if opts["use_bias"]:
                z = {g: z[g] + ctx.param("bias", f"b{g}") for g in gates}
            y = {g: _act_fn(fn[g])(z[g]) for g in gates}
            new_c = y["f"] * c + y["i"] * y["g"]
            a = _act_fn(act)(new_c)
            saved.append((c, h, z, y, new_c, a))
            k = run.step_keep(s)
            c, h = _masked(k, c, new_c), _masked(k, h, y["o"] * a)
        seq_cot, (dc, dh) = _split_cot(cot, 2)
        dc, dh = _zero_or(dc, c), _zero_or(dh, h)
        dz: dict[str, list[Any]] = {g: [None] * run.time for g in gates}
        dx: list[Any] = [None] * run.time
        for s in reversed(range(run.time)):
            c_prev, _, z, y, new_c, a = saved[s]
            k = run.step_keep(s)
            if seq_cot is not None:
                dh = dh + seq_cot[:, s]
            d_new_h, dh = _split_masked(k, dh)
            d_new_c, dc = _split_masked(k, dc)
            d_new_c = d_new_c + _act_vjp(act, new_c, a, d_new_h * y["o"])
            dy = {"i": d_new_c * y["g"], "f": d_new_c * c_prev, "g": d_new_c * y["i"]}
            dy["o"] = d_new_h * a
            for g in gates:
                dz[g][s] = _act_vjp(fn[g], z[g], y[g], dy[g])
            dc = _plus(dc, d_new_c * y["f"])
            back = [anp.matmul(dz[g][s], wh[g].T) for g in gates]
            dh = _plus(dh, back[0] + back[1] + back[2] + back[3])
            ins = [anp.matmul(dz[g][s], wi[g].T) for g in gates]
            dx[s] = ins[0] + ins[1] + ins[2] + ins[3]
        h_prev = [hp for _, hp, *_ in saved]
        _gate_grads(ctx, opts, gates, xs, h_prev, dz, {g: f"b{g}" for g in gates})
        return run.cotangents(ctx, dx, [dc, dh])

    cases: ClassVar[list[Case]] = [
        Case(
            "zeros_state",
            lambda x: container(lstm(x, 4, recurrent_initializer="zeros")),
            [TensorType((None, 5, 3))],
        ),
        Case(
            "random_state_static",
            lambda x: container(lstm(x, 3, unroll="static", seed=7)),
            [TensorType((None, 4, 2))],
        ),
        Case(
            "no_bias",
            lambda x: container(lstm(x, 4, use_bias=False, recurrent_initializer="zeros")),
            [TensorType((None, 5, 3))],
        ),
        Case(
            "initial_state",
            lambda x, c, h: container(lstm(x, (c, h), 4)),
            [TensorType((None, 5, 3)), TensorType((None, 4)), TensorType((None, 4))],
        ),
        Case(
            "masked",
            lambda x, tok: container(lstm(x, 4, recurrent_initializer="zeros", mask=mask(tok, 0))),
            [TensorType((None, 5, 3)), TensorType((None, 5), "s32")],
            int_inputs={1: 3},
        ),
        Case(
            "relu_hard_sigmoid",
            lambda x: container(
                lstm(x, 2, activation="relu", gate="hard_sigmoid", recurrent_initializer="zeros")
            ),
            [TensorType((None, 3, 2))],
        ),
        Case(
            "masked_static",
            lambda x, tok: container(
                lstm(x, 3, unroll="static", recurrent_initializer="ones", mask=mask(tok, 1))
            ),
            [TensorType((None, 4, 2)), TensorType((None, 4), "s64")],
            int_inputs={1: 3},
        ),
        Case(
            # gate and cell activations whose alphas differ: no ONNX LSTM attribute form
            "elu_hard_sigmoid_full_state",
            lambda x: container(
                lstm(
                    x,
                    3,
                    activation="elu",
                    gate="hard_sigmoid",
                    recurrent_initializer={"name": "full", "value": 0.5},
                )
            ),
            [TensorType((None, 4, 2))],
        ),
    ]


@register
class GRU(_Recurrent):
    name = "gru"
    doc = (
        "Gated recurrent unit over (batch, time, features), linear-before-reset: "
        "n = act(x Win + bin + r (h Whn + bhn)), h' = (1 - z) n + z h; returns (seq, (h,))."
    )
    options: ClassVar[dict[str, Option]] = {**_COMMON, **_GATES}
    n_states = 1

    def params(self, types, opts, mode, node):
        x = types[0]
        self._check_x(x)
        features = self._in_features(x)
        u = opts["units"]
        specs = _gate_params("wi", "rzn", (features, u), opts["kernel_initializer"], "input_kernel")
        specs += _gate_params("wh", "rzn", (u, u), opts["kernel_initializer"], "hidden_kernel")
        if opts["use_bias"]:
            specs += [
                ParamSpec(("bias", n), (u,), opts["bias_initializer"])
                for n in ("br", "bz", "bin", "bhn")
            ]
        return specs

    def forward(self, ctx, inputs, params, opts):
        x, states, m = self._split(inputs, opts)
        x = np.asarray(x, dtype=np.float64)
        b, t, _ = x.shape
        u = opts["units"]
        wir, wiz, win = _gate_weights(ctx, params, ["wir", "wiz", "win"], "input_kernel")
        whr, whz, whn = _gate_weights(ctx, params, ["whr", "whz", "whn"], "hidden_kernel")
        if opts["use_bias"]:
            br, bz, bin_, bhn = _gate_weights(ctx, params, ["br", "bz", "bin", "bhn"], "bias")
        else:
            br = bz = bin_ = bhn = np.zeros(u)
        (h,) = self._initial(states, (b, u), opts)
        keep = self._mask_steps(m, b, t)
        gate, act = opts["gate"], opts["activation"]
        seq = np.zeros((b, t, u))
        for step in range(t):
            xt = x[:, step]
            r = _apply(gate, xt @ wir + br + h @ whr)
            z = _apply(gate, xt @ wiz + bz + h @ whz)
            n = _apply(act, xt @ win + bin_ + r * (h @ whn + bhn))
            new_h = (1.0 - z) * n + z * h
            h = np.where(keep[:, step][:, None], h, new_h)
            seq[:, step] = h
        dt = with_f32_params_np(np.asarray(inputs[0]).dtype)
        return (seq.astype(dt), (h.astype(dt),))

    def onnx(self, ctx, inputs, opts):
        x, states, m = self._split(inputs, opts)
        b, u, dt = ctx.b, opts["units"], ctx.out_type[0].dtype
        x = _cast_to(b, x, ctx.in_types[0].dtype, dt)
        (h0,) = self._onnx_initial(ctx, x, states, opts, [b.ints([u])])
        p = self._onnx_params(ctx, dt)
        gate, act = opts["gate"], opts["activation"]
        attrs = _rnn_activation_attrs([gate, act], ["sigmoid", "tanh"])
        zeros = b.const(np.zeros(u), dt, "zeros")
        if m is None and attrs is not None and dt == "f32":
            # ONNX GRU, linear_before_reset: gates z, r, h; B = [bz, br, bin, 0, 0, bhn]
            w = _packed_kernel(b, [p("input_kernel", f"wi{g}") for g in "zrn"])
            r = _packed_kernel(b, [p("hidden_kernel", f"wh{g}") for g in "zrn"])
            bias = ""
            if opts["use_bias"]:
                parts = [p("bias", n) for n in ("bz", "br", "bin")]
                bias = _packed_bias(b, [*parts, zeros, zeros, p("bias", "bhn")])
            y, y_h = b.op(
                "GRU",
                [_time_major(b, x), w, r, bias, "", _unsqueeze(b, h0, 0)],
                outputs=2,
                hidden_size=u,
                linear_before_reset=1,
                **attrs,
            )
            return (_batch_major(b, y), (_squeeze(b, y_h, 0),))
        wi = b.op("Concat", [p("input_kernel", f"wi{g}") for g in "rzn"], axis=1)
        wh = b.op("Concat", [p("hidden_kernel", f"wh{g}") for g in "rzn"], axis=1)
        xw = b.op("MatMul", [x, wi])
        bhn = zeros
        if opts["use_bias"]:
            xw = b.op(
                "Add", [xw, b.op("Concat", [p("bias", n) for n in ("br", "bz", "bin")], axis=0)]
            )
            bhn = p("bias", "bhn")
        seqs = [(xw, dt, (None, 3 * u))]
        if m is not None:
            seqs.append((_keep_onnx(ctx, m, ctx.in_types[-1], x), "pred", (None,)))

        def step(bb, xs, states):
            (h,) = states
            xr, xz, xn = bb.op("Split", [xs[0], bb.ints([u] * 3)], outputs=3, axis=1)
            hr, hz, hn = bb.op(
                "Split", [bb.op("MatMul", [h, wh]), bb.ints([u] * 3)], outputs=3, axis=1
            )
            r = _act(bb, gate, bb.op("Add", [xr, hr]), dt)
            z = _act(bb, gate, bb.op("Add", [xz, hz]), dt)
            n = _act(bb, act, bb.op("Add", [xn, bb.op("Mul", [r, bb.op("Add", [hn, bhn])])]), dt)
            one = bb.const(1.0, dt, "one")
            new_h = bb.op("Add", [bb.op("Mul", [bb.op("Sub", [one, z]), n]), bb.op("Mul", [z, h])])
            if m is not None:
                new_h = bb.op("Where", [_unsqueeze(bb, xs[1], 1), h, new_h])
            return [new_h], new_h

        state = (None, u)
        seq, (h,) = _recur(ctx, seqs, [(h0, dt, state)], step, (dt, state), self._inline(ctx, opts))
        return (seq, (h,))

    def tflite(self, ctx, inputs, opts):
        x, states, m = self._split(inputs, opts)
        b, u = ctx.b, opts["units"]
        if ctx.in_types[0].dtype == "f64":
            raise ctx.unsupported("f64 input: LiteRT's kernels compute in f32")
        time = _tfl_time(ctx)
        x = b.cast(x, "f32")
        (h,) = _tfl_initial(ctx, x, states, opts, 1)
        keep = _tfl_keep(ctx, m, time)
        if opts["use_bias"]:
            xb = _tfl_weights(ctx, "bias", ["br", "bz", "bin"])
            hb = np.concatenate([np.zeros(2 * u), ctx.value("bias", "bhn").astype(np.float64)])
        else:
            xb = hb = None
        xw = _tfl_fc(b, x, _tfl_weights(ctx, "input_kernel", [f"wi{g}" for g in "rzn"]), xb)
        wh = _tfl_weights(ctx, "hidden_kernel", [f"wh{g}" for g in "rzn"])
        gate, act = opts["gate"], opts["activation"]
        hs = []
        for t in range(time):
            xr, xz, xn = _tfl_split(b, _tfl_step(b, xw, t, 3 * u), 3)
            hr, hz, hn = _tfl_split(b, _tfl_fc(b, h, wh, hb), 3)
            r = _tfl_act(b, gate, b.binary("ADD", xr, hr))
            z = _tfl_act(b, gate, b.binary("ADD", xz, hz))
            n = _tfl_act(b, act, b.binary("ADD", xn, b.binary("MUL", r, hn)))
            # (1 - z) n + z h = n + z (h - n)
            new_h = b.binary("ADD", n, b.binary("MUL", z, b.binary("SUB", h, n)))
            if keep[t] is not None:
                new_h = b.op("SELECT_V2", [keep[t], h, new_h], b.type_of(new_h))
            h = new_h
            hs.append(h)
        return (_tfl_stack(b, hs), (h,))

    def vjp(self, ctx, inputs, output, cot, opts):
        """Backpropagation through time over the recomputed states (static time dim only)."""
        run = _Unrolled(self, ctx, inputs, opts)
        gate, act, gates = opts["gate"], opts["activation"], "rzn"
        wi = {g: ctx.param("input_kernel", f"wi{g}") for g in gates}
        wh = {g: ctx.param("hidden_kernel", f"wh{g}") for g in gates}
        xs = [run.x[:, s] for s in range(run.time)]
        (h,) = run.states
        saved = []
        for s, xt in enumerate(xs):
            zx = {g: anp.matmul(xt, wi[g]) for g in gates}
            zh = {g: anp.matmul(h, wh[g]) for g in gates}
            if opts["use_bias"]:
                zx = {g: zx[g] + ctx.param("bias", b) for g, b in zip(gates, ("br", "bz", "bin"))}
                zh["n"] = zh["n"] + ctx.param("bias", "bhn")
            zr, zz = zx["r"] + zh["r"], zx["z"] + zh["z"]
            r, z = _act_fn(gate)(zr), _act_fn(gate)(zz)
            zn = zx["n"] + r * zh["n"]
            n = _act_fn(act)(zn)
            saved.append((h, zr, r, zz, z, zn, n, zh["n"]))
            h = _masked(run.step_keep(s), h, (1.0 - z) * n + z * h)
        seq_cot, (dh,) = _split_cot(cot, 1)
        dh = _zero_or(dh, h)
        dz: dict[str, list[Any]] = {g: [None] * run.time for g in gates}
        dhn: list[Any] = [None] * run.time
        dx: list[Any] = [None] * run.time
        for s in reversed(range(run.time)):
            h_prev, zr, r, zz, z, zn, n, hn = saved[s]
            if seq_cot is not None:
                dh = dh + seq_cot[:, s]
            d_new, dh = _split_masked(run.step_keep(s), dh)
            dz["n"][s] = _act_vjp(act, zn, n, d_new * (1.0 - z))
            dz["z"][s] = _act_vjp(gate, zz, z, d_new * (h_prev - n))
            dz["r"][s] = _act_vjp(gate, zr, r, dz["n"][s] * hn)
            dhn[s] = dz["n"][s] * r
            back = anp.matmul(dz["r"][s], wh["r"].T) + anp.matmul(dz["z"][s], wh["z"].T)
            dh = _plus(dh, d_new * z + back + anp.matmul(dhn[s], wh["n"].T))
            ins = [anp.matmul(dz[g][s], wi[g].T) for g in gates]
            dx[s] = ins[0] + ins[1] + ins[2]
        h_prev = [hp for hp, *_ in saved]
        dzh = {"r": dz["r"], "z": dz["z"], "n": dhn}
        _gate_grads(ctx, opts, gates, xs, h_prev, dz, {"r": "br", "z": "bz", "n": "bin"}, dzh)
        if opts["use_bias"]:
            ctx.add_param_grad(("bias", "bhn"), _batch_sum(dhn))
        return run.cotangents(ctx, dx, [dh])

    cases: ClassVar[list[Case]] = [
        Case(
            "zeros_state",
            lambda x: container(gru(x, 4, recurrent_initializer="zeros")),
            [TensorType((None, 5, 3))],
        ),
        Case(
            "random_state_static",
            lambda x: container(gru(x, 3, unroll="static")),
            [TensorType((None, 4, 2))],
        ),
        Case(
            "no_bias",
            lambda x: container(gru(x, 4, use_bias=False, recurrent_initializer="zeros")),
            [TensorType((None, 5, 3))],
        ),
        Case(
            "initial_state",
            lambda x, h: container(gru(x, (h,), 4)),
            [TensorType((None, 5, 3)), TensorType((None, 4))],
        ),
        Case(
            "masked",
            lambda x, tok: container(gru(x, 4, recurrent_initializer="zeros", mask=mask(tok, 0))),
            [TensorType((None, 6, 3)), TensorType((None, 6), "s32")],
            int_inputs={1: 3},
        ),
        Case(
            "masked_long",
            lambda x, tok: container(gru(x, 3, recurrent_initializer="zeros", mask=mask(tok, 0))),
            [TensorType((None, 9, 2)), TensorType((None, 9), "s32")],
            int_inputs={1: 3},
        ),
        Case(
            "identity_state_hard_sigmoid",
            lambda x: container(gru(x, 4, gate="hard_sigmoid", recurrent_initializer="identity")),
            [TensorType((None, 3, 2))],
        ),
        Case(
            "softsign_static_no_bias",
            lambda x, h: container(
                gru(x, (h,), 3, activation="softsign", unroll="static", use_bias=False)
            ),
            [TensorType((None, 3, 2)), TensorType((None, 3))],
        ),
    ]


def _conv_first(
    x: np.ndarray, w: np.ndarray, strides: tuple[int, ...], pads: tuple[tuple[int, int], ...]
) -> np.ndarray:
    """Channels-first cross-correlation: x (B, C, *S), w (O, C, *k) -> (B, O, *S')."""
    n = w.ndim - 2
    pos = [(0, 0), (0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    xp = np.pad(x, pos)
    crop = (
        slice(None),
        slice(None),
        *(slice(max(-lo, 0), xp.shape[2 + i] - max(-hi, 0)) for i, (lo, hi) in enumerate(pads)),
    )
    xp = xp[crop]
    spatial = tuple(range(2, 2 + n))
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=spatial)
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in strides))]
    out = np.tensordot(win, w, axes=([1, *range(2 + n, 2 + 2 * n)], [1, *range(2, 2 + n)]))
    return np.moveaxis(out, -1, 1)


@register
class ConvLSTM(_Recurrent):
    name = "conv_lstm"
    doc = (
        "Convolutional LSTM over (batch, time, channels, spatial...): gates i, g, f, o from "
        "conv(x) + conv(h), c' = sigmoid(f + 1) c + sigmoid(i) tanh(g); returns (seq, (c, h))."
    )
    options: ClassVar[dict[str, Option]] = {
        **_COMMON,
        "padding": Option("same", check_padding, "'same' (Nx rule), 'valid' or (lo, hi) pairs"),
        "kernel_size": Option(
            1, check_int_or_tuple(), "kernel size, an int or one per spatial dim"
        ),
        "strides": Option(1, check_int_or_tuple(), "conv strides; the output must keep the size"),
    }
    min_rank = 4

    def _geometry(self, x: TensorType, opts: dict[str, Any]):
        n = x.rank - 3
        try:
            kernel = per_dim(opts["kernel_size"], n, "kernel_size")
            strides = per_dim(opts["strides"], n, "strides")
            pads = resolve_padding(opts["padding"], kernel, (1,) * n)
        except ValueError as exc:
            raise ShapeError(str(exc)) from None
        return kernel, strides, pads

    def _check_spatial(self, spatial: tuple, kernel, strides, pads) -> None:
        out = tuple(
            window_out(s, k, st, lo, hi)
            for s, k, st, (lo, hi) in zip(spatial, kernel, strides, pads, strict=True)
        )
        if any(
            o is not None and s is not None and o != s for o, s in zip(out, spatial, strict=True)
        ):
            raise ShapeError(
                f"conv_lstm needs convolutions that keep the spatial size {_fmt(spatial)} (the "
                f"state is added to their output), but kernel_size {kernel}, strides {strides} "
                f"and padding {pads} give {_fmt(out)}"
            )

    def params(self, types, opts, mode, node):
        x = types[0]
        self._check_x(x)
        kernel, _, _ = self._geometry(x, opts)
        channels = self._in_features(x, "channel")
        u4 = 4 * opts["units"]
        specs = [
            ParamSpec(("input_kernel",), (u4, channels, *kernel), opts["kernel_initializer"]),
            ParamSpec(("hidden_kernel",), (u4, opts["units"], *kernel), opts["kernel_initializer"]),
        ]
        if opts["use_bias"]:
            specs.append(ParamSpec(("bias",), (u4,), opts["bias_initializer"]))
        return specs

    def infer(self, types, opts, node):
        x, states, _ = self._split(types, opts)
        self._check_x(x)
        kernel, strides, pads = self._geometry(x, opts)
        b, t, _, *spatial = x.shape
        u = opts["units"]
        state = self._check_states(states, (b, 1, u, *spatial))
        self._check_spatial(tuple(state[3:]), kernel, strides, pads)
        dt = with_f32_params(x.dtype)
        st = TensorType(state, dt)
        return (TensorType((state[0], t, u, *state[3:]), dt), (st, st))

    def forward(self, ctx, inputs, params, opts):
        x, states, _ = self._split(inputs, opts)
        x = np.asarray(x, dtype=np.float64)
        b, t, _, *spatial = x.shape
        u = opts["units"]
        kernel, strides, pads = self._geometry(TensorType(x.shape), opts)
        self._check_spatial(tuple(spatial), kernel, strides, pads)
        wi = np.asarray(layer_param(params, "input_kernel", ctx), dtype=np.float64)
        wh = np.asarray(layer_param(params, "hidden_kernel", ctx), dtype=np.float64)
        bias = (
            np.asarray(layer_param(params, "bias", ctx), dtype=np.float64)
            if opts["use_bias"]
            else np.zeros(4 * u)
        )
        bias = bias.reshape((1, 4 * u) + (1,) * len(spatial))
        c, h = self._initial(states, (b, 1, u, *spatial), opts)
        c, h = c[:, 0], h[:, 0]
        seq = np.zeros((b, t, u, *spatial))
        for step in range(t):
            gates = _conv_first(x[:, step], wi, strides, pads) + bias
            gates = gates + _conv_first(h, wh, strides, pads)
            i, g, f, o = (gates[:, j * u : (j + 1) * u] for j in range(4))
            c = _sigmoid(f + 1.0) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            seq[:, step] = h
        dt = with_f32_params_np(np.asarray(inputs[0]).dtype)
        return (seq.astype(dt), (c[:, None].astype(dt), h[:, None].astype(dt)))

    def onnx(self, ctx, inputs, opts):
        x, states, _ = self._split(inputs, opts)
        xt = ctx.in_types[0]
        b, u, dt = ctx.b, opts["units"], ctx.out_type[0].dtype
        _, strides, pads = self._geometry(xt, opts)
        x = _cast_to(b, x, xt.dtype, dt)
        tail = [b.ints([1, u]), b.op("Shape", [x], start=3)]
        c0, h0 = (_squeeze(b, s, 1) for s in self._onnx_initial(ctx, x, states, opts, tail))
        p = self._onnx_params(ctx, dt)
        wi, wh = p("input_kernel"), p("hidden_kernel")
        bias = p("bias") if opts["use_bias"] else None
        one = b.const(1.0, dt, "one")

        def step(bb, xs, states):
            c, h = states
            gates = bb.op(
                "Add",
                [
                    _conv_onnx(bb, xs[0], wi, bias, strides, pads),
                    _conv_onnx(bb, h, wh, None, strides, pads),
                ],
            )
            i, g, f, o = bb.op("Split", [gates, bb.ints([u] * 4)], outputs=4, axis=1)
            forget = bb.op("Sigmoid", [bb.op("Add", [f, one])])
            new_c = bb.op(
                "Add",
                [
                    bb.op("Mul", [forget, c]),
                    bb.op("Mul", [bb.op("Sigmoid", [i]), bb.op("Tanh", [g])]),
                ],
            )
            new_h = bb.op("Mul", [bb.op("Sigmoid", [o]), bb.op("Tanh", [new_c])])
            return [new_c, new_h], new_h

        state = (None, u, *ctx.out_type[1][0].shape[3:])
        seqs = [(x, dt, (None, *xt.shape[2:]))]
        seq, (c, h) = _recur(
            ctx,
            seqs,
            [(c0, dt, state), (h0, dt, state)],
            step,
            (dt, state),
            self._inline(ctx, opts),
        )
        return (seq, (_unsqueeze(b, c, 1), _unsqueeze(b, h, 1)))

    def tflite(self, ctx, inputs, opts):
        """Unrolled as lstm, channels last inside: every step's input convolved at once
        (batch and time merged), then per step the state's convolution and the gates."""
        x, states, _ = self._split(inputs, opts)
        b, u, xt = ctx.b, opts["units"], ctx.in_types[0]
        if xt.dtype == "f64":
            raise ctx.unsupported("f64 input: LiteRT's kernels compute in f32")
        time = _tfl_time(ctx)
        spatial = xt.shape[3:]
        if any(d is None for d in (*spatial, xt.shape[2])):
            raise ctx.unsupported("dynamic channel or spatial dims")
        n = len(spatial)
        kernel, strides, pads = self._geometry(xt, opts)
        geo = Geometry(kernel, strides, pads, (1,) * n, (1,) * n)
        to_last = [0, *range(2, n + 2), 1]
        hwio = lambda w: w.astype(np.float32).transpose(*range(2, n + 2), 1, 0)  # noqa: E731
        x = b.cast(x, "f32")
        x = b.transpose(x, [0, 1, *range(3, n + 3), 2])  # (batch, time, spatial..., channels)
        cin = xt.shape[2]
        merged = b.reshape(x, (None, *spatial, cin))
        bias = ctx.value("bias") if opts["use_bias"] else None
        xw = _tfl_conv(ctx, merged, cin, geo, 1, hwio(ctx.value("input_kernel")), bias)
        xw = b.reshape(xw, (xt.shape[0], time, *spatial, 4 * u))
        if states:
            states = [
                b.transpose(b.reshape(b.cast(s, "f32"), (xt.shape[0], u, *spatial)), to_last)
                for s in states
            ]
        c, h = _tfl_initial(ctx, x, states, opts, 2, (*spatial, u))
        wh = hwio(ctx.value("hidden_kernel"))
        one = b.const(np.float32(1.0))
        hs = []
        for t in range(time):
            begin = [0, t] + [0] * (n + 1)
            size = [-1, 1, *spatial, 4 * u]
            step = b.op(
                "SLICE",
                [xw, b.ints(begin, "begin"), b.ints(size, "size")],
                TensorType((xt.shape[0], 1, *spatial, 4 * u), "f32"),
            )
            z = b.binary(
                "ADD",
                b.reshape(step, (xt.shape[0], *spatial, 4 * u)),
                _tfl_conv(ctx, h, u, geo, 1, wh, None),
            )
            zt = b.type_of(z)
            piece = zt.with_shape((*zt.shape[:-1], u))
            i, g, f, o = b.op(
                "SPLIT",
                [b.ints([zt.rank - 1], "axis"), z],
                [piece] * 4,
                options=b.options("Split", numSplits=4),
            )
            forget = b.unary("LOGISTIC", b.binary("ADD", f, one))
            c = b.binary(
                "ADD",
                b.binary("MUL", forget, c),
                b.binary("MUL", b.unary("LOGISTIC", i), b.unary("TANH", g)),
            )
            h = b.binary("MUL", b.unary("LOGISTIC", o), b.unary("TANH", c))
            hs.append(h)
        seq = _tfl_stack(b, hs)
        seq = b.transpose(seq, [0, 1, n + 2, *range(2, n + 2)])
        first = [0, n + 1, *range(1, n + 1)]
        c, h = (b.reshape(b.transpose(v, first), (xt.shape[0], 1, u, *spatial)) for v in (c, h))
        return (seq, (c, h))

    def vjp(self, ctx, inputs, output, cot, opts):
        """Backpropagation through time; each step's convolutions through conv_vjp."""
        run = _Unrolled(self, ctx, inputs, opts)
        u = opts["units"]
        kernel, strides, pads = self._geometry(ctx.in_types[0], opts)
        n = len(kernel)
        geo = Geometry(kernel, strides, pads, (1,) * n, (1,) * n)
        conv_opts = {"strides": strides, "padding": pads}
        wi, wh = ctx.param("input_kernel"), ctx.param("hidden_kernel")
        xs = [run.x[:, s] for s in range(run.time)]
        c, h = (state[:, 0] for state in run.states)
        saved = []
        for xt in xs:
            z = conv_general(xt, wi, **conv_opts) + conv_general(h, wh, **conv_opts)
            if opts["use_bias"]:
                z = z + anp.reshape(ctx.param("bias"), (4 * u,) + (1,) * n)
            zi, zg, zf, zo = (z[:, j * u : (j + 1) * u] for j in range(4))
            y = {"i": _sigmoid_t(zi), "g": anp.tanh(zg), "f": _sigmoid_t(zf + 1.0)}
            y["o"] = _sigmoid_t(zo)
            new_c = y["f"] * c + y["i"] * y["g"]
            a = anp.tanh(new_c)
            saved.append((c, h, (zi, zg, zf + 1.0, zo), y, new_c, a))
            c, h = new_c, y["o"] * a
        seq_cot, (dc, dh) = _split_cot(cot, 2)
        dc = anp.zeros_like(c) if dc is None else dc[:, 0]
        dh = anp.zeros_like(h) if dh is None else dh[:, 0]
        dx: list[Any] = [None] * run.time
        for s in reversed(range(run.time)):
            c_prev, h_prev, (zi, zg, zf, zo), y, new_c, a = saved[s]
            if seq_cot is not None:
                dh = dh + seq_cot[:, s]
            d_new_c = dc + _act_vjp("tanh", new_c, a, dh * y["o"])
            dz = anp.concatenate(
                [
                    _act_vjp("sigmoid", zi, y["i"], d_new_c * y["g"]),
                    _act_vjp("tanh", zg, y["g"], d_new_c * y["i"]),
                    _act_vjp("sigmoid", zf, y["f"], d_new_c * c_prev),
                    _act_vjp("sigmoid", zo, y["o"], dh * a),
                ],
                axis=1,
            )
            dc = d_new_c * y["f"]
            want_x = is_float(ctx.in_types[0].dtype)
            dx[s], dwi = conv_vjp(
                xs[s].astype(dz.dtype),
                wi.astype(dz.dtype),
                dz,
                geo,
                1,
                want_x=want_x,
                want_w=ctx.wants_param("input_kernel"),
            )
            dh, dwh = conv_vjp(
                h_prev.astype(dz.dtype),
                wh.astype(dz.dtype),
                dz,
                geo,
                1,
                want_w=ctx.wants_param("hidden_kernel"),
            )
            if dwi is not None:
                ctx.add_param_grad("input_kernel", dwi)
            if dwh is not None:
                ctx.add_param_grad("hidden_kernel", dwh)
            if opts["use_bias"]:
                ctx.add_param_grad("bias", anp.sum(dz, axis=(0, *range(2, 2 + n))))
        states = [anp.expand_dims(dc, 1), anp.expand_dims(dh, 1)]
        return run.cotangents(ctx, dx, states)

    cases: ClassVar[list[Case]] = [
        Case(
            "k3_zeros_state",
            lambda x: container(conv_lstm(x, 2, kernel_size=3, recurrent_initializer="zeros")),
            [TensorType((None, 3, 2, 4, 4))],
        ),
        Case(
            "k1_random_state",
            lambda x: container(conv_lstm(x, 3)),
            [TensorType((None, 2, 2, 3, 5))],
        ),
        Case(
            "initial_state_no_bias_static",
            lambda x, c, h: container(
                conv_lstm(x, (c, h), 2, kernel_size=(3, 1), use_bias=False, unroll="static")
            ),
            [
                TensorType((None, 3, 2, 4, 4)),
                TensorType((None, 1, 2, 4, 4)),
                TensorType((None, 1, 2, 4, 4)),
            ],
        ),
        Case(
            "conv1d_even_kernel",
            lambda x: container(conv_lstm(x, 2, kernel_size=2, recurrent_initializer="zeros")),
            [TensorType((None, 3, 2, 5))],
        ),
        Case(
            "identity_state",
            lambda x: container(conv_lstm(x, 2, kernel_size=3, recurrent_initializer="identity")),
            [TensorType((None, 3, 1, 3, 4))],
        ),
        Case(
            "conv1d_negative_padding_static",
            lambda x: container(
                conv_lstm(
                    x,
                    2,
                    kernel_size=3,
                    padding=[(-1, 3)],
                    unroll="static",
                    recurrent_initializer="ones",
                )
            ),
            [TensorType((None, 2, 2, 5))],
        ),
    ]


@register
class Mask(Op):
    name = "mask"
    family = "recurrent"
    doc = (
        "Sequence mask for the RNNs: (input as s64 == eos_token), a u8 tensor of the input's shape."
    )
    options: ClassVar[dict[str, Option]] = {
        "eos_token": Option(REQUIRED, check_int(), "the token value to mark")
    }

    def infer(self, types, opts, node):
        (t,) = types
        if not isinstance(t, TensorType):
            raise ShapeError(f"mask expects a single tensor, got {t!r}")
        return TensorType(t.shape, "u8")

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        if x.dtype.kind == "f":
            x = np.trunc(x)
        return (x.astype(np.int64) == opts["eos_token"]).astype(np.uint8)

    def onnx(self, ctx, inputs, opts):
        b, x, t = ctx.b, inputs[0], ctx.in_types[0]
        # a float input truncates toward zero on the cast, as np.trunc in the reference
        x = x if t.dtype == "s64" else b.cast(x, "s64")
        eq = b.op("Equal", [x, b.ints([opts["eos_token"]], hint="eos_token")])
        if t.rank == 0:
            eq = b.op("Reshape", [eq, b.ints([], hint="scalar_shape")])
        return b.cast(eq, "u8")

    def tflite(self, ctx, inputs, opts):
        """A float input truncates toward zero in the cast to s32, as np.trunc does."""
        b = ctx.b
        x = b.cast(inputs[0], "s32")
        eq = b.compare("EQUAL", x, b.scalar(opts["eos_token"], x))
        return b.cast(eq, "u8")

    cases: ClassVar[list[Case]] = [
        Case("tokens", lambda t: mask(t, 0), [TensorType((None, 6), "s32")], int_inputs={0: 4}),
        Case("floats", lambda x: mask(x, 1), [TensorType((None, 3, 2))]),
    ]


@register
class InitialState(Op):
    """The initial RNN state drawn from an initializer, as the recurrent layers draw it.

    Gradient graphs use it to recompute a layer's states when no hidden_state was
    given; it has no gradient (the draw does not depend on x's values).
    """

    name = "rnn_initial_state"
    family = "recurrent"
    doc = (
        "The (batch, units) state (conv: (batch, 1, units, spatial...)) an RNN without a "
        "hidden_state starts from: recurrent_initializer drawn with seed; x gives the batch."
    )
    options: ClassVar[dict[str, Option]] = {
        "units": Option(REQUIRED, check_int(1), "the number of hidden units"),
        "conv": Option(False, check_bool, "conv_lstm's layout: x's spatial dims follow units"),
        "initializer": Option("glorot_uniform", check_initializer, "the recurrent_initializer"),
        "seed": Option(0, check_int(), "the layer's seed"),
    }

    def _shape(self, x: tuple, opts: dict[str, Any]) -> tuple:
        if opts["conv"]:
            return (x[0], 1, opts["units"], *x[3:])
        return (x[0], opts["units"])

    def infer(self, types, opts, node):
        (x,) = types
        if not isinstance(x, TensorType) or x.rank < (4 if opts["conv"] else 3):
            want = (
                "(batch, time, channels, spatial...)" if opts["conv"] else "(batch, time, features)"
            )
            raise ShapeError(f"expected an RNN input {want}, got {x!r}")
        return TensorType(self._shape(x.shape, opts), "f32")

    def forward(self, ctx, inputs, params, opts):
        shape = self._shape(np.shape(inputs[0]), opts)
        return initialize(opts["initializer"], shape, "f32", opts["seed"])

    def onnx(self, ctx, inputs, opts):
        (x,) = inputs
        b, u = ctx.b, opts["units"]
        tail = [b.ints([1, u]), b.op("Shape", [x], start=3)] if opts["conv"] else [b.ints([u])]
        spec, seed = opts["initializer"], opts["seed"]
        return _onnx_draw(ctx, x, spec, seed, ctx.out_type.shape, tail, "f32")

    def vjp(self, ctx, inputs, output, cot, opts):
        return [None]

    cases: ClassVar[list[Case]] = [
        Case(
            "random", lambda x: initial_state(x, 3, "glorot_uniform", 5), [TensorType((None, 4, 2))]
        ),
        Case("zeros", lambda x: initial_state(x, 2, "zeros", 0), [TensorType((None, 4, 2))]),
        Case(
            "conv_identity",
            lambda x: initial_state(x, 2, "identity", 0, conv=True),
            [TensorType((None, 2, 3, 4, 4))],
        ),
    ]


def initial_state(x: Axon, units: int, initializer: Any, seed: int, *, conv: bool = False) -> Axon:
    """The initial state an RNN over `x` draws without a hidden_state (see InitialState)."""
    opts = {"units": units, "conv": conv, "initializer": initializer, "seed": seed}
    return make_node("rnn_initial_state", [x], opts)


# ---------------------------------------------------------------------------
# Layer constructors


def _state_and_units(
    op: str, state_or_units: Any, units: Any, n_states: int
) -> tuple[tuple[Axon, ...] | None, Any]:
    """Axon's two call forms: (x, units) or (x, hidden_state_tuple, units)."""
    if isinstance(state_or_units, tuple):
        if len(state_or_units) != n_states or not all(isinstance(s, Axon) for s in state_or_units):
            form = "(c, h)" if n_states == 2 else "(h,)"
            raise OptionError(
                f"{op} layer: hidden_state must be a tuple {form} of Axon graphs, "
                f"got {state_or_units!r}"
            )
        if units is None:
            raise OptionError(f"{op} layer: option 'units' is required")
        return state_or_units, units
    if units is not None:
        raise OptionError(
            f"{op} layer: with units given positionally, the second argument must be the "
            f"hidden_state tuple, got {state_or_units!r}"
        )
    return None, state_or_units


def _build(
    op: str,
    x: Axon,
    state_or_units: Any,
    units: Any,
    n_states: int,
    mask_graph: Axon | None,
    name: str | None,
    opts: dict[str, Any],
) -> Any:
    states, units = _state_and_units(op, state_or_units, units, n_states)
    internal = sorted({"state_input", "mask_input"} & set(opts))
    if internal:
        raise OptionError(
            f"{op} layer: {', '.join(internal)} are set from the hidden_state and mask "
            "arguments, not given as options"
        )
    given_random = sorted({"recurrent_initializer", "seed"} & set(opts))
    if states is not None and given_random:
        raise OptionError(
            f"{op} layer: {', '.join(given_random)} only apply without a hidden_state "
            "(they draw the initial state)"
        )
    inputs = [x, *(states or ())]
    flags = {"state_input": states is not None}
    if mask_graph is not None:
        inputs.append(mask_graph)
        flags["mask_input"] = True
    node = make_node(op, inputs, {**opts, "units": units, **flags}, name=name)
    return unpack(node, (0, (0,) * n_states))


@layer_api
def lstm(
    x: Axon,
    state_or_units: Any,
    units: int | None = None,
    *,
    mask: Axon | None = None,
    name: str | None = None,
    **opts: Any,
) -> tuple[Axon, tuple[Axon, Axon]]:
    """LSTM layer: `lstm(x, units, **opts)` or `lstm(x, (c0, h0), units, **opts)`.

    Returns the Python tuple `(seq, (c, h))` of graphs (cell first, as in Axon).
    `mask` is a (batch, time) graph (e.g. `ax.mask(tokens, 0)`): where it is 1 the
    cell keeps its previous state. Options: activation, gate, unroll, use_bias,
    kernel_initializer, bias_initializer, recurrent_initializer, seed.
    """
    return _build("lstm", x, state_or_units, units, 2, mask, name, opts)


@layer_api
def gru(
    x: Axon,
    state_or_units: Any,
    units: int | None = None,
    *,
    mask: Axon | None = None,
    name: str | None = None,
    **opts: Any,
) -> tuple[Axon, tuple[Axon]]:
    """GRU layer: `gru(x, units, **opts)` or `gru(x, (h0,), units, **opts)`; returns `(seq, (h,))`.

    Same options and mask as `lstm`.
    """
    return _build("gru", x, state_or_units, units, 1, mask, name, opts)


@layer_api
def conv_lstm(
    x: Axon,
    state_or_units: Any,
    units: int | None = None,
    *,
    name: str | None = None,
    **opts: Any,
) -> tuple[Axon, tuple[Axon, Axon]]:
    """ConvLSTM layer over (batch, time, channels, spatial...): returns `(seq, (c, h))`.

    `conv_lstm(x, units, **opts)` or `conv_lstm(x, (c0, h0), units, **opts)`, states of
    shape (batch, 1, units, spatial...). Options: padding, kernel_size, strides, unroll,
    use_bias, kernel_initializer, bias_initializer, recurrent_initializer, seed. Axon's
    conv_lstm accepts a `mask` but ignores it; here it is an error instead.
    """
    if "mask" in opts:
        raise OptionError(
            "conv_lstm layer: masking is not supported (Axon 0.8's conv_lstm cell ignores its mask)"
        )
    return _build("conv_lstm", x, state_or_units, units, 2, None, name, opts)


@layer_api
def mask(x: Axon, eos_token: int, *, name: str | None = None) -> Axon:
    """Sequence mask `x == eos_token` (u8, input cast to s64), for the RNNs' `mask` option."""
    return make_node("mask", [x], {"eos_token": eos_token}, name=name)
