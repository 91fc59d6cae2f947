"""Optimizers: every update rule against an independent float64 numpy implementation of its
published formula (several steps, with options), state layout, eager vs traced equality,
gradient clipping / weight decay, the real-Axon SGD training steps, option errors."""

import copy
import json

import numpy as np
import pytest

import axonc as ax
from axonc import optimizers, schedules
from axonc.autodiff import tensor_of
from axonc.dtypes import type_of
from axonc.errors import InputError, OptionError
from axonc.interpreter import run
from axonc.ir import tree_leaves, tree_map
from axonc.to_onnx.export import decode_structure, to_onnx
from axonc.tracing import _traces, trace
from tests import golden, onnx_run

# Polaris 0.1's effective defaults (its code; the docs differ for yogi, noisy_sgd, adamw/lamb
# eps_root), plus adamax (optax/Keras) which Polaris 0.1 lacks.
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
DEFAULTS = {
    "adabelief": {"learning_rate": 1e-3, **ADAM, "eps": 0.0, "eps_root": 1e-16},
    "adagrad": {"learning_rate": 1e-3, "eps": 1e-7, "initial_accumulator_value": 0.1},
    "adam": {"learning_rate": 1e-3, **ADAM, "eps_root": 1e-15},
    "adamax": {"learning_rate": 1e-3, **ADAM},
    "adamw": {"learning_rate": 1e-3, **ADAM, "eps_root": 1e-15, "decay": 0.0},
    "lamb": {"learning_rate": 1e-2, **ADAM, "eps_root": 1e-15, "decay": 0.0, "min_norm": 0.0},
    "noisy_sgd": {"learning_rate": 1e-2, "eta": 0.01, "gamma": 0.55},
    "radam": {"learning_rate": 1e-3, **ADAM, "eps_root": 0.0, "threshold": 5.0},
    "rmsprop": {
        "learning_rate": 1e-2,
        "centered": False,
        "momentum": None,
        "nesterov": False,
        "initial_scale": 0.0,
        "decay": 0.9,
        "eps": 1e-8,
    },
    "sgd": {"learning_rate": 1e-2, "momentum": None, "nesterov": False},
    "yogi": {
        "learning_rate": 1e-2,
        "initial_accumulator_value": 1e-6,
        **ADAM,
        "eps": 1e-3,
        "eps_root": 0.0,
    },
}
COMMON = {"clip_value": None, "clip_norm": None, "weight_decay": 0.0}


# ---------------------------------------------------------------------------
# Independent references: one parameter array at a time, float64, explicit step t = 1, 2, ...
# `mem` holds this parameter's running quantities (named like the optimizer's state slots)
# and is updated in place; each returns the new parameter value.


def ref_sgd(g, p, mem, t, lr, o, n):
    if o["momentum"] is None:
        return p - lr * g
    mem["trace"] = o["momentum"] * mem.get("trace", 0.0) + g
    step = g + o["momentum"] * mem["trace"] if o["nesterov"] else mem["trace"]
    return p - lr * step


def _adam_moments(g, mem, o, t):
    mem["mu"] = o["b1"] * mem.get("mu", 0.0) + (1 - o["b1"]) * g
    mem["nu"] = o["b2"] * mem.get("nu", 0.0) + (1 - o["b2"]) * g**2
    return mem["mu"] / (1 - o["b1"] ** t), mem["nu"] / (1 - o["b2"] ** t)


def ref_adam(g, p, mem, t, lr, o, n):
    m_hat, v_hat = _adam_moments(g, mem, o, t)
    return p - lr * m_hat / (np.sqrt(v_hat + o["eps_root"]) + o["eps"])


def ref_adamw(g, p, mem, t, lr, o, n):
    m_hat, v_hat = _adam_moments(g, mem, o, t)
    return p - lr * (m_hat / (np.sqrt(v_hat + o["eps_root"]) + o["eps"]) + o["decay"] * p)


def ref_adabelief(g, p, mem, t, lr, o, n):
    # Zhuang et al. 2020, Algorithm 2: s_t = b2 s + (1 - b2)(g - m_t)^2 + eps
    mem["mu"] = o["b1"] * mem.get("mu", 0.0) + (1 - o["b1"]) * g
    mem["nu"] = o["b2"] * mem.get("nu", 0.0) + (1 - o["b2"]) * (g - mem["mu"]) ** 2 + o["eps_root"]
    m_hat = mem["mu"] / (1 - o["b1"] ** t)
    s_hat = mem["nu"] / (1 - o["b2"] ** t)
    return p - lr * m_hat / (np.sqrt(s_hat) + o["eps"])


