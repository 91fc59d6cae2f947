"""Polaris.Updates combinators: each against a float64 numpy rendering of Polaris's formula,
their state layout, composition, every built-in optimizer against its Polaris composition,
eager == traced, and the rest (accumulate_gradients, skip_not_finite, add_noise, errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from axonc import optimizers as O
from axonc import schedules
from axonc.dtypes import type_of
from axonc.errors import OptionError, TraceError
from axonc.interpreter import run
from axonc.ir import tree_leaves, tree_map
from axonc.tracing import trace

RNG = np.random.default_rng(0)
PARAMS = {
    "dense": {
        "kernel": RNG.normal(size=(3, 4)).astype(np.float32),
        "bias": RNG.normal(size=(4,)).astype(np.float32),
    }
}
GRADS = [tree_map(lambda p: RNG.normal(size=p.shape).astype(np.float32), PARAMS) for _ in range(8)]


def leaves64(tree):
    return [np.asarray(x, np.float64) for x in tree_leaves(tree)]


def run_pair(pair, grads_seq=GRADS, params=PARAMS):
    """[(updates, state)] of update_fn over the gradients, params fixed (Polaris's contract)."""
    init_fn, update_fn = pair
    state = init_fn(params)
    out = []
    for g in grads_seq:
        updates, state = update_fn(g, state, params)
        out.append((updates, state))
    return out


def assert_updates(pair, expected_fn, rtol=1e-5, atol=1e-7):
    """expected_fn(t, g, p, mem) -> float64 update for one leaf; mem persists per leaf."""
    got = run_pair(pair)
    mems = [{} for _ in tree_leaves(PARAMS)]
    for t, (g, (updates, _)) in enumerate(zip(GRADS, got, strict=True), start=1):
        for i, (gi, pi, ui) in enumerate(
            zip(leaves64(g), leaves64(PARAMS), tree_leaves(updates), strict=True)
        ):
            np.testing.assert_allclose(
                ui, expected_fn(t, gi, pi, mems[i]), rtol=rtol, atol=atol, err_msg=f"step {t}"
            )


def ema(mem, key, value, decay, initial=0.0):
    mem[key] = decay * mem.get(key, initial) + (1 - decay) * value
    return mem[key]


# ---------------------------------------------------------------------------
# Each combinator against its formula


def test_scale():
    assert_updates(O.scale(-0.3), lambda t, g, p, m: -0.3 * g)


def test_scale_by_state_keeps_the_step_in_its_state():
    init_fn, _ = O.scale_by_state(-0.25)
    state = init_fn(PARAMS)
    assert isinstance(state, tuple) and set(state[0]) == {"scale"}
    assert float(state[0]["scale"]) == -0.25
    assert_updates(O.scale_by_state(-0.25), lambda t, g, p, m: -0.25 * g)


def test_scale_by_schedule_counts_from_zero():
    sched = schedules.exponential_decay(1.0, decay_rate=0.5, transition_steps=1)
    assert_updates(O.scale_by_schedule(sched), lambda t, g, p, m: 0.5 ** (t - 1) * g)


def _adam(b1, b2, eps, eps_root):
    def rule(t, g, p, m):
        mu, nu = ema(m, "mu", g, b1), ema(m, "nu", g * g, b2)
        return (mu / (1 - b1**t)) / (np.sqrt(nu / (1 - b2**t) + eps_root) + eps)

    return rule


def test_scale_by_adam():
    assert_updates(O.scale_by_adam(), _adam(0.9, 0.999, 1e-8, 1e-15))
    assert_updates(
        O.scale_by_adam(b1=0.5, b2=0.8, eps=1e-3, eps_root=0.1), _adam(0.5, 0.8, 1e-3, 0.1)
    )
    _, state = run_pair(O.scale_by_adam())[-1]
    assert set(state[0]) == {"mu", "nu", "count"} and int(state[0]["count"]) == 8


def test_scale_by_rss():
    def rule(t, g, p, m):
        m["s"] = m.get("s", 0.1) + g * g
        return g / np.sqrt(m["s"] + 1e-7)

    assert_updates(O.scale_by_rss(), rule)


def test_scale_by_rss_from_zero_leaves_zero_gradients_at_zero():
    init_fn, update_fn = O.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
    params = {"w": np.zeros(3, np.float32)}
    with np.errstate(all="raise"):
        updates, _ = update_fn(
            {"w": np.asarray([0.0, 2.0, -4.0], np.float32)}, init_fn(params), params
        )
    np.testing.assert_allclose(updates["w"], [0.0, 1.0, -1.0])


def test_scale_by_rms():
    assert_updates(
        O.scale_by_rms(decay=0.8, initial_scale=0.5),
        lambda t, g, p, m: g / np.sqrt(ema(m, "nu", g * g, 0.8, 0.5) + 1e-8),
    )


def test_scale_by_stddev():
    def rule(t, g, p, m):
        mu, nu = ema(m, "mu", g, 0.9), ema(m, "nu", g * g, 0.9)
        return g / np.sqrt(nu - mu * mu + 1e-8)

    assert_updates(O.scale_by_stddev(), rule, rtol=1e-4)


def test_scale_by_belief():
    def rule(t, g, p, m):  # AdaBelief's belief term (g - m_t)^2 (see the module doc)
        mu = ema(m, "mu", g, 0.9)
        s = ema(m, "s", (g - mu) ** 2, 0.999) + 1e-16
        m["s"] = s
        return (mu / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 0.0)

    assert_updates(O.scale_by_belief(), rule, rtol=1e-4)


def test_scale_by_yogi():
    def rule(t, g, p, m):
        mu = ema(m, "mu", g, 0.9, 1e-6)
        v = m.get("nu", 1e-6)
        m["nu"] = v - (1 - 0.999) * np.sign(v - g * g) * g * g
        return (mu / (1 - 0.9**t)) / (np.sqrt(m["nu"] / (1 - 0.999**t)) + 1e-3)

    assert_updates(O.scale_by_yogi(), rule, rtol=1e-4)


def test_scale_by_radam_below_and_above_its_threshold():
    b1, b2 = 0.9, 0.9  # rho_inf = 19: rho_t passes the threshold 5 at t = 6 (5.39)

    def rule(t, g, p, m):
        mu, nu = ema(m, "mu", g, b1), ema(m, "nu", g * g, b2)
        m_hat, v_hat = mu / (1 - b1**t), nu / (1 - b2**t)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho < 5.0:
            return m_hat
        r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        return r * m_hat / (np.sqrt(v_hat) + 1e-8)

    assert_updates(O.scale_by_radam(b2=b2), rule, rtol=1e-4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_trace(nesterov):
    def rule(t, g, p, m):
        m["t"] = 0.7 * m.get("t", 0.0) + g
        return 0.7 * m["t"] + g if nesterov else m["t"]

    assert_updates(O.trace(decay=0.7, nesterov=nesterov), rule)


def test_clip():
    assert_updates(O.clip(delta=0.5), lambda t, g, p, m: np.clip(g, -0.5, 0.5))


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_by_global_norm(max_norm):
    init_fn, update_fn = O.clip_by_global_norm(max_norm=max_norm)
    for g in GRADS:
        norm = math.sqrt(sum(float(np.sum(x * x)) for x in leaves64(g)))
        updates, _ = update_fn(g, init_fn(PARAMS), PARAMS)
        for x, u in zip(leaves64(g), tree_leaves(updates), strict=True):
            want = x if norm < max_norm else x / norm * max_norm
            np.testing.assert_allclose(u, want, rtol=1e-5)


def test_centralize_subtracts_the_mean_over_all_but_the_first_axis():
    def rule(t, g, p, m):
        return g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True) if g.ndim > 1 else g

    assert_updates(O.centralize(), rule)


def test_add_decayed_weights():
    assert_updates(O.add_decayed_weights(decay=0.3), lambda t, g, p, m: g + 0.3 * p)


def test_scale_by_trust_ratio():
    def rule(t, g, p, m):
        pn, gn = np.linalg.norm(p), np.linalg.norm(g)
        return g * (2.0 * pn / (gn + 0.1))

    assert_updates(O.scale_by_trust_ratio(trust_coefficient=2.0, eps=0.1), rule)


def test_scale_by_trust_ratio_is_one_for_a_zero_parameter():
    init_fn, update_fn = O.scale_by_trust_ratio()
    params = {"w": np.zeros(3, np.float32)}
    g = {"w": np.full(3, 2.0, np.float32)}
    with np.errstate(all="raise"):
        updates, _ = update_fn(g, init_fn(params), params)
    np.testing.assert_array_equal(updates["w"], g["w"])


# ---------------------------------------------------------------------------
# Composition and state layout


def test_pipes_nest_and_state_is_one_entry_per_stateful_combinator_outermost_first():
    pair = O.scale(O.trace(O.scale_by_adam(O.clip(delta=1.0)), decay=0.5), -0.1)
    state = pair.init(PARAMS)
    assert isinstance(state, tuple) and len(state) == 2
    assert set(state[0]) == {"trace"} and set(state[1]) == {"mu", "nu", "count"}
    adam = _adam(0.9, 0.999, 1e-8, 1e-15)

    def rule(t, g, p, m):
        d = adam(t, np.clip(g, -1.0, 1.0), p, m)
        m["t"] = 0.5 * m.get("t", 0.0) + d
        return -0.1 * m["t"]

    assert_updates(pair, rule, rtol=1e-4)


def test_compose_runs_the_first_then_the_second_and_puts_the_second_state_first():
    pair = O.compose(O.centralize(), O.rmsprop(0.1))
    state = pair.init(PARAMS)
    assert isinstance(state, tuple) and len(state) == 1 and set(state[0]) == {"count", "nu"}

    def rule(t, g, p, m):
        c = g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True) if g.ndim > 1 else g
        return -0.1 * c / np.sqrt(ema(m, "nu", c * c, 0.9) + 1e-8)

    assert_updates(pair, rule, rtol=1e-4)
    pair = O.compose(O.trace(), O.scale_by_adam())
    state = pair.init(PARAMS)
    assert set(state[0][0]) == {"mu", "nu", "count"} and set(state[1]) == {"trace"}


