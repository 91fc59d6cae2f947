"""The built-in optimizers (Polaris.Optimizers), each an `(init_fn, update_fn)` pair.

    init_fn, update_fn = ax.optimizers.adam(1e-3)       # or ax.optimizers.get("adam", ...)
    opt_state = init_fn(params)
    updates, opt_state = update_fn(grads, opt_state, params)
    params = ax.optimizers.apply_updates(params, updates)

`params` is any nested dict / list / tuple of arrays (usually `{layer: {name: array}}`
holding the trainable parameters only) or a ModelState (its trainable parameters);
`grads` must mirror it. `update_fn` returns the updates, as Polaris's does; the
optimizer object also has `init`, `update` and `apply` (update then apply_updates, what
the trainer uses). The rules are written with `axonc.numpy`, so the same code runs
eagerly on numpy arrays and records graph nodes when its arguments are traced tensors
(`axonc.tracing.trace`): a compiled train step embeds the optimizer, and its state lives
in graph inputs/outputs.

Each built-in is ONE fused rule with the same mathematics as Polaris's composition of
`Polaris.Updates` combinators (adam is scale_by_adam then a scale by -learning_rate;
`ax.optimizers.updates` has the combinators, and the tests check each built-in against
its composition), written as the fewest element-wise ops per parameter: bias corrections,
learning rate and schedule are scalars computed once per step, and a NaN/Inf guard
appears only where the options make it necessary (adagrad with eps = 0 and a zero
initial accumulator). Its state is therefore one map, not Polaris's tuple of one map
per combinator (stable layout; every leaf is an array, so it can be a graph input):

    {"count": s32 scalar (updates applied so far),
     <slot>: a tree mirroring params of f32 arrays, for each of the optimizer's `slots`}

    sgd        ("trace",) with momentum, else ()
    adam       ("mu", "nu")             adamw, adabelief, adamax, lamb, radam, yogi: the same
    adagrad    ("sum_of_squares",)
    rmsprop    ("nu",), ("mu", "nu") when centered; plus "trace" with momentum
    noisy_sgd  ()

`mu` / `nu` are the first / second moment estimates (adamax: `nu` is the infinity norm),
`trace` the momentum buffer, `sum_of_squares` Adagrad's accumulator (Polaris's names).
The learning rate is a constant of the optimizer, not state (Polaris keeps it in a
`scale_by_state` map so that Axon's reduce_lr_on_plateau can lower it; axonc's trainer
has its own learning-rate scale for that).

One `update` step, in this order: clip every gradient to [-clip_value, clip_value];
scale all gradients by clip_norm / max(global L2 norm, clip_norm); add
weight_decay * param (coupled L2, i.e. Polaris's add_decayed_weights composed before
the optimizer); then the optimizer's rule, giving the update u. A learning rate may be a
number or a schedule (`axonc.schedules`, or any function of the step count written with
axonc.numpy); it is evaluated at the count *before* the step (0 on the first update), as
Polaris's scale_by_schedule does.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import numpy as anp
from ..errors import InputError, OptionError
from ..ir import tree_map
from ..model_state import ModelState
from ..registry import check_bool, check_float, check_optional
from ..tracing import Tensor
from ._tree import (
    Leaf,
    as_leaf,
    cast,
    eager,
    fmt,
    leaves_at,
    option,
    params_of,
    paths,
    rebuild,
)

__all__ = [
    "Optimizer",
    "adabelief",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "apply_updates",
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
# Gradient transforms usable on their own


def clip_by_value(grads: Any, delta: float) -> Any:
    """Every gradient element clipped to [-delta, delta] (Polaris Updates.clip, eagerly)."""
    d = option("clip_by_value", "delta", delta, _check_positive)
    return tree_map(lambda g: anp.clip(as_leaf(g), -d, d), grads)


def global_norm_clip(leaves: list[Leaf], max_norm: float) -> list[Leaf]:
    """All leaves times max_norm / max(global L2 norm, max_norm): the scale is one scalar."""
    if not leaves:
        return leaves
    total = anp.sum(anp.square(leaves[0]))
    for g in leaves[1:]:
        total = total + anp.sum(anp.square(g))
    norm = anp.sqrt(total)
    scale = max_norm / anp.maximum(norm, max_norm)  # 1 while norm <= max_norm
    return [g * anp.astype(scale, g.dtype) for g in leaves]


def apply_updates(params: Any, updates: Any, state: Any = None) -> Any:
    """params + updates, each update cast to its parameter's dtype (Polaris apply_updates).

    `params` may be a ModelState: its trainable parameters get the updates and a new
    ModelState comes back. `state` (Polaris's third argument), when given, is merged
    over the result: a nested dict of leaves that replace the result's (e.g. new
    batch-norm statistics)."""
    if isinstance(params, ModelState):
        new = apply_updates(params.trainable_parameters(), updates)
        return params.update(new, state)
    at = paths(params)
    p = leaves_at(params, at, "params")
    u = leaves_at(params_of(updates), at, "updates")
    new = rebuild(params, eager([a + cast(b, a.dtype) for a, b in zip(p, u, strict=True)]))
    return new if state is None else _merge(new, state)


def _merge(tree: Any, over: Any) -> Any:
    if isinstance(tree, dict) and isinstance(over, dict):
        return {**tree, **{k: _merge(tree[k], v) if k in tree else v for k, v in over.items()}}
    return over


def normal_noise(params: Any, seed: int | np.random.Generator = 0) -> Any:
    """Standard-normal f32 samples mirroring `params`: the `noise` argument of noisy_sgd."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return tree_map(
        lambda p: rng.standard_normal(np.shape(p)).astype(np.float32),
        params_of(params),
    )


