"""compile_step and Loop.trainer with any (init_fn, update_fn) pair: composed combinators and
plain functions compile into the step graph like the built-ins; checked against the
built-in they equal, the reference interpreter and a numpy linear regression."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc import optimizers as O
from axonc.ir import tree_leaves, tree_map
from axonc.loop import deserialize_state, serialize_state

RNG = np.random.default_rng(1)
X = RNG.normal(size=(16, 4)).astype(np.float32)
W_TRUE = RNG.normal(size=(4, 2)).astype(np.float32)
Y = X @ W_TRUE


def linear() -> ax.Axon:
    return ax.input("x", shape=(None, 4)).dense(2, name="lin")


def mlp() -> ax.Axon:
    return ax.input("x", shape=(None, 4)).dense(8, activation="tanh").dense(2)


def run_steps(optimizer, model=mlp, compiler="onnxruntime", steps=3, scale=1.0):
    step = ax.train.compile_step(model(), "mean_squared_error", optimizer, compiler=compiler)
    ts = step.init(ax.template((None, 4), "f32")).with_learning_rate_scale(scale)
    for _ in range(steps):
        ts, _ = step(ts, X, Y)
    return ts


def assert_params_close(a, b, rtol=1e-5, atol=1e-6):
    fa, fb = a.model_state.flatten(), b.model_state.flatten()
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=k)


def test_a_composed_adam_trains_as_the_builtin_adam():
    composed = run_steps(O.scale(O.scale_by_adam(), -0.05))
    builtin = run_steps(O.adam(0.05))
    assert_params_close(composed, builtin)
    assert isinstance(composed.optimizer_state, tuple)
    assert int(composed.optimizer_state[0]["count"]) == 3


@pytest.mark.parametrize(
    "pair",
    [
        O.compose(O.centralize(), O.rmsprop(0.05, momentum=0.5)),
        O.scale(O.scale_by_yogi(O.clip_by_global_norm(max_norm=0.5)), -0.1),
        O.skip_not_finite(O.accumulate_gradients(O.sgd(0.1, momentum=0.9), 2)),
    ],
    ids=["centralize_rmsprop", "clipped_yogi", "skip_accumulate_sgd"],
)
def test_a_pair_compiles_to_what_the_reference_interpreter_computes(pair):
    ort_ts = run_steps(pair)
    ref_ts = run_steps(pair, compiler="reference")
    assert_params_close(ort_ts, ref_ts, rtol=1e-4, atol=1e-6)
    for a, b in zip(tree_leaves(ort_ts.optimizer_state), tree_leaves(ref_ts.optimizer_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def sign_sgd(lr: float):
    """A Polaris-style pair of plain functions: -lr * sign(g), counting its calls."""

    def init_fn(params):
        return {"calls": np.zeros((), np.int32)}

    def update_fn(grads, state, params):
        return tree_map(lambda g: anp.sign(g) * -lr, grads), {"calls": state["calls"] + 1}

    return init_fn, update_fn


def test_a_pair_of_plain_functions_against_numpy_linear_regression():
    lr = 0.01
    ts = run_steps(sign_sgd(lr), model=linear, steps=4)
    step = ax.train.compile_step(linear(), "mean_squared_error", sign_sgd(lr))
    w = step.init(ax.template((None, 4), "f32")).model_state
    kernel, bias = w.get(("lin", "kernel")).astype(np.float64), w.get(("lin", "bias"))
    bias = bias.astype(np.float64)
    x, y = X.astype(np.float64), Y.astype(np.float64)
    for _ in range(4):
        r = x @ kernel + bias - y  # mse = mean(r^2) over batch and outputs
        g_kernel, g_bias = 2 * x.T @ r / r.size, 2 * r.sum(axis=0) / r.size
        kernel, bias = kernel - lr * np.sign(g_kernel), bias - lr * np.sign(g_bias)
    np.testing.assert_allclose(ts.model_state.get(("lin", "kernel")), kernel, rtol=1e-6)
    np.testing.assert_allclose(ts.model_state.get(("lin", "bias")), bias, rtol=1e-6)
    assert int(ts.optimizer_state["calls"]) == 4


def test_the_learning_rate_scale_scales_a_pair_and_a_builtin_alike():
    half = run_steps(O.scale(O.trace(decay=0.9), -0.1), scale=0.5)
    assert_params_close(half, run_steps(O.sgd(0.05, momentum=0.9)))
    assert_params_close(run_steps(O.sgd(0.1, momentum=0.9), scale=0.5), half)


def test_the_loop_trains_checkpoints_and_resumes_with_a_composed_pair(tmp_path):
    pair = O.compose(O.centralize(), O.adam(0.02))
    batches = [(X[i : i + 8], Y[i : i + 8]) for i in (0, 8)]
    losses = []
    loop = ax.Loop.trainer(mlp(), "mean_squared_error", pair, log=0).handle(
        "epoch_completed", lambda s: (losses.append(float(s.metrics["loss"])), ("continue", s))[1]
    )
    state = loop.run(batches, epochs=6, progress=False)
    assert losses[-1] < losses[0]
    assert isinstance(state, ax.ModelState)
    assert loop.run(batches, epochs=6, progress=False).flatten().keys() == state.flatten().keys()
    captured = {}
    loop2 = ax.Loop.trainer(mlp(), "mean_squared_error", pair, log=0).handle(
        "completed", lambda s: (captured.setdefault("s", s), ("continue", s))[1]
    )
    loop2.run(batches, epochs=1, progress=False)
    restored = deserialize_state(serialize_state(captured["s"]))
    opt_state = restored.step_state["optimizer_state"]
    assert isinstance(opt_state, tuple) and set(opt_state[0]) == {"count", "mu", "nu"}


def test_the_exported_step_names_a_tuple_state_by_index(tmp_path):
    pair = O.scale(O.trace(O.scale_by_adam(), decay=0.5), -0.01)
    step = ax.train.compile_step(mlp(), "mean_squared_error", pair)
    ts = step.init(ax.template((None, 4), "f32"))
    flat = ts.flatten()
    assert "__optimizer__/0/trace/dense_0/kernel" in flat
    assert "__optimizer__/1/count" in flat
    path = tmp_path / "step.onnx"
    step.export(path, ts, X, Y)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feedback = json.loads(session.get_modelmeta().custom_metadata_map["axonc.train_feedback"])
    assert "__optimizer__/1/mu/dense_1/kernel" in feedback.values()
    feeds = {k: v for k, v in flat.items() if k in names}
    feeds.update(x=X, target=Y)
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(None, feeds)))
    trained = ts.load_flat({name: values[out] for out, name in feedback.items()})
    expected, _ = step(ts, X, Y)
    assert_params_close(trained, expected)
    assert int(trained.optimizer_state[1]["count"]) == 1


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_noisy_sgd_compiles_with_host_drawn_noise(compiler):
    lr, eta, gamma = 0.05, 0.3, 0.55
    opt = O.noisy_sgd(lr, eta=eta, gamma=gamma)
    step = ax.train.compile_step(linear(), "mean_squared_error", opt, compiler=compiler, seed=7)
    ts = step.init(ax.template((None, 4), "f32"))
    kernel = ts.model_state.get(("lin", "kernel")).astype(np.float64)
    bias = ts.model_state.get(("lin", "bias")).astype(np.float64)
    x, y = X.astype(np.float64), Y.astype(np.float64)
    for t in (1, 2, 3):
        noise = step.noise(ts)
        assert noise["lin"]["kernel"].shape == (4, 2)
        ts, _ = step(ts, X, Y)
        r = x @ kernel + bias - y
        g_kernel, g_bias = 2 * x.T @ r / r.size, 2 * r.sum(axis=0) / r.size
        std = math.sqrt(eta / t**gamma)
        kernel = kernel - lr * g_kernel + std * noise["lin"]["kernel"]
        bias = bias - lr * g_bias + std * noise["lin"]["bias"]
    np.testing.assert_allclose(ts.model_state.get(("lin", "kernel")), kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ts.model_state.get(("lin", "bias")), bias, rtol=1e-5, atol=1e-6)
    first, second = step.noise(ts), step.noise(ts)
    np.testing.assert_array_equal(first["lin"]["kernel"], second["lin"]["kernel"])
    # the noise follows the optimizer's count, which the Loop carries from step to step
    fresh = step.noise(step.init(ax.template((None, 4), "f32")))
    assert not np.array_equal(fresh["lin"]["kernel"], first["lin"]["kernel"])


def test_the_loop_draws_fresh_noisy_sgd_noise_every_step():
    opt = O.noisy_sgd(0.0, eta=1.0)  # learning rate 0: every move is noise
    kernels = []
    loop = ax.Loop.trainer(linear(), "mean_squared_error", opt, log=0).handle(
        "iteration_completed",
        lambda s: (
            kernels.append(np.array(s.step_state["model_state"].get(("lin", "kernel")))),
            ("continue", s),
        )[1],
    )
    loop.run([(X, Y)], epochs=3, progress=False)
    assert len(kernels) == 3
    # steps 2 and 3 move by sqrt(eta / t^0.55) * noise_t; the noises must differ
    noise_2 = (kernels[1] - kernels[0]) / math.sqrt(1.0 / 2**0.55)
    noise_3 = (kernels[2] - kernels[1]) / math.sqrt(1.0 / 3**0.55)
    assert not np.allclose(noise_2, noise_3, rtol=0.1)
