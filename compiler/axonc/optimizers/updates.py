"""Polaris.Updates: update combinators, each an `(init_fn, update_fn)` pair, composable.

    opt = updates.scale_by_adam(updates.clip(delta=1.0), b2=0.99)   # clip |> scale_by_adam
    opt = updates.scale(opt, -1e-3)                                  # |> scale(-1e-3)
    init_fn, update_fn = opt
    state = init_fn(params)
    grads_out, state = update_fn(grads, state, params)
    params = ax.optimizers.apply_updates(params, grads_out)

Elixir's pipe `a |> f(opts)` is `f(a, **opts)`: every combinator takes the combinator it
extends as its first, optional, argument (Polaris's `combinator_or_opts`) and its options
as keywords, with Polaris's names and defaults; `scale`, `scale_by_state`,
`scale_by_schedule` and `accumulate_gradients` take their value positionally, after the
optional combinator. Unknown options are an OptionError.

State, as Polaris has it: `init_fn(params)` returns a tuple with one entry per stateful
combinator, the outermost first; each entry is a dict (`{"mu": tree, "nu": tree,
"count": s32}` for scale_by_adam, `{"trace": tree}` for trace, ...); stateless
combinators (scale, clip, centralize, ...) add nothing. `compose(a, b)` puts b's state
first. A built-in optimizer (`ax.optimizers.adam(...)`) used as a combinator's parent or
in `compose` counts as one entry (its dict).

Every update is written with `axonc.numpy`, so a pair runs eagerly on numpy arrays and
compiles into the trainer's step graph (`ax.train.compile_step`, `ax.Loop.trainer`) like
a built-in optimizer. The stateful rules share the built-in optimizers' minimal
per-parameter expressions (their bias corrections are scalars computed once per step).

Where axonc departs from Polaris (each for correctness, and the same in the built-ins):
scale_by_belief uses AdaBelief's belief term (g - m)^2 (Polaris uses g^2); scale_by_radam's
rho_inf is 2 / (1 - b2) - 1 (Polaris uses b1); add_noise's noise has standard deviation
sqrt(eta / (t+1)^gamma) (Polaris multiplies by the variance), draws from a Philox key held
in its state and runs eagerly only (a compiled step takes noise as an input: use the
built-in noisy_sgd there); accumulate_gradients applies the mean of the `steps`
accumulated gradients every `steps` calls (Polaris's code divides only the last gradient
and runs a cycle of steps + 1 calls). `skip_not_finite` is not in Polaris 0.1: it is
optax's apply_if_finite without an error budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import numpy as anp
from ..errors import OptionError, TraceError
from ..ir import tree_leaves, tree_map
from ..registry import check_bool, check_float
from ..tracing import Tensor
from . import builtin as b
from ._tree import Leaf, as_leaf, cast, eager, leaves_at, option, params_of, paths, rebuild

__all__ = [
    "Combinator",
    "accumulate_gradients",
    "add_decayed_weights",
    "add_noise",
    "as_pair",
    "centralize",
    "clip",
    "clip_by_global_norm",
    "compose",
    "identity",
    "scale",
    "scale_by_adam",
    "scale_by_belief",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_state",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "skip_not_finite",
    "stateful",
    "stateless",
]

InitFn = Callable[[Any], Any]
UpdateFn = Callable[[Any, Any, Any], tuple[Any, Any]]


class Combinator:
    """Polaris's `{init_fn, update_fn}`: unpacks as a pair; `init` / `update` accept a
    ModelState for `params` (its trainable parameters)."""

    def __init__(self, init_fn: InitFn, update_fn: UpdateFn, name: str = "combinator"):
        self._init, self._update, self.name = init_fn, update_fn, name

    def init(self, params: Any) -> tuple:
        """The initial state: a tuple, one dict per stateful combinator (outermost first)."""
        return self._init(params_of(params))

    def update(self, updates: Any, state: tuple, params: Any = None) -> tuple[Any, tuple]:
        """(new updates, new state), as Polaris's update_fn."""
        return self._update(params_of(updates), state, params_of(params))

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter((self.init, self.update))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Callable[..., Any]:
        return (self.init, self.update)[index]

    def __repr__(self) -> str:
        return f"optimizers.updates.{self.name}"


