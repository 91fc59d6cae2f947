"""Optimizers (Polaris.Optimizers): `init` and `update` over parameter trees, eager or traced.

    opt = ax.optimizers.adam(learning_rate=1e-3)       # or ax.optimizers.get("adam", ...)
    opt_state = opt.init(params)
    params, opt_state = opt.update(grads, opt_state, params)

`params` is any nested dict / list / tuple of arrays (usually `{layer: {name: array}}`
holding the trainable parameters only); `grads` must mirror it. `update` is written
with `axonc.numpy`, so the same code runs eagerly on numpy arrays and records graph
nodes when its arguments are traced tensors (`axonc.tracing.trace`): a compiled
train step embeds the optimizer, and its state lives in graph inputs/outputs.

Optimizer state (stable layout; every leaf is an array, so it can be a graph input):

    {"count": s32 scalar (updates applied so far),
     <slot>: a tree mirroring params of f32 arrays, for each of the optimizer's `slots`}

    sgd        ("trace",) with momentum, else ()
    adam       ("mu", "nu")             adamw, adabelief, adamax, lamb, radam, yogi: the same
    adagrad    ("sum_of_squares",)
    rmsprop    ("nu",), ("mu", "nu") when centered; plus "trace" with momentum
    noisy_sgd  ()

`mu` / `nu` are the first / second moment estimates (adamax: `nu` is the infinity norm),
`trace` the momentum buffer, `sum_of_squares` Adagrad's accumulator (Polaris's names).
The learning rate is a constant of the optimizer, not state.

One `update` step, in this order: clip every gradient to [-clip_value, clip_value];
scale all gradients by clip_norm / max(global L2 norm, clip_norm); add
weight_decay * param (coupled L2, i.e. Polaris's add_decayed_weights composed before
the optimizer); then the optimizer's rule, giving an update u; param += u (cast to the
param's dtype). A learning rate may be a number or a schedule (`axonc.schedules`, or
any function of the step count written with axonc.numpy); it is evaluated at the
count *before* the step (0 on the first update), as Polaris's scale_by_schedule does.

Names, positional learning rate, options and defaults follow Polaris 0.1 where its
code (not its docs) decides: yogi's eps is 1e-3 and its accumulators start at 1e-6,
noisy_sgd's eta is 0.01, adamw/lamb use Adam's eps_root 1e-15, adagrad's accumulator
starts at 0.1. Rules follow the published algorithms where Polaris 0.1 departs from
them: adabelief uses the belief term (g - m)^2 (Polaris uses g^2, i.e. Adam), radam's
rho_inf is 2 / (1 - b2) - 1 (Polaris uses b1), and noisy_sgd's noise has standard
deviation sqrt(eta / (t+1)^gamma) (Polaris scales by the variance). adamax (not in
Polaris 0.1) is Kingma & Ba's, with optax's option names.

Randomness: noisy_sgd takes its Gaussian noise as an argument (`noise=`, a tree mirroring
params of standard-normal samples, e.g. `normal_noise(params, seed)`) instead of drawing
it, so a compiled step is a pure function of its inputs and runs are reproducible
(as dropout's noise is a graph input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import numpy as anp
from .errors import InputError, OptionError
from .ir import tree_leaves, tree_map
from .registry import check_bool, check_float, check_optional
from .tracing import Tensor

__all__ = [
    "Optimizer",
    "adabelief",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "apply_updates",
    "clip_by_global_norm",
    "clip_by_value",
    "get",
    "lamb",
    "names",
    "noisy_sgd",
    "normal_noise",
    "radam",
    "rmsprop",
    "sgd",
    "yogi",
]

LearningRate = float | Callable[[Any], Any]
Leaf = Any  # a numpy array or a traced Tensor

_unit = check_float(lo=0.0, hi=1.0, hi_open=True)  # decay rates b1, b2, ... in [0, 1)
_nonneg = check_float(lo=0.0)
_nonneg_or_none = check_optional(check_float(lo=0.0))


def _check_learning_rate(v: Any) -> LearningRate:
    if callable(v):
        return v
    value = check_float(lo=0.0)(v)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number or a schedule, got {v!r}")
    return value


def _check_positive(v: Any) -> float | None:
    value = _nonneg_or_none(v)
    if value is not None and value <= 0.0:
        raise ValueError(f"expected a number > 0 (or None), got {value}")
    return value


# Options every optimizer takes besides its own (see the module docstring for the order).
_COMMON: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "clip_value": (None, _check_positive),
    "clip_norm": (None, _check_positive),
    "weight_decay": (0.0, _nonneg),
}

_ADAM_OPTIONS = {"b1": (0.9, _unit), "b2": (0.999, _unit), "eps": (1.0e-8, _nonneg)}


# ---------------------------------------------------------------------------
# Trees


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to the leaves of a nested dict/list/tuple, in tree_map's visiting order."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _paths(v, (*prefix, k))]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in _paths(v, (*prefix, i))]
    return [prefix]


def _fmt(path: tuple) -> str:
    return "/".join(map(str, path)) or "<root>"


def _leaves_at(tree: Any, paths: list[tuple], what: str) -> list[Leaf]:
    """`tree`'s leaves at `paths` (the params' paths): it must have the same structure."""
    own = _paths(tree)
    if len(own) != len(paths):
        raise InputError(
            f"{what} has {len(own)} tensors but the parameters have {len(paths)}; "
            "it must mirror the parameter tree"
        )
    leaves = []
    for path in paths:
        node = tree
        for key in path:
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                raise InputError(
                    f"{what} has no entry at {_fmt(path)}; it must mirror the parameter tree"
                ) from None
        if isinstance(node, (dict, list, tuple)):
            raise InputError(f"{what} has a container at {_fmt(path)} where params have a tensor")
        leaves.append(node)
    return leaves


def _rebuild(template: Any, leaves: list[Leaf]) -> Any:
    it = iter(leaves)
    return tree_map(lambda _: next(it), template)


def _as_leaf(x: Any) -> Leaf:
    return x if isinstance(x, Tensor) else np.asarray(x)


def _traced(*groups: list[Leaf]) -> bool:
    return any(isinstance(x, Tensor) for g in groups for x in g)


# ---------------------------------------------------------------------------
# Gradient transforms usable on their own


def clip_by_value(grads: Any, delta: float) -> Any:
    """Every gradient element clipped to [-delta, delta] (Polaris Updates.clip)."""
    d = _option("clip_by_value", "delta", delta, _check_positive)
    return tree_map(lambda g: anp.clip(_as_leaf(g), -d, d), grads)


def clip_by_global_norm(grads: Any, max_norm: float) -> Any:
    """All gradients scaled by max_norm / norm when their global L2 norm exceeds max_norm
    (Polaris Updates.clip_by_global_norm)."""
    m = _option("clip_by_global_norm", "max_norm", max_norm, _check_positive)
    leaves = [_as_leaf(g) for g in tree_leaves(grads)]
    return _rebuild(grads, _global_norm_clip(leaves, m))


def _global_norm_clip(leaves: list[Leaf], max_norm: float) -> list[Leaf]:
    if not leaves:
        return leaves
    total = anp.sum(anp.square(leaves[0]))
    for g in leaves[1:]:
        total = total + anp.sum(anp.square(g))
    norm = anp.sqrt(total)
    scale = max_norm / anp.maximum(norm, max_norm)  # 1 while norm <= max_norm
    return [g * anp.astype(scale, g.dtype) for g in leaves]


def apply_updates(params: Any, updates: Any) -> Any:
    """params + updates, each update cast to its parameter's dtype (Polaris apply_updates)."""
    paths = _paths(params)
    p = [_as_leaf(x) for x in _leaves_at(params, paths, "params")]
    u = [_as_leaf(x) for x in _leaves_at(updates, paths, "updates")]
    return _rebuild(params, [a + anp.astype(b, a.dtype) for a, b in zip(p, u, strict=True)])


