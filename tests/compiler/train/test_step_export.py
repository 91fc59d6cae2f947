"""The exported train step is a standard ONNX model a plain onnxruntime session can drive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import axonc as ax
from axonc import optimizers
from axonc.ops.dropout import draw

ROOT = Path(__file__).resolve().parents[3]


def _mlp() -> ax.Axon:
    x = ax.input("x", shape=(None, 6))
    return (
        x.dense(8, use_bias=False).batch_norm().relu().dropout(rate=0.3, seed=5).dense(3).softmax()
    )


def _batches(n: int, batch: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [
        (
            rng.normal(size=(batch, 6)).astype(np.float32),
            np.eye(3, dtype=np.float32)[rng.integers(0, 3, batch)],
        )
        for _ in range(n)
    ]


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    step = ax.train.compile_step(_mlp(), "categorical_cross_entropy", optimizers.adam(1e-2))
    ts = step.init(ax.template((None, 6), "f32"))
    path = tmp_path_factory.mktemp("step") / "step.onnx"
    x, y = _batches(1)[0]
    step.export(path, ts, x, y)
    return step, ts, path


def test_the_exported_step_passes_the_onnx_checker(exported):
    _, _, path = exported
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def test_inputs_and_outputs_are_named_as_documented(exported):
    _, ts, path = exported
    model = onnx.load(str(path))
    inputs = {i.name for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    meta = _meta(model)
    params = {"dense_0/kernel", "batch_norm_0/gamma", "batch_norm_0/beta"}
    params |= {"dense_1/kernel", "dense_1/bias"}
    state = {"batch_norm_0/mean", "batch_norm_0/var"}
    slots = {f"__optimizer__/{s}/{p}" for s in ("mu", "nu") for p in params}
    fixed = {"x", "target", "dropout_0/noise", "__optimizer__/count", "__learning_rate_scale__"}
    assert inputs == fixed | params | state | slots
    assert set(ts.flatten()) >= inputs - {"x", "target", "dropout_0/noise"}
    assert json.loads(meta["axonc.noise_inputs"]) == {"dropout_0/noise": [None, 8]}
    structure = json.loads(meta["axonc.outputs"])["dict"]
    assert structure["loss"] == "output_0"
    assert structure["y_pred"] == "output_1"
    assert {o for o in outputs if o.startswith("state/")} == {f"state/{s}" for s in state}
    feedback = json.loads(meta["axonc.train_feedback"])
    # every parameter, optimizer and state input is fed by exactly one output
    assert sorted(feedback.values()) == sorted(params | state | slots | {"__optimizer__/count"})
    assert set(feedback) <= set(outputs)
    assert "output_0" not in feedback
    assert "output_1" not in feedback


def test_a_plain_onnxruntime_session_drives_the_step_like_step_does(exported):
    step, ts, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    feedback = json.loads(meta["axonc.train_feedback"])
    structure = json.loads(meta["axonc.outputs"])["dict"]
    input_names = {i.name for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]
    feeds = {k: v for k, v in ts.flatten().items() if k in input_names}
    key = ts.model_state.get(("dropout_0", "key"))
    for x, y in _batches(4):
        ts, expected = step(ts, x, y)
        noise, key = draw(key, (x.shape[0], 8))
        feeds.update(x=x, target=y, **{"dropout_0/noise": noise.astype(np.float32)})
        values = dict(zip(output_names, session.run(None, feeds)))
        np.testing.assert_allclose(values[structure["loss"]], expected["loss"], rtol=1e-6)
        np.testing.assert_allclose(values[structure["y_pred"]], expected["y_pred"], rtol=1e-6)
        feeds.update({name: values[out] for out, name in feedback.items()})
        want = ts.flatten()
        for name in feedback.values():
            np.testing.assert_allclose(feeds[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert int(feeds["__optimizer__/count"]) == 4


def test_load_flat_brings_device_trained_values_back(exported):
    step, ts, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    feedback = json.loads(meta["axonc.train_feedback"])
    names = {i.name for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]
    feeds = {k: v for k, v in ts.flatten().items() if k in names}
    x, y = _batches(1)[0]
    noise = np.full((5, 8), 0.5, np.float32)
    feeds.update(x=x, target=y, **{"dropout_0/noise": noise})
    values = dict(zip(output_names, session.run(None, feeds)))
    trained = ts.load_flat({name: values[out] for out, name in feedback.items()})
    np.testing.assert_array_equal(
        trained.model_state.get(("dense_1", "kernel")),
        values[feedback_output(feedback, "dense_1/kernel")],
    )
    assert int(trained.optimizer_state["count"]) == 1
    _, predict = ax.build(_mlp())
    assert predict(step.model_state(trained), x).shape == (5, 3)


def feedback_output(feedback: dict[str, str], name: str) -> str:
    return next(out for out, inp in feedback.items() if inp == name)


def test_a_tied_destination_is_computed_inside_the_exported_step(tmp_path):
    x_in = ax.input("x", shape=(None, 6))
    model = x_in.dense(3, name="enc").tanh().dense(6, name="dec")
    step = ax.train.compile_step(model, "mean_squared_error", optimizers.sgd(0.2))
    template = ax.template((None, 6), "f32")
    state = step.init(template).model_state
    ts = step.init(template, state.tie(("dec", "kernel"), ("enc", "kernel"), "transpose"))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    path = tmp_path / "tied.onnx"
    step.export(path, ts, x, x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    assert "dec/kernel" not in names
    assert "enc/kernel" in names
    feedback = json.loads(session.get_modelmeta().custom_metadata_map["axonc.train_feedback"])
    output_names = [o.name for o in session.get_outputs()]
    feeds = {k: v for k, v in ts.flatten().items() if k in names}
    for _ in range(3):
        ts, expected = step(ts, x, x)
        feeds.update(x=x, target=x)
        values = dict(zip(output_names, session.run(None, feeds)))
        feeds.update({name: values[out] for out, name in feedback.items()})
        np.testing.assert_allclose(values["output_0"], expected["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        feeds["enc/kernel"], ts.model_state.get(("enc", "kernel")), rtol=1e-6, atol=1e-7
    )


def test_a_frozen_state_is_not_in_the_feedback(tmp_path):
    step = ax.train.compile_step(_mlp(), "categorical_cross_entropy", optimizers.sgd(0.1))
    template = ax.template((None, 6), "f32")
    frozen = step.init(template).model_state.freeze(lambda p: p[0] == "batch_norm_0")
    ts = step.init(template, frozen)
    x, y = _batches(1)[0]
    model = step.export(tmp_path / "frozen.onnx", ts, x, y)
    feedback = json.loads(_meta(model)["axonc.train_feedback"])
    assert not any(name.startswith("batch_norm_0/") for name in feedback.values())
    assert "dense_1/kernel" in feedback.values()


def test_the_finetune_example_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "finetune_onnx.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy after fine-tuning" in result.stdout


def _io(model: onnx.ModelProto) -> list:
    def sig(v):
        return (v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])

    return [sig(v) for v in (*model.graph.input, *model.graph.output)]


def test_export_right_after_init_needs_no_example_batch(tmp_path, exported):
    step = ax.train.compile_step(_mlp(), "categorical_cross_entropy", optimizers.adam(1e-2))
    ts = step.init(ax.template((None, 6), "f32"))
    model = step.export(tmp_path / "step.onnx", ts)
    _, _, with_batch = exported
    # the same interface as an export given an example batch
    assert _io(model) == _io(onnx.load(str(with_batch)))
    onnx.checker.check_model(onnx.load(str(tmp_path / "step.onnx")), full_check=True)


def test_export_without_a_batch_before_init_says_what_to_do(tmp_path):
    step = ax.train.compile_step(_mlp(), "categorical_cross_entropy", optimizers.sgd(0.1))
    ts = ax.train.compile_step(_mlp(), "categorical_cross_entropy", optimizers.sgd(0.1)).init(
        ax.template((None, 6), "f32")
    )
    with pytest.raises(ax.errors.InputError, match=r"step\.init"):
        step.export(tmp_path / "step.onnx", ts)


def test_export_without_a_target_of_a_multi_output_model_asks_for_one(tmp_path):
    x = ax.input("x", shape=(None, 6))
    model = ax.container((x.dense(3), x.dense(2)))
    step = ax.train.compile_step(model, lambda y_true, y_pred: y_pred[0].sum(), optimizers.sgd(0.1))
    ts = step.init(ax.template((None, 6), "f32"))
    with pytest.raises(ax.errors.InputError, match="example target"):
        step.export(tmp_path / "step.onnx", ts)
