"""`ax.train.export_ort_training`'s artifacts, run by onnxruntime.training.api, against
independent computations: the loss against axonc's reference interpreter in float64, the
gradients against float64 central finite differences of that loss, and optimizer steps
against the optimizers' published formulas in numpy (and axonc's own compiled step).

Tolerances: onnxruntime computes in float32. The loss and its gradients are compared
with rtol 1e-5 / 2e-4 (float32 rounding over a few hundred products; finite differences
with h = 1e-6 in float64 are exact to ~1e-9 here). An optimizer step is compared with
atol 1e-6 on parameters of size ~0.5: the formula is a handful of float32 operations on the
same gradient, i.e. a few ulps (6e-8 each) of the parameter.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnxruntime.training.api import CheckpointState, Module, Optimizer

import axonc as ax
import axonc.numpy as anp
from axonc import optimizers
from axonc.cli import cli
from axonc.interpreter import run
from axonc.ops.dropout import draw
from axonc.train.ort_training import OrtTrainingSession

MODEL = ax.input("x", shape=(None, 5)).dense(7, activation="tanh").dense(3, activation="softmax")
LOSS = "categorical_cross_entropy"


def _batch(seed: int, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return x, y


def _state(model=MODEL, shape=(None, 5)) -> ax.ModelState:
    init, _ = ax.build(model, mode="train")
    return init(ax.template(shape, "f32"))


def _load(directory) -> tuple[CheckpointState, Module, Optimizer, list[str]]:
    """The artifacts in `directory` loaded as an on-device application would load them."""
    config = json.loads((directory / "axonc_training.json").read_text())
    state = CheckpointState.load_checkpoint(str(directory / "checkpoint"))
    module = Module(
        str(directory / "training_model.onnx"), state, str(directory / "eval_model.onnx")
    )
    optimizer = Optimizer(str(directory / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(config["learning_rate"])
    module.train()
    return state, module, optimizer, config["inputs"]


def _feeds(inputs: list[str], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    return [{"x": x, "target": y}[name] for name in inputs]


def _f64(tree):
    if isinstance(tree, dict):
        return {k: _f64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def _reference_loss(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    """The loss on axonc's reference interpreter, everything in float64."""
    pred, _ = run(MODEL, {"x": x.astype(np.float64)}, params, "train")
    return float(ax.losses.categorical_cross_entropy(y.astype(np.float64), pred, reduction="mean"))


def test_the_artifacts_hold_the_initial_state_and_the_masks(tmp_path):
    state = _state().freeze(lambda path: path[0] == "dense_0")
    arts = ax.train.export_ort_training(MODEL, LOSS, "sgd", tmp_path, state=state)
    for name in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint"):
        assert (tmp_path / name).exists(), name
    ckpt = CheckpointState.load_checkpoint(str(arts.checkpoint))
    for path in state.paths():
        name = "/".join(path)
        np.testing.assert_array_equal(ckpt.parameters[name].data, state.get(path))
        assert ckpt.parameters[name].requires_grad == (path[0] != "dense_0"), name


def test_the_loss_is_the_reference_interpreter_s(tmp_path):
    state = _state()
    arts = ax.train.export_ort_training(MODEL, LOSS, "sgd", tmp_path, state=state)
    _, module, _, inputs = _load(arts.directory)
    x, y = _batch(1)
    loss, pred = module(*_feeds(inputs, x, y))
    expected = _reference_loss(_f64(state.data), x, y)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    ref_pred, _ = run(MODEL, {"x": x}, state.data, "train")
    np.testing.assert_allclose(pred, ref_pred, rtol=1e-5, atol=1e-7)


def test_the_gradients_match_finite_differences(tmp_path):
    state = _state()
    arts = ax.train.export_ort_training(MODEL, LOSS, "sgd", tmp_path, state=state)
    ckpt, module, _, inputs = _load(arts.directory)
    x, y = _batch(2)
    module(*_feeds(inputs, x, y))
    params = _f64(state.data)
    h = 1e-6
    for layer, values in params.items():
        for name, value in values.items():
            numeric = np.zeros_like(value)
            for i in np.ndindex(value.shape):
                orig = value[i]
                value[i] = orig + h
                plus = _reference_loss(params, x, y)
                value[i] = orig - h
                minus = _reference_loss(params, x, y)
                value[i] = orig
                numeric[i] = (plus - minus) / (2 * h)
            grad = ckpt.parameters[f"{layer}/{name}"].grad
            np.testing.assert_allclose(grad, numeric, rtol=2e-4, atol=1e-7, err_msg=layer)