def test_stateless_and_stateful_build_custom_combinators():
    def init_fn(params):
        return {"calls": np.zeros((), np.int32)}

    def apply_fn(updates, state, params):
        return tree_map(lambda u: u * 2.0, updates), {"calls": state["calls"] + 1}

    pair = O.stateful(O.stateless(lambda u, p: tree_map(lambda x: x + 1.0, u)), init_fn, apply_fn)
    assert_updates(pair, lambda t, g, p, m: 2.0 * (g + 1.0))
    _, state = run_pair(pair)[-1]
    assert int(state[0]["calls"]) == 8


@pytest.mark.parametrize(
    ("builtin", "composition"),
    [
        (O.sgd(0.1), O.scale(-0.1)),
        (O.sgd(0.1, momentum=0.9), O.scale(O.trace(decay=0.9), -0.1)),
        (O.sgd(0.1, momentum=0.9, nesterov=True), O.scale(O.trace(decay=0.9, nesterov=True), -0.1)),
        (O.adam(0.05), O.scale(O.scale_by_adam(), -0.05)),
        (
            O.adamw(0.05, decay=0.1),
            O.scale(O.add_decayed_weights(O.scale_by_adam(), decay=0.1), -0.05),
        ),
        (O.adabelief(0.05), O.scale(O.scale_by_belief(), -0.05)),
        (O.adagrad(0.1), O.scale(O.scale_by_rss(), -0.1)),
        (
            O.lamb(0.05, decay=0.1),
            O.scale(
                O.scale_by_trust_ratio(O.add_decayed_weights(O.scale_by_adam(), decay=0.1)),
                -0.05,
            ),
        ),
        (O.radam(0.05, b2=0.9), O.scale(O.scale_by_radam(b2=0.9), -0.05)),
        (O.rmsprop(0.1), O.scale(O.scale_by_rms(), -0.1)),
        (O.rmsprop(0.1, centered=True), O.scale(O.scale_by_stddev(), -0.1)),
        (O.rmsprop(0.1, momentum=0.5), O.trace(O.scale(O.scale_by_rms(), -0.1), decay=0.5)),
        (O.yogi(0.05), O.scale(O.scale_by_yogi(), -0.05)),
        (
            O.sgd(schedules.cosine_decay(0.1, decay_steps=3)),
            O.scale_by_schedule(lambda c: -schedules.cosine_decay(0.1, decay_steps=3)(c)),
        ),
    ],
    ids=lambda v: getattr(v, "name", None) or repr(v)[:40],
)
def test_each_builtin_equals_its_polaris_composition(builtin, composition):
    for (ub, _), (uc, _) in zip(run_pair(builtin), run_pair(composition), strict=True):
        for a, b in zip(tree_leaves(ub), tree_leaves(uc), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-8)