def as_pair(pair: Any, what: str = "optimizer") -> tuple[InitFn, UpdateFn]:
    """`(init_fn, update_fn)` of a combinator, a built-in optimizer or a pair of functions."""
    if isinstance(pair, (Combinator, b.Optimizer)):
        return pair.init, pair.update
    if isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(callable, pair)):
        return pair[0], pair[1]
    raise OptionError(
        f"{what} must be an (init_fn, update_fn) pair (an ax.optimizers optimizer or "
        f"combinator, or a tuple of two functions), got {pair!r}"
    )


def _tupled(pair: Any) -> tuple[InitFn, UpdateFn]:
    """A parent whose state is a tuple: a Combinator's own, anything else's as one entry."""
    init_fn, update_fn = as_pair(pair, "combinator")
    if isinstance(pair, Combinator):
        return init_fn, update_fn

    def update(updates: Any, state: tuple, params: Any) -> tuple[Any, tuple]:
        out, new = update_fn(updates, state[0], params)
        return out, (new,)

    return (lambda params: (init_fn(params),)), update


def _parent(combinator: Any) -> tuple[InitFn, UpdateFn]:
    """The combinator a new one extends (identity when None), with a tuple state."""
    return _tupled(identity() if combinator is None else combinator)


# ---------------------------------------------------------------------------
# Primitives


def identity(combinator: Any = None) -> Combinator:
    """The update that changes nothing (state `()`); with an argument, that combinator."""
    if combinator is not None:
        init_fn, update_fn = as_pair(combinator, "combinator")
        return Combinator(init_fn, update_fn, getattr(combinator, "name", "combinator"))
    return Combinator(lambda params: (), lambda u, s, p: (u, s), "identity")


def stateless(*args: Any, name: str = "stateless") -> Combinator:
    """`stateless([combinator], apply_fn)`: apply_fn(updates, params) -> updates, after the
    combinator."""
    combinator, apply_fn = _split(args, "stateless")
    parent_init, parent_update = _parent(combinator)

    def update(updates: Any, state: tuple, params: Any) -> tuple[Any, tuple]:
        updates, state = parent_update(updates, state, params)
        return apply_fn(updates, params), state

    return Combinator(parent_init, update, name)


def stateful(*args: Any, name: str = "stateful") -> Combinator:
    """`stateful([combinator], init_fn, apply_fn)`: init_fn(params) -> this state;
    apply_fn(updates, state, params) -> (updates, state), after the combinator; the state
    goes first in the tuple."""
    if len(args) == 2:
        combinator, (init_fn, apply_fn) = None, args
    elif len(args) == 3:
        combinator, init_fn, apply_fn = args
    else:
        raise OptionError("stateful: expected ([combinator,] init_fn, apply_fn)")
    parent_init, parent_update = _parent(combinator)

    def init(params: Any) -> tuple:
        return (init_fn(params), *parent_init(params))

    def update(updates: Any, state: tuple, params: Any) -> tuple[Any, tuple]:
        updates, other = parent_update(updates, tuple(state[1:]), params)
        updates, this = apply_fn(updates, state[0], params)
        return updates, (this, *other)

    return Combinator(init, update, name)


def compose(first: Any, second: Any) -> Combinator:
    """`first` then `second` (Polaris compose): state `(second's state, *first's)`."""
    init1, update1 = _tupled(first)
    init2, update2 = as_pair(second, "compose's second argument")

    def init(params: Any) -> tuple:
        return (init2(params), *init1(params))

    def update(updates: Any, state: tuple, params: Any) -> tuple[Any, tuple]:
        updates, other = update1(updates, tuple(state[1:]), params)
        updates, this = update2(updates, state[0], params)
        return updates, (this, *other)

    return Combinator(init, update, "compose")


