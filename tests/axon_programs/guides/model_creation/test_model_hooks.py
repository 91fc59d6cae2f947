"""Axon's guides/model_creation/model_hooks.livemd: hooks on initialization, the forward
and backward passes, in order, on all events, and per mode."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import iota


def recorder(calls, label):
    def hook(val):
        calls.append((label, val))
        return val

    return hook


def test_hooks_run_in_order():
    calls = []
    model = ax.input("data").dense(8)
    model = ax.attach_hook(model, recorder(calls, "hook1"), on="forward")
    model = ax.attach_hook(model, recorder(calls, "hook2"), on="forward").relu()

    init_fn, predict_fn = ax.build(model)
    input = iota(2, 4)
    params = init_fn(input, {})

    out = predict_fn(params, input)
    assert [label for label, _ in calls] == ["hook1", "hook2"]
    np.testing.assert_allclose(out, np.maximum(calls[1][1], 0), rtol=1e-6)


def test_hook_only_in_train_mode():
    calls = []
    model = ax.input("data").dense(8)
    model = ax.attach_hook(model, recorder(calls, "train"), on="forward", mode="train").relu()
    input = iota(2, 4)

    init_fn, predict_fn = ax.build(model, mode="train")
    params = init_fn(input, {})
    out = predict_fn(params, input)
    assert [label for label, _ in calls] == ["train"]
    assert set(out) == {"prediction", "state"}
    np.testing.assert_allclose(out["prediction"], np.maximum(calls[0][1], 0), rtol=1e-6)

    calls.clear()
    init_fn, predict_fn = ax.build(model, mode="inference")
    params = init_fn(input, {})
    predict_fn(params, input)
    assert calls == []
