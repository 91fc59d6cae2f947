"""ONNX lowering of the normalization and dropout families.

Every declared case at the newest opset, the real-Axon golden cases of these
ops (and the small models built from them) exported with their golden
parameters and run on onnxruntime, the graph structure each rule promises,
and the dropout mask: the same float32 decisions in the reference and in ONNX.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import axonc as ax
import axonc.ops.dropout as dropout_ops
from axonc.errors import GraphError
from axonc.registry import OPS
from axonc.to_onnx.export import max_opset, to_onnx
from tests import golden, onnx_run, op_cases
from tests.test_conformance import CASES as GOLDEN_MODELS

NORM_OPS = ("batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm")
DROPOUT_OPS = ("dropout", "spatial_dropout", "alpha_dropout", "feature_alpha_dropout")
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _meta(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _op_types(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _expected_state(state: dict) -> dict:
    """The reference's train state without dropout keys, which the host runtime advances."""
    dropout_layers = {f"{name}_0" for name in DROPOUT_OPS}
    out = {}
    for layer, leaves in state.items():
        kept = {k: v for k, v in leaves.items() if not (layer in dropout_layers and k == "key")}
        if kept:
            out[layer] = kept
    return out


NEWEST = [
    pytest.param(OPS[name], case, mode, id=f"{name}-{case.name}-{mode}")
    for name in NORM_OPS + DROPOUT_OPS
    for case in OPS[name].cases
    for mode in case.modes
]


@pytest.mark.parametrize(("op", "case", "mode"), NEWEST)
def test_case_matches_reference_at_newest_opset(op, case, mode):
    model = op_cases.model(case)
    init_fn, predict_fn = ax.build(model, mode=mode, compiler="reference")
    state = init_fn(op_cases.templates(case, 1))
    onnx_model = to_onnx(model, state, mode=mode, opset=max_opset())
    sess = onnx_run.session(onnx_model)
    for batch in (1, 5):
        feeds = op_cases.feeds(case, batch, seed=10 + batch)
        expected = predict_fn(state, feeds)
        prediction, new_state = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        if mode == "train":
            golden.assert_tree_close(prediction, expected["prediction"], **TOL)
            golden.assert_tree_close(new_state, _expected_state(expected["state"]), **TOL)
        else:
            golden.assert_tree_close(prediction, expected, **TOL)
            assert new_state == {}


GOLDEN = sorted(
    name
    for name in GOLDEN_MODELS
    if name.startswith((*NORM_OPS, *DROPOUT_OPS, "mlp_no_dropout__", "cnn__"))
)


def test_golden_selection_covers_every_family_case():
    assert {n.split("_")[0] for n in GOLDEN} >= {"batch", "group", "instance", "layer", "rms"}
    assert {"alpha_dropout_inference", "feature_alpha_dropout_inference"} <= set(GOLDEN)
    assert {"mlp_no_dropout__train", "mlp_no_dropout__inference", "cnn__train"} <= set(GOLDEN)


@pytest.mark.parametrize("opset", [17, max_opset()])
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_case_through_onnx_matches_axon(name, opset):
    case = golden.load(name)
    model = GOLDEN_MODELS[name]()
    inputs = golden.inputs(case)
    mode = case["mode"]
    init_fn, _ = ax.build(model, mode=mode, compiler="reference")
    templates = {k: ax.template(v.shape, v.dtype) for k, v in inputs.items()}
    state = init_fn(templates, golden.tree(case["params"]))
    onnx_model = to_onnx(model, state, mode=mode, opset=opset)
    batch = next(iter(inputs.values())).shape[0]
    prediction, new_state = onnx_run.run(
        onnx_model, onnx_run.session(onnx_model), inputs, state.data, batch
    )
    golden.assert_tree_close(prediction, golden.tree(case["outputs"]), **TOL)
    if mode == "train":
        golden.assert_tree_close(new_state, golden.tree(case["state"]), **TOL)
    else:
        assert new_state == {}


def _export(layer, shape, mode, **kw):
    x = ax.input("x", shape=(None, *shape))
    model = layer(x)
    init_fn, predict_fn = ax.build(model, mode=mode, compiler="reference")
    state = init_fn(ax.template((2, *shape), "f32"))
    return model, state, predict_fn, to_onnx(model, state, mode=mode, **kw)


def test_batch_norm_running_stats_on_axis_1_use_batch_normalization():
    *_, channels_first = _export(lambda x: x.batch_norm(channel_index=1), (3, 4), "inference")
    *_, channels_last = _export(lambda x: x.batch_norm(), (4, 3), "inference")
    assert "BatchNormalization" in _op_types(channels_first)
    assert "BatchNormalization" not in _op_types(channels_last)


def test_layer_and_group_norm_are_decomposed():
    for layer in (lambda x: x.layer_norm(), lambda x: x.group_norm(2)):
        *_, m = _export(layer, (3, 4), "inference", opset=max_opset())
        ops = set(_op_types(m))
        assert not ops & {"LayerNormalization", "GroupNormalization"}
        assert "ReduceMean" in ops


