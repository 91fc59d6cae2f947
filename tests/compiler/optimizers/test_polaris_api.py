"""Polaris's optimizer API: the (init_fn, update_fn) pair, update_fn returning updates,
apply_updates, ModelState parameters; numbers worked out by hand from Polaris's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

import axonc as ax
from axonc import optimizers
from axonc.errors import InputError, OptionError


def _one(value: float) -> dict:
    return {"w": np.asarray([value], np.float32)}


def test_sgd_update_then_apply_updates_steps_once():
    # Polaris: sgd(0.1) scales the gradient by -0.1; apply_updates adds: 1 + (-0.1) * 1 = 0.9
    init_fn, update_fn = optimizers.sgd(0.1)
    params = _one(1.0)
    updates, state = update_fn(_one(1.0), init_fn(params), params)
    np.testing.assert_allclose(updates["w"], [-0.1], rtol=1e-7)
    np.testing.assert_allclose(optimizers.apply_updates(params, updates)["w"], [0.9], rtol=1e-7)
    assert int(state["count"]) == 1


def test_adam_two_steps_match_the_formula_worked_by_hand():
    # Kingma & Ba with Polaris's eps_root under the root; b1 0.9, b2 0.999, eps 1e-8.
    lr, b1, b2, eps, eps_root = 0.1, 0.9, 0.999, 1e-8, 1e-15
    init_fn, update_fn = optimizers.adam(lr)
    params = _one(1.0)
    state = init_fn(params)
    m = v = 0.0
    w = 1.0
    for t, g in enumerate([0.5, -1.0], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        expected = -lr * m_hat / (math.sqrt(v_hat + eps_root) + eps)
        updates, state = update_fn(_one(g), state, params)
        np.testing.assert_allclose(updates["w"], [expected], rtol=2e-6)
        params = optimizers.apply_updates(params, updates)
        w += expected
        np.testing.assert_allclose(params["w"], [w], rtol=1e-6)
    # step 1: m_hat = g, v_hat = g^2, so the update is -lr * 0.5 / 0.5 (up to eps)
    assert w == pytest.approx(1.0 - 0.1 + 0.1 * 0.2894736842 / 0.7906880, rel=1e-5)


def test_the_optimizer_is_a_pair():
    opt = optimizers.adam(1e-3)
    assert len(opt) == 2
    init_fn, update_fn = opt
    assert opt[0] == init_fn and opt[1] == update_fn
    params = {"dense_0": {"kernel": np.ones((2, 3), np.float32)}}
    state = init_fn(params)
    assert set(state) == {"count", "mu", "nu"}
    assert state["mu"]["dense_0"]["kernel"].shape == (2, 3)


def test_init_and_update_accept_a_model_state_trainable_parameters_only():
    model = ax.input("x", shape=(None, 3)).dense(2, name="a").dense(1, name="b")
    init, _ = ax.build(model)
    ms = init(ax.template((1, 3), "f32")).freeze(lambda path: path[0] == "a")
    init_fn, update_fn = optimizers.sgd(0.5, momentum=0.9)
    state = init_fn(ms)
    assert set(state["trace"]) == {"b"}  # frozen layer "a" has no slot
    grads = {"b": {k: np.ones_like(v) for k, v in ms.trainable_parameters()["b"].items()}}
    updates, state = update_fn(grads, state, ms)
    new = optimizers.apply_updates(ms, updates)
    assert isinstance(new, ax.ModelState)
    for key in ("kernel", "bias"):
        before = ms.get(("b", key))
        np.testing.assert_allclose(new.get(("b", key)), before - 0.5, rtol=1e-6)
        np.testing.assert_array_equal(new.get(("a", key)), ms.get(("a", key)))
    assert new.frozen == ms.frozen


def test_apply_updates_merges_a_state_over_the_result():
    params = {"bn": {"gamma": np.ones(2, np.float32)}}
    state = {"bn": {"mean": np.full(2, 3.0, np.float32)}}
    out = optimizers.apply_updates(params, {"bn": {"gamma": np.full(2, -0.5, np.float32)}}, state)
    np.testing.assert_allclose(out["bn"]["gamma"], [0.5, 0.5])
    np.testing.assert_allclose(out["bn"]["mean"], [3.0, 3.0])


def test_apply_updates_needs_matching_trees():
    with pytest.raises(InputError, match="updates has no entry at w"):
        optimizers.apply_updates(_one(1.0), {"v": np.ones(1, np.float32)})


def test_update_returns_f32_updates_for_lower_precision_params():
    init_fn, update_fn = optimizers.adam(0.1)
    params = {"w": np.ones(2, np.float16)}
    updates, _ = update_fn({"w": np.ones(2, np.float16)}, init_fn(params), params)
    assert updates["w"].dtype == np.float32  # the moments are f32, as Polaris's
    assert optimizers.apply_updates(params, updates)["w"].dtype == np.float16


def test_a_non_pair_is_refused_by_the_trainer_and_compile_step():
    model = ax.input("x", shape=(None, 2)).dense(1)
    with pytest.raises(OptionError, match=r"\(init_fn, update_fn\) pair"):
        ax.train.compile_step(model, "mean_squared_error", (lambda p: (),))
    with pytest.raises(OptionError, match=r"\(init_fn, update_fn\) pair"):
        ax.Loop.trainer(model, "mean_squared_error", 3.0)


def test_gradients_held_in_a_model_state_pair_with_its_trainable_parameters():
    model = ax.input("x", shape=(None, 3)).dense(2, name="a")
    init, _ = ax.build(model)
    ms = init(ax.template((1, 3), "f32"))
    grads = ax.ModelState.new({"a": {k: np.ones_like(v) for k, v in ms.data["a"].items()}})
    init_fn, update_fn = optimizers.sgd(0.25)
    updates, _ = update_fn(grads, init_fn(ms), ms)
    new = optimizers.apply_updates(ms, updates)
    np.testing.assert_allclose(new.get(("a", "kernel")), ms.get(("a", "kernel")) - 0.25)