# ---------------------------------------------------------------------------
# Per-parameter rules, written as the fewest element-wise ops: everything that depends
# only on the step (bias corrections, the learning rate, radam's rectification) is a
# scalar computed once per update by the kind's `scalars(o, t1, lr)` (t1 = count + 1 as
# f32). Each rule gets the (clipped, decayed) gradient g, the parameter p, this
# parameter's slots s, those scalars k, the noise n (noisy_sgd only) and the options o;
# it returns (direction, coef, new slots): the update is coef * direction (coef None: the
# update is direction itself), so a trainer can fold its own scalar into coef.


def _moment(x: Leaf, m: Leaf, decay: float) -> Leaf:
    """Polaris's update_moment of order 1: (1 - decay) * x + decay * m."""
    return x * (1.0 - decay) + m * decay


def _momentum(x: Leaf, trace: Leaf, decay: float, nesterov: bool) -> tuple[Leaf, Leaf]:
    """Polaris Updates.trace: t' = decay * t + x; the update is t' (or decay * t' + x)."""
    new = trace * decay + x
    return (new * decay + x if nesterov else new), new


def _one_minus_power(decay: float, t1: Leaf) -> Leaf:
    """1 - decay ** t1 as an f32 scalar, computed in f64: exact enough for decay near 1
    (1 - 0.999 ** 1 keeps all its f32 digits) in four scalar ops."""
    if decay == 0.0:
        return anp.full_like(t1, 1.0)
    return anp.astype(1.0 - anp.exp(anp.astype(t1, "f64") * math.log(decay)), "f32")


def _no_scalars(o: dict, t1: Leaf, lr: Any) -> dict:
    return {"coef": -lr}


def _adam_scalars(o: dict, t1: Leaf, lr: Any) -> dict:
    """Adam's bias corrections folded into scalars.

    m_hat / (sqrt(v_hat + eps_root) + eps) with m_hat = m / d1, v_hat = v / d2 equals
    (sqrt(d2) / d1) * m / (sqrt(v + eps_root * d2) + eps * sqrt(d2)): per element an
    add, a square root, an add and a divide; the rest is scalar.
    """
    d1, d2 = _one_minus_power(o["b1"], t1), _one_minus_power(o["b2"], t1)
    r2 = anp.sqrt(d2)
    k = {"d1": d1, "d2": d2, "r2": r2, "bias": r2 / d1}
    k["coef"] = -lr * k["bias"]
    k["eps_root"] = o.get("eps_root", 0.0) * d2
    k["eps"] = o["eps"] * r2
    return k