def ref_adagrad(g, p, mem, t, lr, o, n):
    mem["sum_of_squares"] = mem.get("sum_of_squares", o["initial_accumulator_value"]) + g * g
    acc = mem["sum_of_squares"]
    scale = np.zeros_like(acc)
    nonzero = acc > 0
    scale[nonzero] = 1.0 / np.sqrt(acc[nonzero] + o["eps"])
    return p - lr * g * scale


def ref_adamax(g, p, mem, t, lr, o, n):
    mem["mu"] = o["b1"] * mem.get("mu", 0.0) + (1 - o["b1"]) * g
    mem["nu"] = np.maximum(o["b2"] * mem.get("nu", 0.0), np.abs(g))
    return p - (lr / (1 - o["b1"] ** t)) * mem["mu"] / (mem["nu"] + o["eps"])


def ref_lamb(g, p, mem, t, lr, o, n):
    m_hat, v_hat = _adam_moments(g, mem, o, t)
    r = m_hat / (np.sqrt(v_hat + o["eps_root"]) + o["eps"]) + o["decay"] * p

    def norm(x):
        value = np.linalg.norm(x.ravel())
        return o["min_norm"] if value <= o["min_norm"] else value

    pn, rn = norm(p), norm(r)
    ratio = 1.0 if pn == 0 or rn == 0 else pn / rn
    return p - lr * ratio * r


def ref_noisy_sgd(g, p, mem, t, lr, o, n):
    # Neelakantan et al. 2015: Gaussian noise of variance eta / (1 + t)^gamma (t from 0)
    return p - lr * g + np.sqrt(o["eta"] / t ** o["gamma"]) * n


def ref_radam(g, p, mem, t, lr, o, n):
    # Liu et al. 2019, Algorithm 2, with Polaris's threshold option
    m_hat, v_hat = _adam_moments(g, mem, o, t)
    rho_inf = 2 / (1 - o["b2"]) - 1
    rho = rho_inf - 2 * t * o["b2"] ** t / (1 - o["b2"] ** t)
    if rho < o["threshold"]:
        return p - lr * m_hat
    r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return p - lr * r * m_hat / (np.sqrt(v_hat + o["eps_root"]) + o["eps"])


def ref_rmsprop(g, p, mem, t, lr, o, n):
    d = o["decay"]
    mem["nu"] = d * mem.get("nu", o["initial_scale"]) + (1 - d) * g * g
    second = mem["nu"]
    if o["centered"]:
        mem["mu"] = d * mem.get("mu", 0.0) + (1 - d) * g
        second = second - mem["mu"] ** 2
    delta = -lr * g / np.sqrt(second + o["eps"])
    if o["momentum"] is not None:
        mem["trace"] = o["momentum"] * mem.get("trace", 0.0) + delta
        delta = delta + o["momentum"] * mem["trace"] if o["nesterov"] else mem["trace"]
    return p + delta


def ref_yogi(g, p, mem, t, lr, o, n):
    v0 = o["initial_accumulator_value"]
    mem["mu"] = o["b1"] * mem.get("mu", v0) + (1 - o["b1"]) * g
    v = mem.get("nu", v0)
    mem["nu"] = v - (1 - o["b2"]) * np.sign(v - g * g) * g * g
    m_hat = mem["mu"] / (1 - o["b1"] ** t)
    v_hat = mem["nu"] / (1 - o["b2"] ** t)
    return p - lr * m_hat / (np.sqrt(v_hat + o["eps_root"]) + o["eps"])


REFS = {name[4:]: fn for name, fn in globals().items() if name.startswith("ref_")}


def flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def reference(name, opts, params, grads_seq, noise_seq):
    """[(params, mems)] after each step, float64, flat 'layer/param' keys."""
    o = {**DEFAULTS[name], **COMMON, **opts}
    lr_of = o["learning_rate"] if callable(o["learning_rate"]) else lambda c: o["learning_rate"]
    p = {k: v.astype(np.float64) for k, v in flat(params).items()}
    mems = {k: {} for k in p}
    history = []
    for t, grads in enumerate(grads_seq, start=1):
        g = {k: v.astype(np.float64) for k, v in flat(grads).items()}
        if o["clip_value"] is not None:
            g = {
                k: np.minimum(np.maximum(v, -o["clip_value"]), o["clip_value"])
                for k, v in g.items()
            }
        if o["clip_norm"] is not None:
            total = np.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
            if total > o["clip_norm"]:
                g = {k: v * (o["clip_norm"] / total) for k, v in g.items()}
        g = {k: v + o["weight_decay"] * p[k] for k, v in g.items()}
        lr = float(lr_of(t - 1))
        noise = flat(noise_seq[t - 1]) if noise_seq else {}
        p = {k: REFS[name](g[k], p[k], mems[k], t, lr, o, noise.get(k)) for k in p}
        history.append((dict(p), copy.deepcopy(mems)))
    return history


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense_0": {
            "kernel": rng.normal(size=(3, 2)).astype(np.float32),
            "bias": rng.normal(size=(2,)).astype(np.float32),
        },
        "scale": {"s": np.asarray(rng.normal(), np.float32)},
    }