# ---------------------------------------------------------------------------
# Eager == traced


TRACED = [
    O.scale(O.scale_by_adam(O.centralize()), -0.1),
    O.scale(O.scale_by_stddev(O.clip_by_global_norm(max_norm=0.5)), -0.1),
    O.scale(O.scale_by_trust_ratio(O.add_decayed_weights(O.scale_by_yogi(), decay=0.1)), -0.1),
    O.scale_by_schedule(O.scale_by_radam(b2=0.9), schedules.polynomial_decay(0.1)),
    O.compose(O.clip(delta=0.5), O.sgd(0.1, momentum=0.9)),
    O.accumulate_gradients(O.scale(O.scale_by_rss(), -0.1), 2),
    O.skip_not_finite(O.scale(O.trace(), -0.1)),
    O.scale_by_state(O.scale_by_belief(), -0.1),
]


@pytest.mark.parametrize("pair", TRACED, ids=lambda p: p.name)
def test_traced_update_equals_eager(pair):
    init_fn, update_fn = pair
    state = init_fn(PARAMS)
    types = [tree_map(type_of, a) for a in (GRADS[0], state, PARAMS)]
    body = trace(lambda g, s, p: update_fn(g, s, p), types)
    eager_state = traced_state = state
    for g in GRADS:
        want, eager_state = update_fn(g, eager_state, PARAMS)
        (got, traced_state), _ = run(body, {}, {}, args=tree_leaves([g, traced_state, PARAMS]))
        for a, b in zip(tree_leaves((want, eager_state)), tree_leaves((got, traced_state))):
            np.testing.assert_allclose(np.asarray(b), a, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# accumulate_gradients, skip_not_finite, add_noise


def test_accumulate_gradients_applies_the_mean_every_n_steps():
    pair = O.accumulate_gradients(O.scale(O.trace(decay=0.5), -1.0), 2)
    got = run_pair(pair)
    trace_ = 0.0
    for t, (updates, state) in enumerate(got, start=1):
        g = leaves64(GRADS[t - 1])[0]
        if t % 2:
            np.testing.assert_array_equal(tree_leaves(updates)[0], 0.0)
            assert int(state[0]["step"]) == 1
        else:
            mean = (leaves64(GRADS[t - 2])[0] + g) / 2
            trace_ = 0.5 * trace_ + mean
            np.testing.assert_allclose(tree_leaves(updates)[0], -trace_, rtol=1e-5)
            assert int(state[0]["step"]) == 0
            np.testing.assert_array_equal(tree_leaves(state[0]["gradient_state"])[0], 0.0)


def test_skip_not_finite_zeroes_the_step_and_keeps_the_state():
    pair = O.skip_not_finite(O.scale_by_adam())
    init_fn, update_fn = pair
    state = init_fn(PARAMS)
    _, state = update_fn(GRADS[0], state, PARAMS)
    bad = tree_map(lambda g: g.copy(), GRADS[1])
    bad["dense"]["bias"][0] = np.nan
    u2, state2 = update_fn(bad, state, PARAMS)
    assert all(np.all(x == 0) for x in tree_leaves(u2))
    assert int(state2[0]["not_finite"]) == 1
    for a, b in zip(tree_leaves(state[1:]), tree_leaves(state2[1:]), strict=True):
        np.testing.assert_array_equal(a, b)
    u3, _ = update_fn(GRADS[1], state2, PARAMS)
    want, _ = O.scale_by_adam().update(GRADS[1], state[1:], PARAMS)
    for a, b in zip(tree_leaves(u3), tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_add_noise_is_reproducible_with_the_annealed_deviation():
    params = {"w": np.zeros(20000, np.float32)}
    grads = {"w": np.zeros(20000, np.float32)}
    pair = O.add_noise(eta=0.5, gamma=1.0, seed=3)
    init_fn, update_fn = pair
    state = init_fn(params)
    for t in (1, 2):
        updates, new_state = update_fn(grads, state, params)
        again, _ = update_fn(grads, state, params)
        np.testing.assert_array_equal(updates["w"], again["w"])
        assert np.std(updates["w"]) == pytest.approx(math.sqrt(0.5 / t), rel=0.03)
        state = new_state


def test_add_noise_refuses_to_be_traced():
    init_fn, update_fn = O.add_noise()
    state = init_fn(PARAMS)
    types = [tree_map(type_of, a) for a in (GRADS[0], state, PARAMS)]
    with pytest.raises(TraceError, match="noisy_sgd"):
        trace(lambda g, s, p: update_fn(g, s, p), types)


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: O.scale_by_adam(beta1=0.9), "unknown option 'beta1'.*b1"),
        (lambda: O.scale_by_adam(b1=1.5), "option 'b1'"),
        (lambda: O.clip(delta=-1.0), "option 'delta'"),
        (lambda: O.scale("fast"), "option 'step_size'"),
        (lambda: O.scale_by_schedule(0.1), "schedule function"),
        (lambda: O.accumulate_gradients(0), "option 'steps'"),
        (lambda: O.trace(3), "combinator"),
        (lambda: O.compose(O.clip(), "adam"), "pair"),
    ],
)
def test_bad_arguments_are_option_errors(make, message):
    with pytest.raises(OptionError, match=message):
        make()


def test_an_optimizer_piped_into_a_combinator_keeps_its_state_as_one_entry():
    # Polaris.Optimizers.adam(learning_rate: 0.1)
    # |> Polaris.Updates.clip_by_global_norm(max_norm: 0.01)
    pair = O.clip_by_global_norm(O.adam(0.1), max_norm=0.01)
    state = pair.init(PARAMS)
    assert isinstance(state, tuple) and len(state) == 1 and set(state[0]) == {"count", "mu", "nu"}
    adam = _adam(0.9, 0.999, 1e-8, 1e-15)
    mems = [{} for _ in tree_leaves(PARAMS)]
    for g in GRADS[:3]:
        updates, state = pair.update(g, state, PARAMS)
        t = int(state[0]["count"])
        raw = [-0.1 * adam(t, x, None, m) for x, m in zip(leaves64(g), mems, strict=True)]
        norm = math.sqrt(sum(float(np.sum(r * r)) for r in raw))
        for got, want in zip(tree_leaves(updates), raw, strict=True):
            np.testing.assert_allclose(got, want * min(1.0, 0.01 / norm), rtol=1e-4)