def _steps(tmp_path, optimizer, n: int = 3):
    """n steps on fresh batches: the gradients the training model computed at each step
    and the parameters before and after every step (all by name)."""
    state = _state()
    arts = ax.train.export_ort_training(MODEL, LOSS, optimizer, tmp_path, state=state)
    ckpt, module, opt, inputs = _load(arts.directory)
    names = json.loads(arts.config.read_text())["trainable"]
    params = [{n: np.array(ckpt.parameters[n].data) for n in names}]
    grads = []
    for i in range(n):
        module(*_feeds(inputs, *_batch(10 + i)))
        grads.append({n: np.array(ckpt.parameters[n].grad) for n in names})
        opt.step()
        module.lazy_reset_grad()
        params.append({n: np.array(ckpt.parameters[n].data) for n in names})
    return state, names, params, grads


def test_sgd_is_w_minus_lr_g(tmp_path):
    _, names, params, grads = _steps(tmp_path, optimizers.sgd(0.05))
    for t, g in enumerate(grads):
        for n in names:
            expected = params[t][n].astype(np.float64) - 0.05 * g[n]
            np.testing.assert_allclose(params[t + 1][n], expected, atol=1e-6, err_msg=n)


@pytest.mark.parametrize(
    ("optimizer", "decay"),
    [
        (optimizers.adam(0.01, b1=0.8, b2=0.95, eps=1e-3), 0.0),
        (optimizers.adamw(0.01, decay=0.1, eps=1e-4), 0.1),
    ],
)
def test_adam_and_adamw_follow_kingma_and_ba_with_decoupled_decay(tmp_path, optimizer, decay):
    """m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, w -= lr (m/(1-b1^t)) / (sqrt(v/(1-b2^t))
    + eps) + lr decay w: bias-corrected from the first step, eps outside the root (Polaris
    adam / adamw with eps_root 0, PyTorch's AdamW)."""
    o = optimizer.options
    b1, b2, eps, lr = o["b1"], o["b2"], o["eps"], o["learning_rate"]
    _, names, params, grads = _steps(tmp_path, optimizer)
    m = {n: 0.0 for n in names}
    v = {n: 0.0 for n in names}
    for t, g in enumerate(grads, start=1):
        for n in names:
            gn = g[n].astype(np.float64)
            m[n] = b1 * m[n] + (1 - b1) * gn
            v[n] = b2 * v[n] + (1 - b2) * gn**2
            w = params[t - 1][n].astype(np.float64)
            direction = (m[n] / (1 - b1**t)) / (np.sqrt(v[n] / (1 - b2**t)) + eps)
            expected = w - lr * direction - lr * decay * w
            np.testing.assert_allclose(params[t][n], expected, atol=1e-6, err_msg=f"{n} t={t}")


@pytest.mark.parametrize(
    "optimizer",
    [optimizers.adam(0.01, eps_root=0.0), optimizers.adamw(0.01, decay=0.05), optimizers.sgd(0.1)],
)
def test_three_steps_equal_axonc_s_own_compiled_step(tmp_path, optimizer):
    """Same start, same batches: the parameters after each step agree with axonc's step
    (Adam divides by sqrt(v) + eps, so gradients that differ in the last float32 bits
    move a parameter by far less than the atol)."""
    state, names, params, _ = _steps(tmp_path, optimizer)
    step = ax.train.compile_step(MODEL, LOSS, optimizer)
    ts = step.init(ax.template((None, 5), "f32"), state)
    for t in range(3):
        ts, _ = step(ts, *_batch(10 + t))
        for n in names:
            np.testing.assert_allclose(
                params[t + 1][n], ts.model_state.get(tuple(n.split("/"))), atol=2e-6, err_msg=n
            )


def test_polaris_default_eps_root_runs_as_zero(tmp_path):
    """adam's default eps_root (1e-15) under the square root changes the denominator by
    less than float32's resolution unless |g| < 1e-4 (spec/ort_training.md), so runs with
    it mapped to 0 and with 0 agree bit for bit here."""
    _, names, default, _ = _steps(tmp_path / "a", optimizers.adam(0.01), n=2)
    _, _, zero, _ = _steps(tmp_path / "b", optimizers.adam(0.01, eps_root=0.0), n=2)
    for n in names:
        np.testing.assert_array_equal(default[2][n], zero[2][n])