def make_grads(params, steps, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [
        tree_map(lambda p: (scale * rng.normal(size=np.shape(p))).astype(np.float32), params)
        for _ in range(steps)
    ]


def step(opt, grads, state, params, noise=None):
    """Polaris's pattern: update_fn gives the updates, apply_updates adds them."""
    _init_fn, update_fn = opt
    kwargs = {} if noise is None else {"noise": noise}
    updates, state = update_fn(grads, state, params, **kwargs)
    return optimizers.apply_updates(params, updates), state


def run_ours(opt, params, grads_seq, noise_seq=None):
    state = opt.init(params)
    history = []
    for i, grads in enumerate(grads_seq):
        noise = noise_seq[i] if noise_seq else None
        params, state = step(opt, grads, state, params, noise=noise)
        history.append((params, state))
    return history


CASES = [
    ("sgd", {}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.8, "nesterov": True}),
    ("sgd", {"momentum": 0.0}),
    ("sgd", {"learning_rate": 0.05, "weight_decay": 0.1}),
    ("adam", {}),
    ("adam", {"learning_rate": 0.05, "b1": 0.5, "b2": 0.9, "eps": 1e-3, "eps_root": 0.5}),
    ("adamw", {"learning_rate": 0.05, "decay": 0.1}),
    ("adabelief", {"learning_rate": 0.05}),
    ("adabelief", {"learning_rate": 0.05, "eps": 1e-6, "eps_root": 1e-4, "b2": 0.9}),
    ("adagrad", {"learning_rate": 0.1}),
    ("adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.0, "eps": 1e-3}),
    ("adamax", {"learning_rate": 0.05}),
    ("adamax", {"learning_rate": 0.05, "b1": 0.7, "b2": 0.5}),
    ("lamb", {}),
    ("lamb", {"decay": 0.2, "min_norm": 1.5}),
    ("noisy_sgd", {"learning_rate": 0.1}),
    ("noisy_sgd", {"eta": 0.3, "gamma": 1.0}),
    ("radam", {"learning_rate": 0.05}),
    ("radam", {"learning_rate": 0.05, "b2": 0.9, "threshold": 4.0}),
    ("rmsprop", {}),
    ("rmsprop", {"centered": True, "initial_scale": 0.5}),
    ("rmsprop", {"momentum": 0.9, "decay": 0.5}),
    ("rmsprop", {"momentum": 0.9, "nesterov": True, "centered": True}),
    ("yogi", {}),
    ("yogi", {"initial_accumulator_value": 0.5, "b1": 0.0, "eps": 1e-6, "eps_root": 0.2}),
    ("adam", {"learning_rate": 0.1, "clip_value": 0.5}),
    ("sgd", {"learning_rate": 0.1, "clip_norm": 1.0}),
    ("rmsprop", {"clip_norm": 100.0, "clip_value": 1.0, "weight_decay": 0.01}),
    (
        "sgd",
        {"learning_rate": schedules.exponential_decay(0.5, decay_rate=0.5, transition_steps=2)},
    ),
    ("adam", {"learning_rate": schedules.warmup(schedules.cosine_decay(0.1, decay_steps=4), 2)}),
    ("rmsprop", {"learning_rate": schedules.polynomial_decay(0.1), "momentum": 0.5}),
]
STEPS = 8  # radam's default rho_t passes its threshold of 5 at t = 6


def case_id(case):
    name, opts = case
    parts = [f"{k}={getattr(v, 'name', v)}" for k, v in opts.items()]
    return "-".join([name, *parts])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_update_matches_independent_formula(case):
    name, opts = case
    params = make_params()
    grads = make_grads(params, STEPS)
    noise = (
        [optimizers.normal_noise(params, 10 + i) for i in range(STEPS)]
        if name == "noisy_sgd"
        else None
    )
    opt = optimizers.get(name, **opts)
    ours = run_ours(opt, params, grads, noise)
    ref = reference(name, opts, params, grads, noise)
    start = flat(params)
    for step, ((p, state), (rp, rmem)) in enumerate(zip(ours, ref, strict=True), start=1):
        got = flat(p)
        assert int(state["count"]) == step
        for k in start:
            # the displacement from the start, so that rtol is relative to the updates
            np.testing.assert_allclose(
                got[k].astype(np.float64) - start[k],
                rp[k] - start[k],
                rtol=1e-4,
                atol=1e-6,  # f32 rounding of the parameters themselves
                err_msg=f"{name} step {step} param {k}",
            )
            for slot in opt.slots:
                np.testing.assert_allclose(
                    flat(state[slot])[k],
                    rmem[k][slot],
                    rtol=1e-4,
                    atol=1e-7,
                    err_msg=f"{name} step {step} slot {slot} of {k}",
                )


def test_radam_switches_to_the_rectified_step_at_its_threshold():
    params = make_params()
    grads = make_grads(params, 7)
    opt = optimizers.radam(learning_rate=0.1)
    history = run_ours(opt, params, grads)
    # until rho_t >= 5 (t = 6 for b2 = 0.999) the step is plain momentum: -lr * m_hat
    m = 0.0
    prev = flat(params)
    for t, ((p, _), g) in enumerate(zip(history, grads, strict=True), start=1):
        gk = flat(g)["dense_0/kernel"].astype(np.float64)
        m = 0.9 * m + 0.1 * gk
        step = flat(p)["dense_0/kernel"] - prev["dense_0/kernel"]
        prev = flat(p)
        plain = -0.1 * m / (1 - 0.9**t)
        if t < 6:
            np.testing.assert_allclose(step, plain, rtol=1e-4, atol=1e-7)
        else:
            assert not np.allclose(step, plain, rtol=1e-2)


def test_adagrad_leaves_never_seen_zero_gradients_alone():
    params = {"w": np.ones((3,), np.float32)}
    opt = optimizers.adagrad(learning_rate=1.0, initial_accumulator_value=0.0, eps=0.0)
    grads = {"w": np.asarray([0.0, 2.0, -3.0], np.float32)}
    with np.errstate(all="raise"):
        new, state = step(opt, grads, opt.init(params), params)
    np.testing.assert_allclose(new["w"], [1.0, 0.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(state["sum_of_squares"]["w"], [0.0, 4.0, 9.0])


def test_lamb_trust_ratio_is_one_for_a_zero_parameter():
    params = {"w": np.zeros((2, 2), np.float32)}
    grads = {"w": np.full((2, 2), 0.5, np.float32)}
    opt = optimizers.lamb(learning_rate=0.1)
    with np.errstate(all="raise"):
        new, _ = step(opt, grads, opt.init(params), params)
    # first Adam step: m_hat = g, v_hat = g^2, so the direction is ~sign(g) = 1, ratio 1
    np.testing.assert_allclose(new["w"], np.full((2, 2), -0.1), rtol=1e-6)


# ---------------------------------------------------------------------------
# State layout


SLOTS = {
    ("sgd", ()): (),
    ("sgd", (("momentum", 0.9),)): ("trace",),
    ("adam", ()): ("mu", "nu"),
    ("adamw", ()): ("mu", "nu"),
    ("adabelief", ()): ("mu", "nu"),
    ("adamax", ()): ("mu", "nu"),
    ("lamb", ()): ("mu", "nu"),
    ("radam", ()): ("mu", "nu"),
    ("yogi", ()): ("mu", "nu"),
    ("adagrad", ()): ("sum_of_squares",),
    ("rmsprop", ()): ("nu",),
    ("rmsprop", (("centered", True),)): ("mu", "nu"),
    ("rmsprop", (("momentum", 0.5),)): ("nu", "trace"),
    ("rmsprop", (("centered", True), ("momentum", 0.5))): ("mu", "nu", "trace"),
    ("noisy_sgd", ()): (),
}


@pytest.mark.parametrize(("key", "slots"), SLOTS.items(), ids=lambda v: str(v))
def test_state_layout(key, slots):
    name, opts = key
    params = make_params()
    opt = optimizers.get(name, **dict(opts))
    assert opt.slots == slots
    state = opt.init(params)
    assert list(state) == ["count", *slots]
    assert isinstance(state["count"], np.ndarray)
    assert state["count"].dtype == np.int32 and state["count"].shape == ()
    assert int(state["count"]) == 0
    for slot in slots:
        assert list(state[slot]) == list(params)
        for leaf, p in zip(tree_leaves(state[slot]), tree_leaves(params), strict=True):
            assert isinstance(leaf, np.ndarray)
            assert leaf.shape == p.shape and leaf.dtype == np.float32


@pytest.mark.parametrize(
    ("name", "opts", "fills"),
    [
        ("adagrad", {}, {"sum_of_squares": 0.1}),
        ("adagrad", {"initial_accumulator_value": 0.3}, {"sum_of_squares": 0.3}),
        ("yogi", {}, {"mu": 1e-6, "nu": 1e-6}),
        ("rmsprop", {"initial_scale": 2.0, "centered": True}, {"mu": 0.0, "nu": 2.0}),
        ("adam", {}, {"mu": 0.0, "nu": 0.0}),
        ("sgd", {"momentum": 0.9}, {"trace": 0.0}),
    ],
)
def test_initial_state_values(name, opts, fills):
    state = optimizers.get(name, **opts).init(make_params())
    for slot, value in fills.items():
        for leaf in tree_leaves(state[slot]):
            np.testing.assert_array_equal(leaf, np.full(leaf.shape, value, np.float32))


def test_update_keeps_param_dtypes_and_state_dtypes():
    params = {"w": np.ones((2,), np.float16), "v": np.ones((), np.float32)}
    grads = {"w": np.ones((2,), np.float16), "v": np.ones((), np.float32)}
    opt = optimizers.adam()
    new, state = step(opt, grads, opt.init(params), params)
    assert new["w"].dtype == np.float16 and new["v"].dtype == np.float32
    assert isinstance(new["v"], np.ndarray) and new["v"].shape == ()
    assert state["mu"]["w"].dtype == np.float32 and state["count"].dtype == np.int32


def test_lists_and_tuples_of_params_are_trees_too():
    params = [np.ones((2,), np.float32), (np.zeros((1,), np.float32),)]
    grads = [np.ones((2,), np.float32), (np.ones((1,), np.float32),)]
    opt = optimizers.sgd(learning_rate=0.5, momentum=0.5)
    new, state = step(opt, grads, opt.init(params), params)
    assert isinstance(new, list) and isinstance(new[1], tuple)
    np.testing.assert_allclose(new[0], [0.5, 0.5])
    np.testing.assert_allclose(new[1][0], [-0.5])
    assert isinstance(state["trace"][1], tuple)


def test_grads_in_another_key_order_still_pair_by_name():
    params = {"a": np.zeros(1, np.float32), "b": np.zeros(1, np.float32)}
    grads = {"b": np.full(1, 2.0, np.float32), "a": np.full(1, 1.0, np.float32)}
    opt = optimizers.sgd(learning_rate=1.0)
    new, _ = step(opt, grads, opt.init(params), params)
    assert float(new["a"][0]) == -1.0 and float(new["b"][0]) == -2.0


# ---------------------------------------------------------------------------
# Eager vs traced


def traced_steps(opt, params, grads_seq, noise_seq=None):
    state = opt.init(params)
    args = [grads_seq[0], state, params] + ([noise_seq[0]] if noise_seq else [])
    types = [tree_map(type_of, a) for a in args]

    def body_fn(grads, state, params, *noise):
        return step(opt, grads, state, params, noise=noise[0] if noise else None)

    body = trace(body_fn, types)
    out = []
    for i, grads in enumerate(grads_seq):
        feed = [grads, state, params] + ([noise_seq[i]] if noise_seq else [])
        (params, state), _ = run(body, {}, {}, args=tree_leaves(feed))
        out.append((params, state))
    return out


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_traced_update_equals_eager(case):
    name, opts = case
    params = make_params(3)
    grads = make_grads(params, 3, seed=4)
    noise = [optimizers.normal_noise(params, i) for i in range(3)] if name == "noisy_sgd" else None
    opt = optimizers.get(name, **opts)
    eager = run_ours(opt, params, grads, noise)
    traced = traced_steps(opt, params, grads, noise)
    for (ep, es), (tp, ts) in zip(eager, traced, strict=True):
        for a, b in zip(tree_leaves((ep, es)), tree_leaves((tp, ts)), strict=True):
            b = np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_traced_update_with_a_dynamic_batch_free_tree_of_one_leaf():
    opt = optimizers.adam(learning_rate=schedules.cosine_decay(0.1, decay_steps=3))
    params = {"w": np.ones((4,), np.float32)}
    state = opt.init(params)
    body = trace(
        lambda g, s, p: step(opt, g, s, p), [tree_map(type_of, a) for a in (params, state, params)]
    )
    ops = {n.op for n in body.nodes.values()}
    assert "np.cos" in ops  # the schedule is computed from the traced count
    (_new, new_state), _ = run(body, {}, {}, args=tree_leaves([params, state, params]))
    assert int(new_state["count"]) == 1


# ---------------------------------------------------------------------------
# Clipping and decay helpers


def test_clip_by_value():
    grads = {"a": np.asarray([-3.0, 0.2, 5.0], np.float32)}
    expected = np.asarray([-1.0, 0.2, 1.0], np.float32)
    np.testing.assert_array_equal(optimizers.clip_by_value(grads, 1.0)["a"], expected)


@pytest.mark.parametrize("max_norm", [1.0, 13.0, 100.0])
def test_clip_by_global_norm(max_norm):
    grads = {"a": np.asarray([3.0, 4.0], np.float32), "b": {"c": np.asarray([12.0], np.float32)}}
    total = 13.0  # sqrt(9 + 16 + 144)
    factor = min(1.0, max_norm / total)
    _, clip = optimizers.clip_by_global_norm(max_norm=max_norm)
    out, _ = clip(grads, (), grads)
    np.testing.assert_allclose(out["a"], np.asarray([3.0, 4.0]) * factor, rtol=1e-6)
    np.testing.assert_allclose(out["b"]["c"], [12.0 * factor], rtol=1e-6)


def test_clip_by_global_norm_of_zero_gradients_is_finite():
    with np.errstate(all="raise"):
        zeros = {"a": np.zeros(3, np.float32)}
        out, _ = optimizers.clip_by_global_norm(max_norm=1.0)[1](zeros, (), zeros)
    np.testing.assert_array_equal(out["a"], np.zeros(3))


def test_apply_updates_casts_to_the_param_dtype():
    params = {"w": np.ones(2, np.float16)}
    new = optimizers.apply_updates(params, {"w": np.full(2, 0.5, np.float32)})
    assert new["w"].dtype == np.float16
    np.testing.assert_array_equal(new["w"], [1.5, 1.5])


def test_normal_noise_is_reproducible_and_mirrors_params():
    params = make_params()
    a, b = optimizers.normal_noise(params, 5), optimizers.normal_noise(params, 5)
    for x, y, p in zip(tree_leaves(a), tree_leaves(b), tree_leaves(params), strict=True):
        assert x.shape == p.shape and x.dtype == np.float32
        np.testing.assert_array_equal(x, y)


def test_learning_rate_at_uses_the_count_before_the_step():
    sched = schedules.exponential_decay(1.0, decay_rate=0.5, transition_steps=1)
    opt = optimizers.sgd(learning_rate=sched)
    params = {"w": np.zeros(1, np.float32)}
    grads = {"w": np.ones(1, np.float32)}
    state = opt.init(params)
    for expected in (1.0, 0.5, 0.25):
        before = params["w"].copy()
        params, state = step(opt, grads, state, params)
        np.testing.assert_allclose(before - params["w"], [expected], rtol=1e-6)
    assert float(opt.learning_rate_at(np.int32(3))) == pytest.approx(0.125)


# ---------------------------------------------------------------------------
# Polaris's SGD steps recorded by real Axon (Axon.Loop.trainer, sgd(learning_rate: 0.1))

TRAINABLE = {
    "dense_0": ("kernel", "bias"),
    "batch_norm_0": ("gamma", "beta"),
    "dense_1": ("kernel", "bias"),
}


def mlp():
    return (
        ax.input("input", shape=(None, 8))
        .dense(16, activation="relu")
        .batch_norm()
        .dense(4, activation="softmax")
    )


def fd_gradients(model, state, x, y, loss_name):
    """Central finite differences (float64) of the batch-mean loss, train mode."""
    data = {
        layer: {k: np.asarray(v, np.float64) for k, v in d.items()} for layer, d in state.items()
    }

    def loss():
        out, _ = run(model, {"input": x}, data, "train")
        if loss_name == "cce":
            return float(-np.mean(np.sum(y * np.log(out), axis=-1)))
        return float(np.mean((y - out) ** 2))

    eps = 1e-6
    grads = {}
    for layer, keys in TRAINABLE.items():
        grads[layer] = {}
        for key in keys:
            arr = data[layer][key]
            g = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                keep = arr[idx]
                arr[idx] = keep + eps
                up = loss()
                arr[idx] = keep - eps
                down = loss()
                arr[idx] = keep
                g[idx] = (up - down) / (2 * eps)
            grads[layer][key] = g.astype(np.float32)
    return grads


@pytest.mark.parametrize(
    ("case_name", "loss_name"), [("train_mlp_cce_sgd", "cce"), ("train_mlp_mse_sgd", "mse")]
)
def test_sgd_steps_match_axon_training(case_name, loss_name):
    case = golden.load(case_name)
    feeds = golden.inputs(case)
    x = feeds["input"].astype(np.float64)
    y = feeds["y_true"].astype(np.float64)
    before = golden.tree(case["params"])
    after = golden.tree(case["outputs"]["model_state_after_step"])
    model = mlp()
    opt = optimizers.sgd(learning_rate=0.1)

    def trainable(s):
        return {layer: {k: s[layer][k] for k in keys} for layer, keys in TRAINABLE.items()}

    opt_state = opt.init(trainable(before))
    for i, expected in enumerate(after):
        grads = fd_gradients(model, before, x, y, loss_name)
        new, opt_state = step(opt, grads, opt_state, trainable(before))
        for layer, keys in TRAINABLE.items():
            for k in keys:
                np.testing.assert_allclose(
                    new[layer][k],
                    expected[layer][k],
                    rtol=1e-5,
                    atol=2e-6,
                    err_msg=f"{case_name} step {i + 1} {layer}/{k}",
                )
        before = expected  # the next step starts from Axon's state (batch-norm stats included)
    assert int(opt_state["count"]) == len(after)


# ---------------------------------------------------------------------------
# Options and errors


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_follow_polaris(name):
    opt = getattr(optimizers, name)()
    assert opt.name == name
    assert opt.options == {**DEFAULTS[name], **COMMON}


def test_names_and_get():
    assert optimizers.names() == sorted(DEFAULTS)
    opt = optimizers.get("adam", learning_rate=0.5, b1=0.8)
    assert opt.options["learning_rate"] == 0.5 and opt.options["b1"] == 0.8
    assert optimizers.get(opt) is opt
    assert optimizers.sgd(0.3).options["learning_rate"] == 0.3  # positional learning rate
    assert "adam(" in repr(opt) and "b1=0.8" in repr(opt)


def test_unknown_name_lists_valid_names():
    with pytest.raises(OptionError, match=r"unknown optimizer 'adma'.*adabelief.*adam.*yogi"):
        optimizers.get("adma")


@pytest.mark.parametrize(
    ("name", "opts", "message"),
    [
        ("adam", {"beta1": 0.9}, "unknown option 'beta1'.*b1"),
        ("adam", {"b1": 1.0}, "option 'b1'"),
        ("adam", {"b2": -0.1}, "option 'b2'"),
        ("adam", {"eps": "small"}, "option 'eps'"),
        ("sgd", {"learning_rate": -0.1}, "option 'learning_rate'"),
        ("sgd", {"learning_rate": float("inf")}, "option 'learning_rate'"),
        ("sgd", {"learning_rate": "fast"}, "option 'learning_rate'"),
        ("sgd", {"momentum": -0.5}, "option 'momentum'"),
        ("sgd", {"nesterov": True}, "nesterov=True needs a momentum"),
        ("sgd", {"nesterov": 1, "momentum": 0.9}, "option 'nesterov'"),
        ("rmsprop", {"centered": "yes"}, "option 'centered'"),
        ("adam", {"clip_norm": 0.0}, "option 'clip_norm'"),
        ("adam", {"clip_value": -1.0}, "option 'clip_value'"),
        ("adam", {"weight_decay": -1.0}, "option 'weight_decay'"),
        ("sgd", {"momentum": True}, "option 'momentum'"),
    ],
)
def test_bad_options_raise_option_error(name, opts, message):
    with pytest.raises(OptionError, match=message):
        optimizers.get(name, **opts)


def test_get_rejects_options_with_an_optimizer_instance():
    with pytest.raises(OptionError, match="options"):
        optimizers.get(optimizers.sgd(), learning_rate=0.1)


def test_clip_helpers_check_their_bound():
    with pytest.raises(OptionError, match="delta"):
        optimizers.clip_by_value({"a": np.ones(1)}, 0.0)
    with pytest.raises(OptionError, match="max_norm"):
        optimizers.clip_by_global_norm(max_norm=-1.0)


def test_noise_is_required_by_noisy_sgd_and_refused_elsewhere():
    params = make_params()
    grads = make_grads(params, 1)[0]
    noisy = optimizers.noisy_sgd()
    with pytest.raises(InputError, match="noisy_sgd needs noise"):
        noisy.update(grads, noisy.init(params), params)
    bad_noise = tree_map(lambda p: np.zeros((5,), np.float32), params)
    with pytest.raises(InputError, match="noise at dense_0/kernel has shape"):
        noisy.update(grads, noisy.init(params), params, noise=bad_noise)
    adam = optimizers.adam()
    with pytest.raises(InputError, match="adam takes no noise"):
        adam.update(grads, adam.init(params), params, noise=grads)


def test_mismatched_trees_and_states_are_input_errors():
    params = make_params()
    opt = optimizers.adam()
    state = opt.init(params)
    grads = make_grads(params, 1)[0]
    missing = {"dense_0": grads["dense_0"]}
    with pytest.raises(InputError, match="grads has 2 tensors but the parameters have 3"):
        opt.update(missing, state, params)
    renamed = {
        "dense_0": {"kernel": grads["dense_0"]["kernel"], "b": grads["dense_0"]["bias"]},
        "scale": grads["scale"],
    }
    with pytest.raises(InputError, match="grads has no entry at dense_0/bias"):
        opt.update(renamed, state, params)
    with pytest.raises(InputError, match="adam state must have the keys count, mu, nu"):
        opt.update(grads, optimizers.sgd().init(params), params)


# ---------------------------------------------------------------------------
# The traced update compiles to ONNX (state and schedule included) and matches eager


def _as_inputs(tree, prefix, trace_id, feeds):
    """Each leaf becomes an ax.input named prefix__path and a tensor of the trace."""

    def walk(t, path):
        if isinstance(t, dict):
            return {k: walk(v, [*path, k]) for k, v in t.items()}
        arr = np.asarray(t)
        name = "__".join([prefix, *path])
        feeds[name] = arr
        node = ax.input(
            name, shape=arr.shape, dtype={"float32": "f32", "int32": "s32"}[str(arr.dtype)]
        )
        return tensor_of(node, trace_id)

    return walk(tree, [])


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_update_lowers_to_onnx_and_matches_eager(name):
    params = make_params(5)
    grads = make_grads(params, 1, seed=6)[0]
    opt = optimizers.get(
        name,
        learning_rate=schedules.warmup(schedules.cosine_decay(0.1, decay_steps=5), 1),
        clip_norm=2.0,
    )
    noise = optimizers.normal_noise(params, 7) if opt.needs_noise else None
    state = opt.init(params)
    # two eager steps first, so the exported step starts from a non-trivial state
    for _ in range(2):
        params, state = step(opt, grads, state, params, noise=noise)
    trace_id = next(_traces)
    feeds = {}
    args = [
        _as_inputs(t, p, trace_id, feeds) for t, p in ((grads, "g"), (state, "s"), (params, "p"))
    ]
    sym_noise = None if noise is None else _as_inputs(noise, "n", trace_id, feeds)
    new_p, new_s = step(opt, *args, noise=sym_noise)
    graph = ax.container(
        tree_map(lambda t: ax.Axon(t.graph.output, t.graph.nodes), {"p": new_p, "s": new_s})
    )
    model = to_onnx(graph, {})
    sess = onnx_run.session(model)
    out_names = [o.name for o in sess.get_outputs()]
    values = dict(
        zip(out_names, sess.run(out_names, {i.name: feeds[i.name] for i in sess.get_inputs()}))
    )
    meta = {p.key: p.value for p in model.metadata_props}
    got = tree_map(lambda n: values[n], decode_structure(json.loads(meta["axonc.outputs"])))
    want_p, want_s = step(opt, grads, state, params, noise=noise)
    for a, b in zip(tree_leaves((want_p, want_s)), tree_leaves((got["p"], got["s"])), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
