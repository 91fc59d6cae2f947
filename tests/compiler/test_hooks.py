"""ax.attach_hook's events as Axon 0.8.1's compiler fires them: initialize (the layer's new
parameters), pre_forward (each input), forward (the output), backward (the gradient of
the loss w.r.t. the output, in a train step) and all. Values are checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc import optimizers
from axonc.loop import Loop

RNG = np.random.default_rng(21)
X = RNG.normal(size=(5, 3)).astype(np.float32)
Y = RNG.normal(size=(5, 2)).astype(np.float32)


def _recorder(log: list, tag: str):
    def hook(value):
        log.append((tag, value))

    return hook


def test_initialize_hooks_get_the_new_parameters_in_any_mode():
    log: list = []
    d = ax.input("x", (None, 3)).dense(2, name="d")
    d = ax.attach_hook(d, _recorder(log, "init"), on="initialize", mode="train")
    r = ax.attach_hook(d.relu(), _recorder(log, "relu"), on="initialize")
    state = ax.build(r)[0](ax.template((1, 3)))  # inference build: mode does not filter init
    assert [tag for tag, _ in log] == ["init", "relu"]
    params = log[0][1]
    assert set(params) == {"kernel", "bias"}
    np.testing.assert_array_equal(params["kernel"], state.data["d"]["kernel"])
    assert log[1][1] == {}  # a layer without parameters: an empty map, as Axon's


def test_pre_forward_hooks_see_each_input_before_the_layer_runs():
    log: list = []
    a, b = ax.input("a", (None, 2)), ax.input("b", (None, 2))
    s = ax.attach_hook(ax.add(a, b), _recorder(log, "pre"), on="pre_forward")
    s = ax.attach_hook(s, _recorder(log, "fwd"))
    va, vb = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    init, predict = ax.build(s)
    predict(init({"a": ax.template((1, 2)), "b": ax.template((1, 2))}), {"a": va, "b": vb})
    assert [tag for tag, _ in log] == ["pre", "pre", "fwd"]
    np.testing.assert_allclose(log[0][1], va, rtol=1e-6)
    np.testing.assert_allclose(log[1][1], vb, rtol=1e-6)
    np.testing.assert_allclose(log[2][1], va + vb, rtol=1e-6)


def _model(log: list, on: str = "backward", mode: str = "both") -> ax.Axon:
    d = ax.input("x", (None, 3)).dense(2, name="d")
    d = ax.attach_hook(d, _recorder(log, on), on=on, mode=mode)
    return d.tanh()


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_backward_hooks_get_the_gradient_of_the_loss_wrt_the_layer_output(compiler):
    log: list = []
    step = ax.train.compile_step(
        _model(log), "mean_squared_error", optimizers.sgd(0.1), compiler=compiler
    )
    ts = step.init(ax.template((None, 3)))
    p = {k: np.asarray(v, np.float64) for k, v in ts.model_state.data["d"].items()}
    assert log == []  # no gradient at init
    ts, _ = step(ts, X, Y)
    ((tag, grad),) = log
    z = X.astype(np.float64) @ p["kernel"] + p["bias"]
    # L = mean((tanh(z) - y)^2) over 10 elements: dL/dz = 2 (tanh z - y)(1 - tanh^2 z) / 10
    want = 2 * (np.tanh(z) - Y) * (1 - np.tanh(z) ** 2) / Y.size
    assert tag == "backward"
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def test_a_hook_does_not_change_what_training_computes():
    runs = []
    for model in (_model([]), _model([], on="backward"), _model([], on="all")):
        step = ax.train.compile_step(model, "mean_squared_error", optimizers.sgd(0.1))
        ts = step.init(ax.template((None, 3)))
        for _ in range(3):
            ts, _ = step(ts, X, Y)
        runs.append(ts.model_state.data["d"]["kernel"])
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[2], runs[0], rtol=1e-5, atol=1e-6)


def test_a_backward_hook_for_inference_only_does_not_fire_in_a_train_step():
    log: list = []
    step = ax.train.compile_step(
        _model(log, mode="inference"), "mean_squared_error", optimizers.sgd(0.1)
    )
    ts = step.init(ax.template((None, 3)))
    step(ts, X, Y)
    assert log == []


def test_all_fires_as_axon_0_8_1_does_initialize_pre_forward_and_forward_twice():
    log: list = []
    step = ax.train.compile_step(_model(log, on="all"), "mean_squared_error", optimizers.sgd(0.1))
    ts = step.init(ax.template((None, 3)))
    init_params = log[0][1]
    assert set(init_params) == {"kernel", "bias"}
    log.clear()
    step(ts, X, Y)
    assert len(log) == 3  # pre_forward (one input), forward, and forward again; no gradient
    np.testing.assert_allclose(log[0][1], X)
    np.testing.assert_array_equal(log[1][1], log[2][1])
    assert log[1][1].shape == (5, 2)


def test_the_trainer_calls_backward_hooks_once_per_step():
    log: list = []
    loop = Loop.trainer(_model(log), "mean_squared_error", optimizers.sgd(0.1), log=0)
    loop.run([(X, Y), (X, Y)], epochs=2, progress=False)
    assert [tag for tag, _ in log] == ["backward"] * 4
    assert all(g.shape == (5, 2) for _, g in log)


def test_only_forward_time_hooks_move_prediction_to_the_interpreter():
    backward_only = ax.build(_model([]))[1]
    assert hasattr(backward_only, "compiled")  # still compiled for onnxruntime
    forward = ax.build(_model([], on="forward"))[1]
    assert not hasattr(forward, "compiled")


def test_hooks_on_an_input_see_its_value_as_axons_docs_show():
    log: list = []
    x = ax.attach_hook(ax.input("input", (None, 1)), _recorder(log, "all"), on="all")
    model = x.dense(1)
    init, predict = ax.build(model)
    state = init(ax.template((1, 1)))
    assert log == []  # an input has no initialize step
    data = np.array([[1.0], [2.0]], np.float32)
    predict(state, data)
    # forward, then Axon's backward slot fires an "all" hook again on the value
    assert [tag for tag, _ in log] == ["all", "all"]
    np.testing.assert_array_equal(log[0][1], data)