def test_frozen_parameters_do_not_move(tmp_path):
    state = _state().freeze(lambda path: path[0] == "dense_1")
    arts = ax.train.export_ort_training(MODEL, LOSS, "adam", tmp_path, state=state)
    ckpt, module, opt, inputs = _load(arts.directory)
    for i in range(3):
        module(*_feeds(inputs, *_batch(i)))
        opt.step()
        module.lazy_reset_grad()
    for path in state.paths():
        moved = not np.array_equal(ckpt.parameters["/".join(path)].data, state.get(path))
        assert moved == (path[0] == "dense_0"), path


def test_dropout_noise_is_an_input_drawn_as_the_reference_draws_it(tmp_path):
    model = ax.input("x", shape=(None, 5)).dense(7).dropout(rate=0.5).dense(3, activation="softmax")
    state = _state(model)
    arts = ax.train.export_ort_training(model, LOSS, "sgd", tmp_path, state=state)
    config = json.loads(arts.config.read_text())
    assert config["noise_inputs"] == {"dropout_0/noise": [None, 7]}
    _, module, _, inputs = _load(arts.directory)
    x, y = _batch(3)
    noise, _ = draw(state.get(("dropout_0", "key")), (6, 7))
    feeds = {"x": x, "target": y, "dropout_0/noise": noise.astype(np.float32)}
    loss, _ = module(*(feeds[n] for n in inputs))
    pred, _ = run(model, {"x": x}, state.data, "train")  # draws from the same key
    expected = ax.losses.categorical_cross_entropy(y, pred, reduction="mean")
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_batch_norm_statistics_are_state_outputs_written_back(tmp_path):
    """Batch norm trains on batch statistics; its running mean and variance are outputs
    of the training model, equal to the reference interpreter's updated state, and the
    engine's session writes them into the checkpoint for the next step."""
    model = ax.input("x", shape=(None, 5)).dense(7).batch_norm().dense(3, activation="softmax")
    state = _state(model)
    arts = ax.train.export_ort_training(model, LOSS, "sgd", tmp_path, state=state)
    session = OrtTrainingSession(arts)
    assert set(session.state_outputs.values()) == {"batch_norm_0/mean", "batch_norm_0/var"}
    x, y = _batch(5)
    loss, _, new_state = session.step({"x": x, "target": y})
    pred, ref_state = run(model, {"x": x}, state.data, "train")
    expected = ax.losses.categorical_cross_entropy(y, pred, reduction="mean")
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    for key, value in ref_state["batch_norm_0"].items():
        name = f"batch_norm_0/{key}"
        np.testing.assert_allclose(new_state[name], value, rtol=1e-5, atol=1e-7, err_msg=key)
        np.testing.assert_array_equal(session.state.parameters[name].data, new_state[name])
        assert not session.state.parameters[name].requires_grad


def test_a_model_with_hooks_is_refused_by_layer(tmp_path):
    model = ax.attach_hook(MODEL, lambda v: None, on="forward", mode="train")
    with pytest.raises(ax.errors.OptionError, match="hooks on softmax_0 are host Python code"):
        ax.train.export_ort_training(model, LOSS, "sgd", tmp_path)


def test_a_float64_parameter_is_refused_by_name(tmp_path):
    x = ax.input("x", shape=(None, 5))
    w = ax.param("w", (5, 3), dtype="f64")
    model = ax.layer(lambda x, w, **_: anp.matmul(anp.astype(x, "f64"), w), [x, w])
    with pytest.raises(ax.errors.OptionError, match=r"float32 parameters only.*custom_0/w"):
        ax.train.export_ort_training(model.activation("softmax"), LOSS, "sgd", tmp_path)


def test_the_cli_writes_artifacts_onnxruntime_trains(tmp_path):
    model = ax.input("x").dense(7, activation="tanh").dense(3, activation="softmax")
    path = tmp_path / "m.axon"
    ax.save(model, ax.build(model)[0](ax.template((1, 5), "f32")), path)
    out = tmp_path / "artifacts"
    result = CliRunner().invoke(
        cli,
        [
            *("export-training-artifacts", str(path), "--loss", LOSS, "--optimizer", "adamw"),
            *("--learning-rate", "0.05", "--decay", "0.01", "--template", "x=1,5", "-o", str(out)),
        ],
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    config = json.loads((out / "axonc_training.json").read_text())
    assert config["optimizer"] == "AdamW" and config["learning_rate"] == 0.05
    _, module, opt, inputs = _load(out)
    x, y = _batch(4, 12)
    losses = []
    for _ in range(30):
        loss, _ = module(*_feeds(inputs, x, y))
        opt.step()
        module.lazy_reset_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