def _split(args: tuple, owner: str) -> tuple[Any, Any]:
    """Polaris's `f(combinator \\\\ identity(), value)`: (None, value) or (combinator, value)."""
    if len(args) == 1:
        return None, args[0]
    if len(args) == 2:
        return args[0], args[1]
    raise OptionError(f"{owner}: expected ([combinator,] value), got {len(args)} arguments")


def _options(owner: str, given: dict, table: dict) -> dict:
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise OptionError(
            f"{owner}: unknown option {unknown[0]!r}; valid options: {', '.join(table) or 'none'}"
        )
    return {
        k: option(owner, k, given[k], check) if k in given else default
        for k, (default, check) in table.items()
    }


# ---------------------------------------------------------------------------
# Leaf-wise helpers


def _leafwise(fn: Callable[..., Leaf], updates: Any, *others: tuple[Any, str]) -> Any:
    """fn(update_leaf, *other_leaves) for every leaf, `others` paired with the updates by path."""
    at = paths(updates)
    columns = [leaves_at(updates, at, "updates")]
    columns += [leaves_at(tree, at, what) for tree, what in others]
    return rebuild(updates, eager([fn(*row) for row in zip(*columns, strict=True)]))


def _fulls_like(params: Any, value: float) -> Any:
    return tree_map(lambda p: anp.full_like(as_leaf(p), value, "f32"), params)


def _count(state: dict) -> Any:
    count = state["count"]
    return count if isinstance(count, Tensor) else np.asarray(count, np.int32)


def _times(x: Leaf, c: Any) -> Leaf:
    return x if c is None or (isinstance(c, float) and c == 1.0) else x * c


def _rule(
    owner: str,
    combinator: Any,
    rule: Callable[..., tuple],
    options: dict,
    fills: dict[str, float],
    *,
    scalars: Callable[[dict, Any, Any], dict] = b._no_scalars,
    counted: bool = False,
) -> Combinator:
    """A stateful combinator from one of the built-in per-parameter rules.

    The rules scale by a learning rate; here the learning rate is -1, so their scalar
    coefficient is the unscaled factor (1 for most, Adam's bias correction for others).
    The rules used here do not read the parameter.
    """

    def init(params: Any) -> dict:
        state = {slot: _fulls_like(params, fill) for slot, fill in fills.items()}
        if counted:
            state["count"] = np.zeros((), np.int32)
        return state

    def apply(updates: Any, state: dict, params: Any) -> tuple[Any, dict]:
        at = paths(updates)
        g = leaves_at(updates, at, "updates")
        slots = {k: leaves_at(state[k], at, f"{owner} state {k!r}") for k in fills}
        count = _count(state) if counted else np.zeros((), np.int32)
        k = scalars(options, anp.astype(count, "f32") + 1.0, -1.0)
        out, new = [], {slot: [] for slot in fills}
        for i, gi in enumerate(g):
            d, c, s = rule(gi, None, {n: v[i] for n, v in slots.items()}, k, None, options)
            out.append(_times(d, c))
            for slot in fills:
                new[slot].append(cast(s[slot], np.float32))
        new_state = {slot: rebuild(updates, eager(v)) for slot, v in new.items()}
        if counted:
            new_state["count"] = anp.add(count, np.int32(1))
        return rebuild(updates, eager(out)), new_state

    return stateful(combinator, init, apply, name=owner)


_unit = check_float(lo=0.0, hi=1.0, hi_open=True)
_nonneg = check_float(lo=0.0)
_ADAM = {"b1": (0.9, _unit), "b2": (0.999, _unit), "eps": (1.0e-8, _nonneg)}


# ---------------------------------------------------------------------------
# Scaling