def normal_noise(params: Any, seed: int | np.random.Generator = 0) -> Any:
    """Standard-normal f32 samples mirroring `params`: the `noise` argument of noisy_sgd."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return tree_map(
        lambda p: rng.standard_normal(np.shape(p)).astype(np.float32),
        params,
    )


# ---------------------------------------------------------------------------
# Per-parameter rules. Each gets the (clipped, decayed) gradient g, the parameter p,
# this parameter's slots s, the step number t1 = count + 1 (f32), the learning rate
# lr at this step, the noise n (noisy_sgd only) and the options o; it returns the
# update u (param += u) and the new slots.


def _momentum(x: Leaf, trace: Leaf, decay: float, nesterov: bool) -> tuple[Leaf, Leaf]:
    """Polaris Updates.trace: t' = decay * t + x; the update is t' (or decay * t' + x)."""
    new = trace * decay + x
    return (new * decay + x if nesterov else new), new


def _sgd(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    if o["momentum"] is None:
        return -lr * g, {}
    d, trace = _momentum(g, s["trace"], o["momentum"], o["nesterov"])
    return -lr * d, {"trace": trace}


def _one_minus_power(decay: float, t1: Leaf) -> Leaf:
    """1 - decay ** t1, as -expm1(t1 * log(decay)): no cancellation for decay near 1 in f32."""
    if decay == 0.0:
        return anp.full_like(t1, 1.0)
    return -anp.expm1(t1 * math.log(decay))


def _bias(m: Leaf, decay: float, t1: Leaf) -> Leaf:
    return m / _one_minus_power(decay, t1)


def _adam_direction(g: Leaf, s: dict, t1: Leaf, o: dict) -> tuple[Leaf, dict]:
    mu = (1.0 - o["b1"]) * g + o["b1"] * s["mu"]
    nu = (1.0 - o["b2"]) * anp.square(g) + o["b2"] * s["nu"]
    d = _bias(mu, o["b1"], t1) / (anp.sqrt(_bias(nu, o["b2"], t1) + o["eps_root"]) + o["eps"])
    return d, {"mu": mu, "nu": nu}


def _adam(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    d, slots = _adam_direction(g, s, t1, o)
    return -lr * d, slots


def _adamw(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    d, slots = _adam_direction(g, s, t1, o)
    return -lr * (d + o["decay"] * p), slots


def _adabelief(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    mu = (1.0 - o["b1"]) * g + o["b1"] * s["mu"]
    nu = (1.0 - o["b2"]) * anp.square(g - mu) + o["b2"] * s["nu"] + o["eps_root"]
    d = _bias(mu, o["b1"], t1) / (anp.sqrt(_bias(nu, o["b2"], t1)) + o["eps"])
    return -lr * d, {"mu": mu, "nu": nu}


def _adagrad(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    total = s["sum_of_squares"] + anp.square(g)
    seen = total > 0.0
    inv = anp.where(seen, 1.0 / anp.sqrt(anp.where(seen, total + o["eps"], 1.0)), 0.0)
    return -lr * (g * inv), {"sum_of_squares": total}


def _adamax(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    mu = (1.0 - o["b1"]) * g + o["b1"] * s["mu"]
    nu = anp.maximum(o["b2"] * s["nu"], anp.abs(g))
    return -lr * (_bias(mu, o["b1"], t1) / (nu + o["eps"])), {"mu": mu, "nu": nu}


def _norm(x: Leaf, min_norm: float) -> Leaf:
    """Polaris safe_norm: the L2 norm of all elements, min_norm when it is <= min_norm."""
    norm = anp.sqrt(anp.sum(anp.square(x)))
    return anp.where(norm <= min_norm, min_norm, norm)


def _lamb(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    d, slots = _adam_direction(g, s, t1, o)
    d = d + o["decay"] * p
    p_norm, d_norm = _norm(p, o["min_norm"]), _norm(d, o["min_norm"])
    degenerate = anp.logical_or(anp.equal(p_norm, 0.0), anp.equal(d_norm, 0.0))
    ratio = anp.where(degenerate, 1.0, p_norm / anp.where(degenerate, 1.0, d_norm))
    return -lr * (d * ratio), slots


def _noisy_sgd(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    std = anp.sqrt(o["eta"] / anp.power(t1, o["gamma"]))
    return -lr * g + std * n, {}


def _radam(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    b1, b2 = o["b1"], o["b2"]
    mu = (1.0 - b1) * g + b1 * s["mu"]
    nu = (1.0 - b2) * anp.square(g) + b2 * s["nu"]
    mu_hat, nu_hat = _bias(mu, b1, t1), _bias(nu, b2, t1)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho = rho_inf - 2.0 * t1 * anp.power(b2, t1) / _one_minus_power(b2, t1)
    rectify = rho >= o["threshold"]
    safe_rho = anp.where(rectify, rho, rho_inf)  # keeps the unused branch finite
    r2 = (safe_rho - 4.0) * (safe_rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0))
    r = anp.sqrt(anp.maximum(r2 / safe_rho, 0.0))
    rectified = r * mu_hat / (anp.sqrt(nu_hat + o["eps_root"]) + o["eps"])
    return -lr * anp.where(rectify, rectified, mu_hat), {"mu": mu, "nu": nu}


def _rmsprop(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    decay = o["decay"]
    nu = (1.0 - decay) * anp.square(g) + decay * s["nu"]
    slots = {"nu": nu}
    if o["centered"]:
        mu = (1.0 - decay) * g + decay * s["mu"]
        slots["mu"] = mu
        x = g / anp.sqrt(nu - anp.square(mu) + o["eps"])
    else:
        x = g / anp.sqrt(nu + o["eps"])
    u = -lr * x
    if o["momentum"] is not None:  # Polaris traces the already lr-scaled update
        u, slots["trace"] = _momentum(u, s["trace"], o["momentum"], o["nesterov"])
    return u, slots


def _yogi(g: Leaf, p: Leaf, s: dict, t1: Leaf, lr: Any, n: Leaf, o: dict) -> tuple:
    mu = (1.0 - o["b1"]) * g + o["b1"] * s["mu"]
    g2 = anp.square(g)
    nu = s["nu"] - (1.0 - o["b2"]) * anp.sign(s["nu"] - g2) * g2
    d = _bias(mu, o["b1"], t1) / (anp.sqrt(_bias(nu, o["b2"], t1) + o["eps_root"]) + o["eps"])
    return -lr * d, {"mu": mu, "nu": nu}


@dataclass(frozen=True)
class _Kind:
    name: str
    learning_rate: float
    options: dict[str, tuple[Any, Callable[[Any], Any]]]
    slots: Callable[[dict], dict[str, float]]  # options -> {slot: initial fill value}
    step: Callable[..., tuple]
    needs_noise: bool = False


def _moments(o: dict) -> dict[str, float]:
    return {"mu": 0.0, "nu": 0.0}


def _rmsprop_slots(o: dict) -> dict[str, float]:
    slots = {"mu": 0.0} if o["centered"] else {}
    slots["nu"] = o["initial_scale"]
    if o["momentum"] is not None:
        slots["trace"] = 0.0
    return slots


_MOMENTUM = {"momentum": (None, _nonneg_or_none), "nesterov": (False, check_bool)}

_KINDS: dict[str, _Kind] = {
    k.name: k
    for k in [
        _Kind(
            "adabelief",
            1.0e-3,
            {**_ADAM_OPTIONS, "eps": (0.0, _nonneg), "eps_root": (1.0e-16, _nonneg)},
            _moments,
            _adabelief,
        ),
        _Kind(
            "adagrad",
            1.0e-3,
            {"eps": (1.0e-7, _nonneg), "initial_accumulator_value": (0.1, _nonneg)},
            lambda o: {"sum_of_squares": o["initial_accumulator_value"]},
            _adagrad,
        ),
        _Kind("adam", 1.0e-3, {**_ADAM_OPTIONS, "eps_root": (1.0e-15, _nonneg)}, _moments, _adam),
        _Kind("adamax", 1.0e-3, dict(_ADAM_OPTIONS), _moments, _adamax),
        _Kind(
            "adamw",
            1.0e-3,
            {**_ADAM_OPTIONS, "eps_root": (1.0e-15, _nonneg), "decay": (0.0, _nonneg)},
            _moments,
            _adamw,
        ),
        _Kind(
            "lamb",
            1.0e-2,
            {
                **_ADAM_OPTIONS,
                "eps_root": (1.0e-15, _nonneg),
                "decay": (0.0, _nonneg),
                "min_norm": (0.0, _nonneg),
            },
            _moments,
            _lamb,
        ),
        _Kind(
            "noisy_sgd",
            1.0e-2,
            {"eta": (0.01, _nonneg), "gamma": (0.55, _nonneg)},
            lambda o: {},
            _noisy_sgd,
            needs_noise=True,
        ),
        _Kind(
            "radam",
            1.0e-3,
            {**_ADAM_OPTIONS, "eps_root": (0.0, _nonneg), "threshold": (5.0, check_float())},
            _moments,
            _radam,
        ),
        _Kind(
            "rmsprop",
            1.0e-2,
            {
                "centered": (False, check_bool),
                **_MOMENTUM,
                "initial_scale": (0.0, _nonneg),
                "decay": (0.9, _unit),
                "eps": (1.0e-8, _nonneg),
            },
            _rmsprop_slots,
            _rmsprop,
        ),
        _Kind(
            "sgd",
            1.0e-2,
            dict(_MOMENTUM),
            lambda o: {} if o["momentum"] is None else {"trace": 0.0},
            _sgd,
        ),
        _Kind(
            "yogi",
            1.0e-2,
            {
                "initial_accumulator_value": (1.0e-6, _nonneg),
                **_ADAM_OPTIONS,
                "eps": (1.0e-3, _nonneg),
                "eps_root": (0.0, _nonneg),
            },
            lambda o: {"mu": o["initial_accumulator_value"], "nu": o["initial_accumulator_value"]},
            _yogi,
        ),
    ]
}


def _option(owner: str, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{owner}: option {key!r}: {exc}") from None


# ---------------------------------------------------------------------------
# The optimizer


class Optimizer:
    """An optimizer: `init(params) -> opt_state` and
    `update(grads, opt_state, params) -> (new_params, new_opt_state)`.

    `name` is Polaris's function name, `options` every option with its value
    (defaults filled in), `slots` the names of the per-parameter state trees and
    `needs_noise` whether `update` wants a `noise` tree (noisy_sgd).
    """

    def __init__(self, name: str, learning_rate: LearningRate | None = None, **opts: Any):
        if name not in _KINDS:
            raise OptionError(f"unknown optimizer {name!r}; valid names: {', '.join(names())}")
        kind = _KINDS[name]
        table = {"learning_rate": (kind.learning_rate, _check_learning_rate)}
        table.update(kind.options)
        table.update(_COMMON)
        unknown = sorted(set(opts) - set(table))
        if unknown:
            raise OptionError(
                f"{name}: unknown option {unknown[0]!r}; valid options: {', '.join(table)}"
            )
        given = dict(opts)
        if learning_rate is not None:
            given["learning_rate"] = learning_rate
        options = {
            key: _option(name, key, given[key], check) if key in given else default
            for key, (default, check) in table.items()
        }
        if options.get("nesterov") and options.get("momentum") is None:
            raise OptionError(f"{name}: nesterov=True needs a momentum (e.g. momentum=0.9)")
        self._kind = kind
        self.name = name
        self.options = options
        self._fills = kind.slots(options)
        self.slots: tuple[str, ...] = tuple(self._fills)
        self.needs_noise = kind.needs_noise

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"optimizers.{self.name}({opts})"

    def learning_rate_at(self, count: Any) -> Any:
        """The learning rate used by the update that starts after `count` updates."""
        lr = self.options["learning_rate"]
        return lr(count) if callable(lr) else lr

    def init(self, params: Any) -> dict[str, Any]:
        """The initial state: a zero s32 `count` and each slot's tree of f32 fills."""
        state: dict[str, Any] = {"count": np.zeros((), np.int32)}
        for slot, fill in self._fills.items():
            state[slot] = tree_map(lambda p, f=fill: anp.full_like(_as_leaf(p), f, "f32"), params)
        return state

    def update(
        self, grads: Any, opt_state: dict[str, Any], params: Any, *, noise: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        """One optimizer step: (new params, new state), both mirroring their inputs."""
        expected = ("count", *self.slots)
        if not isinstance(opt_state, dict) or set(opt_state) != set(expected):
            got = sorted(opt_state) if isinstance(opt_state, dict) else type(opt_state).__name__
            raise InputError(
                f"{self.name} state must have the keys {', '.join(expected)} "
                f"(from {self.name}.init(params)), got {got}"
            )
        paths = _paths(params)
        p = [_as_leaf(x) for x in _leaves_at(params, paths, "params")]
        g = [_as_leaf(x) for x in _leaves_at(grads, paths, "grads")]
        slots = {
            k: [_as_leaf(x) for x in _leaves_at(opt_state[k], paths, f"opt_state[{k!r}]")]
            for k in self.slots
        }
        n = self._noise(noise, paths, p)
        g = self._preprocess(g, p)
        count = opt_state["count"]
        count = count if isinstance(count, Tensor) else np.asarray(count, np.int32)
        lr = self.learning_rate_at(count)
        t1 = anp.astype(count, "f32") + 1.0
        new_p, new_slots = [], {k: [] for k in self.slots}
        for i, (gi, pi) in enumerate(zip(g, p, strict=True)):
            u, s = self._kind.step(
                gi, pi, {k: v[i] for k, v in slots.items()}, t1, lr, n[i], self.options
            )
            new_p.append(pi + anp.astype(u, pi.dtype))
            for k in self.slots:
                new_slots[k].append(anp.astype(s[k], "f32"))
        new_count = anp.add(count, np.int32(1))
        if not _traced(p, g, [count], *slots.values(), n):
            new_p = [np.asarray(x) for x in new_p]
            new_slots = {k: [np.asarray(x) for x in v] for k, v in new_slots.items()}
        state = {"count": new_count}
        state.update({k: _rebuild(params, v) for k, v in new_slots.items()})
        return _rebuild(params, new_p), state

    def _noise(self, noise: Any, paths: list[tuple], p: list[Leaf]) -> list[Leaf]:
        if not self.needs_noise:
            if noise is not None:
                raise InputError(f"{self.name} takes no noise; only noisy_sgd does")
            return [None] * len(paths)
        if noise is None:
            raise InputError(
                "noisy_sgd needs noise=: a tree mirroring params of standard-normal samples "
                "(e.g. optimizers.normal_noise(params, seed)); in a compiled step make it an input"
            )
        n = [_as_leaf(x) for x in _leaves_at(noise, paths, "noise")]
        for path, ni, pi in zip(paths, n, p, strict=True):
            ns, ps = anp.shape(ni), anp.shape(pi)
            if None not in ns and None not in ps and tuple(ns) != tuple(ps):
                raise InputError(f"noise at {_fmt(path)} has shape {ns}, its parameter {ps}")
        return n

    def _preprocess(self, g: list[Leaf], p: list[Leaf]) -> list[Leaf]:
        o = self.options
        if o["clip_value"] is not None:
            d = o["clip_value"]
            g = [anp.clip(x, -d, d) for x in g]
        if o["clip_norm"] is not None:
            g = _global_norm_clip(g, o["clip_norm"])
        if o["weight_decay"]:
            g = [x + o["weight_decay"] * anp.astype(w, x.dtype) for x, w in zip(g, p, strict=True)]
        return g


def names() -> list[str]:
    """The optimizer names `get` accepts."""
    return sorted(_KINDS)


def get(name: str | Optimizer, **opts: Any) -> Optimizer:
    """An optimizer by Polaris's name ("adam", "sgd", ...) with its options."""
    if isinstance(name, Optimizer):
        if opts:
            raise OptionError("get: options can only be given with an optimizer name")
        return name
    if not isinstance(name, str) or name not in _KINDS:
        raise OptionError(f"unknown optimizer {name!r}; valid names: {', '.join(names())}")
    return Optimizer(name, **opts)


# ---------------------------------------------------------------------------
# Constructors (Polaris.Optimizers); defaults live in _KINDS.


def adabelief(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """AdaBelief (Zhuang et al. 2020): Adam whose second moment tracks (g - m)^2.
    Options: b1 0.9, b2 0.999, eps 0.0, eps_root 1e-16; learning_rate 1e-3."""
    return Optimizer("adabelief", learning_rate, **opts)


def adagrad(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """Adagrad: g / sqrt(sum of squared gradients + eps).
    Options: eps 1e-7, initial_accumulator_value 0.1; learning_rate 1e-3."""
    return Optimizer("adagrad", learning_rate, **opts)


def adam(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """Adam: -lr * m_hat / (sqrt(v_hat + eps_root) + eps).
    Options: b1 0.9, b2 0.999, eps 1e-8, eps_root 1e-15; learning_rate 1e-3."""
    return Optimizer("adam", learning_rate, **opts)


def adamax(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """Adamax: Adam with the infinity norm, -lr * m_hat / (max(b2 * u, |g|) + eps).
    Options: b1 0.9, b2 0.999, eps 1e-8; learning_rate 1e-3."""
    return Optimizer("adamax", learning_rate, **opts)


def adamw(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """AdamW: Adam plus decoupled weight decay, -lr * (adam direction + decay * param).
    Options: b1 0.9, b2 0.999, eps 1e-8, eps_root 1e-15, decay 0.0; learning_rate 1e-3."""
    return Optimizer("adamw", learning_rate, **opts)


def lamb(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """LAMB: the AdamW direction scaled per parameter by ||param|| / ||direction||.
    Options: b1 0.9, b2 0.999, eps 1e-8, eps_root 1e-15, decay 0.0, min_norm 0.0;
    learning_rate 1e-2."""
    return Optimizer("lamb", learning_rate, **opts)


def noisy_sgd(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """SGD plus annealed Gaussian noise: -lr * g + sqrt(eta / t^gamma) * noise (t = 1, 2, ...);
    `update` takes the standard-normal `noise` tree. Options: eta 0.01, gamma 0.55;
    learning_rate 1e-2."""
    return Optimizer("noisy_sgd", learning_rate, **opts)


def radam(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """Rectified Adam: the variance-rectified Adam step once rho_t >= threshold, else
    momentum SGD (-lr * m_hat). Options: b1 0.9, b2 0.999, eps 1e-8, eps_root 0.0,
    threshold 5.0; learning_rate 1e-3."""
    return Optimizer("radam", learning_rate, **opts)


def rmsprop(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """RMSProp: g / sqrt(EMA of g^2 + eps) (centered: minus the squared EMA of g), optionally
    with momentum on the lr-scaled update. Options: centered false, momentum None, nesterov
    false, initial_scale 0.0, decay 0.9, eps 1e-8; learning_rate 1e-2."""
    return Optimizer("rmsprop", learning_rate, **opts)


def sgd(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """Stochastic gradient descent: -lr * g, or with momentum -lr * t, t = momentum * t + g
    (nesterov: -lr * (momentum * t + g)). Options: momentum None, nesterov false;
    learning_rate 1e-2."""
    return Optimizer("sgd", learning_rate, **opts)


def yogi(learning_rate: LearningRate | None = None, **opts: Any) -> Optimizer:
    """Yogi: Adam whose second moment moves additively, v - (1 - b2) sign(v - g^2) g^2.
    Options: initial_accumulator_value 1e-6, b1 0.9, b2 0.999, eps 1e-3, eps_root 0.0;
    learning_rate 1e-2."""
    return Optimizer("yogi", learning_rate, **opts)