def _adam_denominator(nu: Leaf, k: dict, o: dict) -> Leaf:
    """sqrt(nu + eps_root * d2) + eps * sqrt(d2), each add left out when its option is 0."""
    x = nu + k["eps_root"] if o.get("eps_root") else nu
    x = anp.sqrt(x)
    return x + k["eps"] if o["eps"] else x


def _adam_moments(g: Leaf, s: dict, o: dict) -> tuple[Leaf, Leaf]:
    return _moment(g, s["mu"], o["b1"]), _moment(anp.square(g), s["nu"], o["b2"])


def _sgd(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    if o["momentum"] is None:
        return g, k["coef"], {}
    d, trace = _momentum(g, s["trace"], o["momentum"], o["nesterov"])
    return d, k["coef"], {"trace": trace}


def _adam(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    mu, nu = _adam_moments(g, s, o)
    return mu / _adam_denominator(nu, k, o), k["coef"], {"mu": mu, "nu": nu}


def _adamw_scalars(o: dict, t1: Leaf, lr: Any) -> dict:
    k = _adam_scalars(o, t1, lr)
    k["decay"] = o["decay"] / k["bias"]  # decay * p, in the units of the unscaled direction
    return k


def _adamw(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    mu, nu = _adam_moments(g, s, o)
    d = mu / _adam_denominator(nu, k, o)
    if o["decay"]:
        d = d + anp.astype(p, d.dtype) * k["decay"]
    return d, k["coef"], {"mu": mu, "nu": nu}


def _adabelief(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    mu = _moment(g, s["mu"], o["b1"])
    nu = _moment(anp.square(g - mu), s["nu"], o["b2"])
    if o["eps_root"]:
        nu = nu + o["eps_root"]
    d = anp.sqrt(nu)
    if o["eps"]:
        d = d + k["eps"]
    return mu / d, k["coef"], {"mu": mu, "nu": nu}


def _rss(g: Leaf, total: Leaf, eps: float, guard: bool) -> Leaf:
    """Polaris scale_by_rss's g * (rsqrt(total + eps) where total > 0, else 0).

    total >= g^2, so total == 0 only where g == 0; with eps > 0 (or an accumulator
    that starts above 0) g / sqrt(total + eps) is then 0 already and needs no guard.
    """
    if not guard:
        return g / anp.sqrt(total + eps if eps else total)
    seen = total > 0.0
    return g * anp.where(seen, 1.0 / anp.sqrt(anp.where(seen, total + eps, 1.0)), 0.0)


def _adagrad(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    total = s["sum_of_squares"] + anp.square(g)
    guard = not (o["eps"] or o["initial_accumulator_value"])
    return _rss(g, total, o["eps"], guard), k["coef"], {"sum_of_squares": total}


def _adamax_scalars(o: dict, t1: Leaf, lr: Any) -> dict:
    return {"coef": -lr / _one_minus_power(o["b1"], t1)}


def _adamax(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    mu = _moment(g, s["mu"], o["b1"])
    decayed, size = s["nu"] * o["b2"], anp.abs(g)
    nu = anp.where(decayed > size, decayed, size)  # max; a NaN gradient propagates
    return mu / (nu + o["eps"] if o["eps"] else nu), k["coef"], {"mu": mu, "nu": nu}


def _norm(x: Leaf, min_norm: float) -> Leaf:
    """Polaris safe_norm: the L2 norm of all elements, min_norm when it is <= min_norm."""
    norm = anp.sqrt(anp.sum(anp.square(x)))
    return anp.where(norm <= min_norm, min_norm, norm) if min_norm else norm


def _trust_ratio(p: Leaf, d: Leaf, min_norm: float, coefficient: float, eps: float) -> Leaf:
    """Polaris scale_by_trust_ratio's scalar: coefficient * |p| / (|d| + eps), 1 if either is 0."""
    p_norm, d_norm = _norm(p, min_norm), _norm(d, min_norm)
    degenerate = anp.logical_or(anp.equal(p_norm, 0.0), anp.equal(d_norm, 0.0))
    safe = anp.where(degenerate, 1.0, d_norm + eps if eps else d_norm)
    ratio = p_norm / safe * coefficient if coefficient != 1.0 else p_norm / safe
    return anp.where(degenerate, 1.0, ratio)


def _lamb(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    mu, nu = _adam_moments(g, s, o)
    d = mu / _adam_denominator(nu, k, o) * k["bias"]
    if o["decay"]:
        d = d + anp.astype(p, d.dtype) * o["decay"]
    ratio = _trust_ratio(p, d, o["min_norm"], 1.0, 0.0)
    return d, -k["lr"] * ratio, {"mu": mu, "nu": nu}


def _lamb_scalars(o: dict, t1: Leaf, lr: Any) -> dict:
    return {**_adam_scalars(o, t1, lr), "lr": lr}


def _noisy_sgd_scalars(o: dict, t1: Leaf, lr: Any) -> dict:
    return {"lr": -lr, "std": anp.sqrt(o["eta"] / anp.power(t1, o["gamma"]))}


def _noisy_sgd(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    return g * k["lr"] + n * k["std"], None, {}


def _radam_scalars(o: dict, t1: Leaf, lr: Any) -> dict:
    """Radam's rectification is a function of the step alone, so it selects scalars.

    Rectified: r * m_hat / (sqrt(v_hat + eps_root) + eps); else m_hat. Both are
    m * A / (sqrt(v + eps_root * d2) * B + C): A = r sqrt(d2) / d1, B = 1, C = eps sqrt(d2)
    once rho_t >= threshold, else A = 1 / d1, B = 0, C = 1.
    """
    b2 = o["b2"]
    k = _adam_scalars(o, t1, lr)
    d1, d2, r2 = k["d1"], k["d2"], k["r2"]
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho = rho_inf - 2.0 * t1 * (1.0 - d2) / d2
    rectify = rho >= o["threshold"]
    safe_rho = anp.where(rectify, rho, rho_inf)  # keeps the unused branch finite
    r2_term = (safe_rho - 4.0) * (safe_rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0))
    r = anp.sqrt(anp.maximum(r2_term / safe_rho, 0.0))
    k["coef"] = -lr * anp.where(rectify, r * r2 / d1, 1.0 / d1)
    k["on"] = anp.where(rectify, 1.0, 0.0)
    k["eps"] = anp.where(rectify, o["eps"] * r2, 1.0)
    return k


def _radam(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    mu, nu = _adam_moments(g, s, o)
    x = nu + k["eps_root"] if o["eps_root"] else nu
    return mu / (anp.sqrt(x) * k["on"] + k["eps"]), k["coef"], {"mu": mu, "nu": nu}


def _rmsprop(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    decay = o["decay"]
    nu = _moment(anp.square(g), s["nu"], decay)
    slots = {"nu": nu}
    if o["centered"]:
        mu = _moment(g, s["mu"], decay)
        slots["mu"] = mu
        second = nu - anp.square(mu)
    else:
        second = nu
    x = g / anp.sqrt(second + o["eps"] if o["eps"] else second)
    if o["momentum"] is None:
        return x, k["coef"], slots
    # Polaris traces the already lr-scaled update
    u, slots["trace"] = _momentum(x * k["coef"], s["trace"], o["momentum"], o["nesterov"])
    return u, None, slots


def _yogi(g: Leaf, p: Leaf, s: dict, k: dict, n: Leaf, o: dict) -> tuple:
    mu = _moment(g, s["mu"], o["b1"])
    g2 = anp.square(g)
    nu = s["nu"] - anp.sign(s["nu"] - g2) * g2 * (1.0 - o["b2"])
    return mu / _adam_denominator(nu, k, o), k["coef"], {"mu": mu, "nu": nu}


@dataclass(frozen=True)
class _Kind:
    name: str
    learning_rate: float
    options: dict[str, tuple[Any, Callable[[Any], Any]]]
    slots: Callable[[dict], dict[str, float]]  # options -> {slot: initial fill value}
    step: Callable[..., tuple]
    needs_noise: bool = False
    scalars: Callable[[dict, Any, Any], dict] = _no_scalars  # (options, t1, lr) -> scalars


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
            scalars=_adam_scalars,
        ),
        _Kind(
            "adagrad",
            1.0e-3,
            {"eps": (1.0e-7, _nonneg), "initial_accumulator_value": (0.1, _nonneg)},
            lambda o: {"sum_of_squares": o["initial_accumulator_value"]},
            _adagrad,
        ),
        _Kind(
            "adam",
            1.0e-3,
            {**_ADAM_OPTIONS, "eps_root": (1.0e-15, _nonneg)},
            _moments,
            _adam,
            scalars=_adam_scalars,
        ),
        _Kind("adamax", 1.0e-3, dict(_ADAM_OPTIONS), _moments, _adamax, scalars=_adamax_scalars),
        _Kind(
            "adamw",
            1.0e-3,
            {**_ADAM_OPTIONS, "eps_root": (1.0e-15, _nonneg), "decay": (0.0, _nonneg)},
            _moments,
            _adamw,
            scalars=_adamw_scalars,
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
            scalars=_lamb_scalars,
        ),
        _Kind(
            "noisy_sgd",
            1.0e-2,
            {"eta": (0.01, _nonneg), "gamma": (0.55, _nonneg)},
            lambda o: {},
            _noisy_sgd,
            needs_noise=True,
            scalars=_noisy_sgd_scalars,
        ),
        _Kind(
            "radam",
            1.0e-3,
            {**_ADAM_OPTIONS, "eps_root": (0.0, _nonneg), "threshold": (5.0, check_float())},
            _moments,
            _radam,
            scalars=_radam_scalars,
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
            scalars=_adam_scalars,
        ),
    ]
}


# ---------------------------------------------------------------------------
# The optimizer


class Optimizer:
    """A built-in optimizer: Polaris's `(init_fn, update_fn)` pair, with its name and options.

    `init_fn, update_fn = optimizer` unpacks; `init(params) -> opt_state` and
    `update(grads, opt_state, params) -> (updates, new_opt_state)`, the updates to add with
    `apply_updates(params, updates)`. `name` is Polaris's function name, `options` every
    option with its value (defaults filled in), `slots` the names of the per-parameter
    state trees and `needs_noise` whether `update` wants a `noise` tree (noisy_sgd).
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
            key: option(name, key, given[key], check) if key in given else default
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

    # the pair: `init_fn, update_fn = optimizer`, optimizer[0], len(optimizer) == 2
    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter((self.init, self.update))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Callable[..., Any]:
        return (self.init, self.update)[index]

    def learning_rate_at(self, count: Any) -> Any:
        """The learning rate used by the update that starts after `count` updates."""
        lr = self.options["learning_rate"]
        return lr(count) if callable(lr) else lr

    def init(self, params: Any) -> dict[str, Any]:
        """The initial state: a zero s32 `count` and each slot's tree of f32 fills.

        `params`: a nested dict / list / tuple of arrays, or a ModelState (its trainable
        parameters, as Axon's trainer hands them to Polaris)."""
        params = params_of(params)
        state: dict[str, Any] = {"count": np.zeros((), np.int32)}
        for slot, fill in self._fills.items():
            state[slot] = tree_map(lambda p, f=fill: anp.full_like(as_leaf(p), f, "f32"), params)
        return state

    def update(
        self, grads: Any, opt_state: dict[str, Any], params: Any, *, noise: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        """One optimizer step: (updates, new state), as Polaris's update_fn.

        The updates mirror `params` (f32, or the gradient's float type); add them with
        `apply_updates(params, updates)`."""
        params = params_of(params)
        _, parts, state = self._step(grads, opt_state, params, noise)
        updates = eager([d if c is None else d * c for d, c in parts])
        return rebuild(params, updates), state

    def apply(
        self,
        grads: Any,
        opt_state: dict[str, Any],
        params: Any,
        *,
        noise: Any = None,
        scale: Any = None,
    ) -> tuple[Any, dict[str, Any]]:
        """(new params, new state): `update` then `apply_updates`, every update times `scale`.

        The trainer's learning-rate scale joins each rule's scalar coefficient, so a
        parameter costs one multiply and one add on top of its rule."""
        params = params_of(params)
        p, parts, state = self._step(grads, opt_state, params, noise)
        scaled: dict[int, Any] = {}  # one scalar node per distinct coefficient

        def times_scale(c: Any) -> Any:
            if scale is None:
                return c
            if id(c) not in scaled:
                scaled[id(c)] = (c, c * scale)
            return scaled[id(c)][1]

        new = []
        for pi, (d, c) in zip(p, parts, strict=True):
            c = times_scale(c) if c is not None else scale
            u = d if c is None else d * c
            new.append(pi + cast(u, pi.dtype))
        return rebuild(params, eager(new)), state

    def _step(
        self, grads: Any, opt_state: dict[str, Any], params: Any, noise: Any
    ) -> tuple[list[Leaf], list[tuple[Leaf, Any]], dict[str, Any]]:
        """The params' leaves, each one's (direction, coef) and the new state."""
        expected = ("count", *self.slots)
        if not isinstance(opt_state, dict) or set(opt_state) != set(expected):
            got = sorted(opt_state) if isinstance(opt_state, dict) else type(opt_state).__name__
            raise InputError(
                f"{self.name} state must have the keys {', '.join(expected)} "
                f"(from {self.name}.init(params)), got {got}"
            )
        at = paths(params)
        p = leaves_at(params, at, "params")
        g = leaves_at(params_of(grads), at, "grads")
        slots = {k: leaves_at(opt_state[k], at, f"opt_state[{k!r}]") for k in self.slots}
        n = self._noise(noise, at, p)
        g = self._preprocess(g, p)
        count = opt_state["count"]
        if not isinstance(count, Tensor):
            count = np.asarray(count, np.int32)
        t1 = anp.astype(count, "f32") + 1.0
        k = self._kind.scalars(self.options, t1, self.learning_rate_at(count))
        parts, new_slots = [], {name: [] for name in self.slots}
        for i, (gi, pi) in enumerate(zip(g, p, strict=True)):
            mine = {name: v[i] for name, v in slots.items()}
            d, c, s = self._kind.step(gi, pi, mine, k, n[i], self.options)
            parts.append((d, c))
            for name in self.slots:
                new_slots[name].append(cast(s[name], np.float32))
        new_count = anp.add(count, np.int32(1))
        state: dict[str, Any] = {"count": new_count}
        state.update({name: rebuild(params, eager(v)) for name, v in new_slots.items()})
        return p, parts, state

    def _noise(self, noise: Any, at: list[tuple], p: list[Leaf]) -> list[Leaf]:
        if not self.needs_noise:
            if noise is not None:
                raise InputError(f"{self.name} takes no noise; only noisy_sgd does")
            return [None] * len(at)
        if noise is None:
            raise InputError(
                "noisy_sgd needs noise=: a tree mirroring params of standard-normal samples "
                "(e.g. optimizers.normal_noise(params, seed)); in a compiled step make it an input"
            )
        n = leaves_at(noise, at, "noise")
        for path, ni, pi in zip(at, n, p, strict=True):
            ns, ps = anp.shape(ni), anp.shape(pi)
            if None not in ns and None not in ps and tuple(ns) != tuple(ps):
                raise InputError(f"noise at {fmt(path)} has shape {ns}, its parameter {ps}")
        return n

    def _preprocess(self, g: list[Leaf], p: list[Leaf]) -> list[Leaf]:
        o = self.options
        if o["clip_value"] is not None:
            d = o["clip_value"]
            g = [anp.clip(x, -d, d) for x in g]
        if o["clip_norm"] is not None:
            g = global_norm_clip(g, o["clip_norm"])
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
