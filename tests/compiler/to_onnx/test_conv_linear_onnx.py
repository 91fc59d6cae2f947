"""ONNX lowering of the linear and convolution families beyond the default-opset sweep.

- every declared case of these ops at the newest supported opset (test_parity.py runs
  them at the default opset 17);
- a channels-last conv -> relu -> conv model (Transposes around each conv);
- the real-Axon golden cases of these ops, exported with the golden parameters and run
  on onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.registry import OPS
from axonc.to_onnx.export import DEFAULT_OPSET, max_opset, to_onnx
from tests import golden, onnx_run, op_cases
from tests.test_conformance import CASES

OPS_UNDER_TEST = (
    "bias",
    "dense",
    "bilinear",
    "embedding",
    "conv",
    "conv_transpose",
    "depthwise_conv",
    "separable_conv2d",
    "separable_conv3d",
)
GOLDEN_PREFIXES = (
    "bilinear",
    "dense",
    "embedding",
    "conv1d",
    "conv2d",
    "conv_transpose",
    "depthwise_conv",
)
GOLDEN_CASES = sorted(name for name in CASES if name.startswith(GOLDEN_PREFIXES))


def _close(actual, expected):
    golden.assert_tree_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=f"{name}-{case.name}")
        for name in OPS_UNDER_TEST
        for case in OPS[name].cases
    ],
)
def test_case_matches_reference_at_newest_opset(case):
    model = op_cases.model(case)
    init_fn, predict_fn = ax.build(model)
    state = init_fn(op_cases.templates(case, 1))
    onnx_model = to_onnx(model, state, opset=max_opset())
    assert onnx_model.opset_import[0].version == max_opset()
    sess = onnx_run.session(onnx_model)
    for batch in (1, 4):
        feeds = op_cases.feeds(case, batch, seed=batch)
        prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        _close(prediction, predict_fn(state, feeds))


def test_newest_opset_is_newer_than_the_default():
    """Otherwise the test above would only repeat the parity sweep."""
    assert max_opset() > DEFAULT_OPSET


@pytest.mark.parametrize("opset", [DEFAULT_OPSET, max_opset()])
def test_channels_last_conv_relu_conv_exports_and_runs(opset):
    x = ax.input("image", shape=(None, 9, 8, 3))
    model = x.conv(4, kernel_size=3, strides=2, padding="same", activation="relu").conv(
        2, kernel_size=(2, 3), kernel_dilation=(2, 1), padding=[(1, 0), (0, 2)]
    )
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 9, 8, 3), "f32"))
    onnx_model = to_onnx(model, state, opset=opset)
    op_types = [n.op_type for n in onnx_model.graph.node]
    assert op_types.count("Conv") == 2
    sess = onnx_run.session(onnx_model)
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        image = rng.normal(size=(batch, 9, 8, 3)).astype(np.float32)
        prediction, _ = onnx_run.run(onnx_model, sess, {"image": image}, state.data, batch)
        expected = predict_fn(state, {"image": image})
        assert prediction.shape == expected.shape == (batch, 4, 4, 2)
        _close(prediction, expected)


def test_golden_cases_cover_every_layer_kind_of_these_families():
    kinds = {name.split("_")[0] for name in GOLDEN_CASES}
    assert {"bilinear", "dense", "embedding", "conv1d", "conv2d", "conv", "depthwise"} <= kinds
    assert len(GOLDEN_CASES) >= 24


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_case_matches_axon_on_onnxruntime(name):
    case = golden.load(name)
    assert case["mode"] == "inference"
    model = CASES[name]()
    inputs = golden.inputs(case)
    init_fn, _ = ax.build(model)
    templates = {k: ax.template(v.shape, v.dtype) for k, v in inputs.items()}
    state = init_fn(templates, golden.tree(case["params"]))
    onnx_model = to_onnx(model, state)
    sess = onnx_run.session(onnx_model)
    batch = next(iter(inputs.values())).shape[0]
    prediction, _ = onnx_run.run(onnx_model, sess, inputs, state.data, batch)
    _close(prediction, golden.tree(case["outputs"]))


def test_embedding_exports_a_gather_on_the_table():
    x = ax.input("ids", shape=(None, 3), dtype="s64")
    model = x.embedding(5, 2)
    state = ax.build(model)[0](ax.template((1, 3), "s64"))
    nodes = to_onnx(model, state).graph.node
    gathers = [n for n in nodes if n.op_type == "Gather"]
    assert len(gathers) == 1
    assert gathers[0].input[0] == "embedding_0/kernel"