def _check_step(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v
    arr = np.asarray(v)
    if arr.dtype.kind not in "iuf" or arr.ndim:
        raise ValueError(f"expected a number or a scalar tensor, got {v!r}")
    return float(arr) if arr.dtype.kind == "f" else int(arr)


def scale(*args: Any) -> Combinator:
    """`scale([combinator], step_size)`: every update times step_size."""
    combinator, step = _split(args, "scale")
    step = option("scale", "step_size", step, _check_step)
    return stateless(
        combinator, lambda u, p: _leafwise(lambda x: x * step, u), name=f"scale({step!r})"
    )


def scale_by_state(*args: Any) -> Combinator:
    """`scale_by_state([combinator], step)`: times a step held in the state, `{"scale": f32}`
    (Polaris keeps it there so that a loop can change it)."""
    combinator, step = _split(args, "scale_by_state")
    step = option("scale_by_state", "step", step, check_float())

    def apply(updates: Any, state: dict, params: Any) -> tuple[Any, dict]:
        s = state["scale"]
        return _leafwise(lambda x: x * cast(as_leaf(s), x.dtype), updates), state

    def init(params: Any) -> dict:
        return {"scale": np.asarray(step, np.float32)}

    return stateful(combinator, init, apply, name="scale_by_state")


def scale_by_schedule(*args: Any) -> Combinator:
    """`scale_by_schedule([combinator], schedule_fn)`: times schedule_fn(count), count the
    updates done so far (0 first); state `{"count": s32}`."""
    combinator, schedule = _split(args, "scale_by_schedule")
    if not callable(schedule):
        raise OptionError(f"scale_by_schedule: expected a schedule function, got {schedule!r}")

    def apply(updates: Any, state: dict, params: Any) -> tuple[Any, dict]:
        count = _count(state)
        step = schedule(count)
        out = _leafwise(lambda x: x * cast(as_leaf(step), x.dtype), updates)
        return out, {"count": anp.add(count, np.int32(1))}

    return stateful(
        combinator,
        lambda params: {"count": np.zeros((), np.int32)},
        apply,
        name="scale_by_schedule",
    )


def scale_by_adam(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Adam's m_hat / (sqrt(v_hat + eps_root) + eps). Options: b1 0.9, b2 0.999, eps 1e-8,
    eps_root 1e-15. State `{"mu", "nu", "count"}`."""
    o = _options("scale_by_adam", opts, {**_ADAM, "eps_root": (1.0e-15, _nonneg)})
    return _rule(
        "scale_by_adam",
        combinator,
        b._adam,
        o,
        {"mu": 0.0, "nu": 0.0},
        scalars=b._adam_scalars,
        counted=True,
    )


def scale_by_belief(combinator: Any = None, /, **opts: Any) -> Combinator:
    """AdaBelief's m_hat / (sqrt(s_hat) + eps), s the EMA of (g - m)^2 + eps_root. Options:
    b1 0.9, b2 0.999, eps 0.0, eps_root 1e-16. State `{"mu", "nu", "count"}`."""
    table = {**_ADAM, "eps": (0.0, _nonneg), "eps_root": (1.0e-16, _nonneg)}
    o = _options("scale_by_belief", opts, table)
    return _rule(
        "scale_by_belief",
        combinator,
        b._adabelief,
        o,
        {"mu": 0.0, "nu": 0.0},
        scalars=b._adam_scalars,
        counted=True,
    )


def scale_by_radam(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Rectified Adam: the rectified Adam step once rho_t >= threshold, else m_hat. Options:
    b1 0.9, b2 0.999, eps 1e-8, eps_root 0.0, threshold 5.0. State `{"mu", "nu", "count"}`."""
    table = {**_ADAM, "eps_root": (0.0, _nonneg), "threshold": (5.0, check_float())}
    o = _options("scale_by_radam", opts, table)
    return _rule(
        "scale_by_radam",
        combinator,
        b._radam,
        o,
        {"mu": 0.0, "nu": 0.0},
        scalars=b._radam_scalars,
        counted=True,
    )


def scale_by_yogi(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Yogi: Adam with the additive second moment v - (1 - b2) sign(v - g^2) g^2. Options:
    initial_accumulator_value 1e-6, b1 0.9, b2 0.999, eps 1e-3, eps_root 0.0. State
    `{"mu", "nu", "count"}`."""
    table = {
        "initial_accumulator_value": (1.0e-6, _nonneg),
        **_ADAM,
        "eps": (1.0e-3, _nonneg),
        "eps_root": (0.0, _nonneg),
    }
    o = _options("scale_by_yogi", opts, table)
    v = o["initial_accumulator_value"]
    return _rule(
        "scale_by_yogi",
        combinator,
        b._yogi,
        o,
        {"mu": v, "nu": v},
        scalars=b._adam_scalars,
        counted=True,
    )


def scale_by_rss(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Adagrad's g / sqrt(sum of squares + eps) (0 where the sum is 0). Options:
    initial_accumulator_value 0.1, eps 1e-7. State `{"sum_of_squares"}`."""
    table = {"initial_accumulator_value": (0.1, _nonneg), "eps": (1.0e-7, _nonneg)}
    o = _options("scale_by_rss", opts, table)
    fills = {"sum_of_squares": o["initial_accumulator_value"]}
    return _rule("scale_by_rss", combinator, b._adagrad, o, fills)


def _rms_options(owner: str, opts: dict, centered: bool) -> dict:
    table = {"initial_scale": (0.0, _nonneg), "decay": (0.9, _unit), "eps": (1.0e-8, _nonneg)}
    return {**_options(owner, opts, table), "centered": centered, "momentum": None}


def scale_by_rms(combinator: Any = None, /, **opts: Any) -> Combinator:
    """RMSProp's g / sqrt(nu + eps), nu the EMA of g^2. Options: initial_scale 0.0,
    decay 0.9, eps 1e-8. State `{"nu"}`."""
    o = _rms_options("scale_by_rms", opts, centered=False)
    return _rule("scale_by_rms", combinator, b._rmsprop, o, {"nu": o["initial_scale"]})


def scale_by_stddev(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Centered RMSProp's g / sqrt(nu - mu^2 + eps). Options: initial_scale 0.0 (for nu),
    decay 0.9, eps 1e-8. State `{"mu", "nu"}`."""
    o = _rms_options("scale_by_stddev", opts, centered=True)
    fills = {"mu": 0.0, "nu": o["initial_scale"]}
    return _rule("scale_by_stddev", combinator, b._rmsprop, o, fills)


def trace(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Momentum: t' = decay * t + g; the update t' (nesterov: decay * t' + g). Options:
    decay 0.9, nesterov false. State `{"trace"}`."""
    o = _options("trace", opts, {"decay": (0.9, _nonneg), "nesterov": (False, check_bool)})

    def rule(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, options: dict) -> tuple:
        d, t = b._momentum(g, s["trace"], o["decay"], o["nesterov"])
        return d, None, {"trace": t}

    return _rule("trace", combinator, rule, o, {"trace": 0.0})


def scale_by_trust_ratio(combinator: Any = None, /, **opts: Any) -> Combinator:
    """LAMB's trust ratio: each update times trust_coefficient * |param| / (|update| + eps),
    1 where either norm is 0 (norms at most min_norm count as min_norm). Options:
    min_norm 0.0, trust_coefficient 1.0, eps 0.0."""
    table = {
        "min_norm": (0.0, _nonneg),
        "trust_coefficient": (1.0, check_float()),
        "eps": (0.0, _nonneg),
    }
    o = _options("scale_by_trust_ratio", opts, table)

    def apply(updates: Any, params: Any) -> Any:
        def one(u: Leaf, p: Leaf) -> Leaf:
            return u * b._trust_ratio(p, u, o["min_norm"], o["trust_coefficient"], o["eps"])

        return _leafwise(one, updates, (params, "params"))

    return stateless(combinator, apply, name="scale_by_trust_ratio")


# ---------------------------------------------------------------------------
# Stateless transforms


def clip(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Every update clipped to [-delta, delta]. Options: delta 2.0."""
    o = _options("clip", opts, {"delta": (2.0, _nonneg)})
    d = o["delta"]
    return stateless(
        combinator, lambda u, p: _leafwise(lambda x: anp.clip(x, -d, d), u), name="clip"
    )


def clip_by_global_norm(combinator: Any = None, /, **opts: Any) -> Combinator:
    """All updates times max_norm / norm when their global L2 norm is at least max_norm.
    Options: max_norm 1.0."""
    o = _options("clip_by_global_norm", opts, {"max_norm": (1.0, _nonneg)})

    def apply(updates: Any, params: Any) -> Any:
        at = paths(updates)
        leaves = leaves_at(updates, at, "updates")
        return rebuild(updates, eager(b.global_norm_clip(leaves, o["max_norm"])))

    return stateless(combinator, apply, name="clip_by_global_norm")


def centralize(combinator: Any = None, /, **opts: Any) -> Combinator:
    """Gradient centralization: an update of rank > 1 minus its mean over all axes but the
    first; rank 0 and 1 as they are."""
    _options("centralize", opts, {})

    def one(x: Leaf) -> Leaf:
        if anp.ndim(x) <= 1:
            return x
        return x - anp.mean(x, axis=tuple(range(1, anp.ndim(x))), keepdims=True)

    return stateless(combinator, lambda u, p: _leafwise(one, u), name="centralize")


def add_decayed_weights(combinator: Any = None, /, **opts: Any) -> Combinator:
    """update + decay * param. Options: decay 0.0."""
    o = _options("add_decayed_weights", opts, {"decay": (0.0, check_float())})
    decay = o["decay"]

    def one(u: Leaf, p: Leaf) -> Leaf:
        return u + cast(p, u.dtype) * decay

    return stateless(
        combinator,
        lambda u, p: _leafwise(one, u, (p, "params")),
        name="add_decayed_weights",
    )


# ---------------------------------------------------------------------------
# Noise, accumulation, non-finite guard


def _key(seed: int) -> np.ndarray:
    return np.asarray([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], np.uint32)


def add_noise(combinator: Any = None, /, **opts: Any) -> Combinator:
    """update + sqrt(eta / (count + 1)^gamma) * standard-normal noise. Options: eta 0.01,
    gamma 0.55, seed 0. State `{"count", "key"}` (a Philox key). Eager only."""
    table = {"eta": (0.01, _nonneg), "gamma": (0.55, _nonneg), "seed": (0, _check_seed)}
    o = _options("add_noise", opts, table)

    def apply(updates: Any, state: dict, params: Any) -> tuple[Any, dict]:
        count = _count(state)
        if isinstance(count, Tensor) or any(isinstance(u, Tensor) for u in tree_leaves(updates)):
            raise TraceError(
                "add_noise draws its noise on the host and cannot be compiled into a step; "
                "use ax.optimizers.noisy_sgd, whose noise is an input of the step"
            )
        key = np.asarray(state["key"]).astype(np.uint64)
        gen = np.random.Generator(np.random.Philox(key=(int(key[0]) << 32) | int(key[1])))
        std = np.float32(math.sqrt(o["eta"] / float(count + 1) ** o["gamma"]))

        def one(x: Leaf) -> Leaf:
            noise = gen.standard_normal(np.shape(x)).astype(np.asarray(x).dtype)
            return x + std * noise

        out = _leafwise(one, updates)
        next_key = gen.integers(0, 2**32, size=2, dtype=np.uint32)
        return out, {"count": np.asarray(count + 1, np.int32), "key": next_key}

    def init(params: Any) -> dict:
        return {"count": np.zeros((), np.int32), "key": _key(o["seed"])}

    return stateful(combinator, init, apply, name="add_noise")


def _check_seed(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return int(v)


def _select(cond: Any, a: Any, b_: Any) -> Any:
    """Tree-wise where(cond, a, b) for a scalar condition (both trees computed)."""
    at = paths(a)
    la, lb = leaves_at(a, at, "state"), leaves_at(b_, at, "state")
    return rebuild(a, eager([anp.where(cond, x, cast(y, x.dtype)) for x, y in zip(la, lb)]))


def accumulate_gradients(*args: Any) -> Combinator:
    """`accumulate_gradients([combinator], steps)`: sum `steps` gradients, then pass their mean
    through the combinator once; the calls in between give zero updates and leave the
    combinator's state alone. State `({"gradient_state": tree, "step": s32}, *combinator's)`."""
    combinator, steps = _split(args, "accumulate_gradients")
    steps = option("accumulate_gradients", "steps", steps, _check_steps)
    parent_init, parent_update = _parent(combinator)

    def init(params: Any) -> tuple:
        this = {
            "gradient_state": tree_map(lambda p: anp.zeros_like(as_leaf(p)), params),
            "step": np.zeros((), np.int32),
        }
        return (this, *parent_init(params))

    def update(updates: Any, state: tuple, params: Any) -> tuple[Any, tuple]:
        this, other = state[0], tuple(state[1:])
        total = _leafwise(
            lambda u, a: a + cast(u, a.dtype), updates, (this["gradient_state"], "gradient_state")
        )
        step = this["step"]
        step = step if isinstance(step, Tensor) else np.asarray(step, np.int32)
        n = anp.add(step, np.int32(1))
        apply_now = anp.greater_equal(n, np.int32(steps))
        mean = _leafwise(lambda t, u: cast(t * (1.0 / steps), u.dtype), total, (updates, "updates"))
        out, new_other = parent_update(mean, other, params)
        zeros = tree_map(lambda x: anp.zeros_like(as_leaf(x)), out)
        reset = tree_map(lambda x: anp.zeros_like(as_leaf(x)), total)
        new_this = {
            "gradient_state": _select(apply_now, reset, total),
            "step": anp.where(apply_now, np.int32(0), n),
        }
        return _select(apply_now, out, zeros), (new_this, *_select(apply_now, new_other, other))

    return Combinator(init, update, f"accumulate_gradients({steps})")


def _check_steps(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"expected an integer >= 1, got {v!r}")
    return int(v)


def skip_not_finite(combinator: Any = None) -> Combinator:
    """The combinator on finite gradients only: when any incoming update holds a NaN or an
    infinity, the updates are zeros and the combinator's state stays as it was. State
    `({"not_finite": s32 steps skipped so far}, *combinator's)`."""
    parent_init, parent_update = _parent(combinator)

    def init(params: Any) -> tuple:
        return ({"not_finite": np.zeros((), np.int32)}, *parent_init(params))

    def update(updates: Any, state: tuple, params: Any) -> tuple[Any, tuple]:
        this, other = state[0], tuple(state[1:])
        leaves = [as_leaf(x) for x in tree_leaves(updates)]
        finite = None
        for x in leaves:
            ok = anp.all(anp.isfinite(x))
            finite = ok if finite is None else anp.logical_and(finite, ok)
        if finite is None:
            return updates, state
        out, new_other = parent_update(updates, other, params)
        zeros = tree_map(lambda x: anp.zeros_like(as_leaf(x)), out)
        skipped = this["not_finite"]
        skipped = skipped if isinstance(skipped, Tensor) else np.asarray(skipped, np.int32)
        counted = anp.where(finite, skipped, anp.add(skipped, np.int32(1)))
        new_other = _select(finite, new_other, other)
        return _select(finite, out, zeros), ({"not_finite": counted}, *new_other)

    return Combinator(init, update, "skip_not_finite")