def test_batch_norm_train_state_is_an_independent_momentum_update():
    _, state, _, m = _export(lambda x: x.batch_norm(momentum=0.25), (3, 2), "train")
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 3, 2)).astype(np.float32)
    _, new_state = onnx_run.run(m, onnx_run.session(m), {"x": x}, state.data, 4)
    flat = x.astype(np.float64).reshape(-1, 2)
    old = state.data["batch_norm_0"]
    np.testing.assert_allclose(
        new_state["batch_norm_0"]["mean"], 0.25 * old["mean"] + 0.75 * flat.mean(0), rtol=1e-5
    )
    np.testing.assert_allclose(
        new_state["batch_norm_0"]["var"], 0.25 * old["var"] + 0.75 * flat.var(0), rtol=1e-5
    )


def test_instance_norm_train_state_is_per_sample():
    _, state, _, m = _export(lambda x: x.instance_norm(channel_index=1), (3, 5), "train")
    outputs = {o.name: o for o in m.graph.output}
    dims = outputs["state/instance_norm_0/mean"].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3]
    x = np.random.default_rng(1).normal(size=(4, 3, 5)).astype(np.float32)
    _, new_state = onnx_run.run(m, onnx_run.session(m), {"x": x}, state.data, 4)
    assert new_state["instance_norm_0"]["var"].shape == (4, 3)
    expected = 0.1 * 1.0 + 0.9 * x.astype(np.float64).var(axis=2)
    np.testing.assert_allclose(new_state["instance_norm_0"]["var"], expected, rtol=1e-5)


def test_use_running_stats_in_train_mode_reports_no_state():
    *_, m = _export(lambda x: x.batch_norm(use_running_stats=True), (4,), "train")
    assert json.loads(_meta(m)["axonc.state_outputs"]) == {}
    assert "ReduceMean" not in _op_types(m)


@pytest.mark.parametrize("name", DROPOUT_OPS)
def test_dropout_inference_graph_has_no_noise(name):
    *_, m = _export(lambda x: getattr(x, name)(seed=1), (4, 3), "inference")
    assert json.loads(_meta(m)["axonc.noise_inputs"]) == {}
    assert [i.name for i in m.graph.input] == ["x"]


@pytest.mark.parametrize(
    ("name", "noise"),
    [
        ("dropout", [None, 4, 3]),
        ("alpha_dropout", [None, 4, 3]),
        ("spatial_dropout", [None, 4, 1]),
        ("feature_alpha_dropout", [None, 4, 1]),
    ],
)
def test_dropout_train_graph_takes_noise_of_the_mask_shape_and_outputs_no_key(name, noise):
    *_, m = _export(lambda x: getattr(x, name)(seed=1), (4, 3), "train")
    meta = _meta(m)
    assert json.loads(meta["axonc.noise_inputs"]) == {f"{name}_0/noise": noise}
    assert json.loads(meta["axonc.state_outputs"]) == {}
    assert not any(i.name.endswith("/key") for i in m.graph.input)


def test_dropout_mask_matches_float32_draws_bit_for_bit():
    _, state, _, m = _export(lambda x: x.dropout(rate=0.3, seed=5), (40,), "train")
    x = np.random.default_rng(2).uniform(1.0, 2.0, size=(50, 40)).astype(np.float32)
    prediction, _ = onnx_run.run(m, onnx_run.session(m), {"x": x}, state.data, 50)
    uniform, _ = dropout_ops.draw(state.data["dropout_0"]["key"], (50, 40))
    kept = uniform.astype(np.float32) < np.float32(0.7)
    np.testing.assert_array_equal(prediction != 0, kept)
    np.testing.assert_allclose(prediction[kept], x[kept] / 0.7, rtol=1e-6)


def test_uniform_rounding_to_the_threshold_drops_in_reference_and_onnx(monkeypatch):
    """A float64 uniform just below 1 - rate rounds to float32(1 - rate): dropped by both."""
    below = np.nextafter(0.8, 0.0)
    assert below < 0.8 and np.float32(below) == np.float32(0.8)
    uniform = np.array([[0.1, below, 0.9]])
    monkeypatch.setattr(dropout_ops, "draw", lambda key, shape: (uniform, np.zeros(2, np.uint32)))
    _, state, predict_fn, m = _export(lambda x: x.dropout(rate=0.2, seed=0), (3,), "train")
    x = np.ones((1, 3), np.float32)
    reference = predict_fn(state, {"x": x})["prediction"]
    sess = onnx_run.session(m)
    (onnx_out,) = sess.run(None, {"x": x, "dropout_0/noise": uniform.astype(np.float32)})
    np.testing.assert_array_equal(reference != 0, [[True, False, False]])
    np.testing.assert_array_equal(onnx_out != 0, [[True, False, False]])


def test_train_export_with_a_dynamic_non_batch_dim_is_refused_clearly():
    x = ax.input("x", shape=(None, None, 4))
    model = x.spatial_dropout(seed=3)
    state = ax.build(model, mode="train", compiler="reference")[0](ax.template((2, 5, 4), "f32"))
    with pytest.raises(GraphError, match="only dynamic dim is the batch"):
        to_onnx(model, state, mode="train")
    # with the template's static dims the export works
    to_onnx(model, state, mode="train", template=ax.template((2, 5, 4), "f32"))
