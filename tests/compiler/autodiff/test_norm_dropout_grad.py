"""Gradients of the normalization and dropout layers: finite differences and ONNX parity."""

from __future__ import annotations

import json

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.autodiff import gradients, tensor_of
from axonc.errors import StateError
from axonc.interpreter import run
from axonc.ir import Axon, assign_names
from axonc.ops.dropout import dropout_noise
from axonc.registry import OPS
from axonc.to_onnx.export import to_onnx
from tests import golden, gradcheck, onnx_run, op_cases

FAMILIES = ("normalization", "dropout")
# dropout_noise is the gradient graphs' view of a dropout layer's uniforms: it has no
# gradient (tested below) and its case's output is a container, which gradcheck's
# loss does not weight.
NO_GRADIENT = {"dropout_noise"}

CASES = [
    pytest.param(op, case, mode, id=f"{op.name}-{case.name}-{mode}")
    for op in OPS.values()
    if op.family in FAMILIES and op.name not in NO_GRADIENT
    for case in op.cases
    for mode in case.modes
]


def _randomize_running_stats(model: Axon, state, rng: np.random.Generator) -> None:
    """Give every running mean/var a non-trivial value (in place), so inference uses them."""
    data = state.data
    for name in assign_names(model).values():
        layer = data.get(name, {})
        if "mean" in layer and "var" in layer:
            layer["mean"][...] = rng.normal(size=layer["mean"].shape)
            layer["var"][...] = rng.uniform(0.5, 2.0, size=layer["var"].shape)


def test_every_op_of_both_families_is_covered():
    covered = {p.values[0].name for p in CASES}
    expected = {name for name, op in OPS.items() if op.family in FAMILIES} - NO_GRADIENT
    assert covered == expected
    assert {p.values[2] for p in CASES} == {"inference", "train"}


@pytest.mark.parametrize(("op", "case", "mode"), CASES)
def test_case_gradients_match_finite_differences(op, case, mode):
    model = op_cases.model(case)
    state = ax.build(model, mode=mode, compiler="reference")[0](op_cases.templates(case, 1))
    _randomize_running_stats(model, state, np.random.default_rng(7))
    feeds = op_cases.feeds(case, 3, seed=3)
    assert gradcheck.check_gradients(model, state, feeds, mode, samples=8) > 0


DROPOUTS = ["dropout", "spatial_dropout", "alpha_dropout", "feature_alpha_dropout"]


@pytest.mark.parametrize("kind", DROPOUTS)
def test_train_dropout_is_active_and_fixed_by_the_state(kind):
    # Finite differences are only meaningful if every evaluation sees the same mask:
    # the reference draws it from the key in the state, which gradcheck never changes.
    model = getattr(ax, kind)(ax.input("x", (None, 6, 4)), rate=0.5, seed=3)
    state = ax.build(model, mode="train", compiler="reference")[0](ax.template((1, 6, 4)))
    x = np.random.default_rng(0).normal(size=(3, 6, 4)).astype(np.float32)
    first, _ = run(model, {"x": x}, state.data, "train")
    second, _ = run(model, {"x": x}, state.data, "train")
    np.testing.assert_array_equal(first, second)
    other = {f"{kind}_0": {"key": np.array([0, 4], np.uint32)}}
    third, _ = run(model, {"x": x}, other, "train")
    assert not np.array_equal(first, third)
    assert not np.allclose(first, x)


def _input_gradient(model: Axon, state, x: np.ndarray, mode: str, weights=None) -> np.ndarray:
    """d sum(weights * model(x)) / dx through autodiff, run on the reference interpreter."""
    (x_id,) = [nid for nid, n in model.nodes.items() if n.op == "input"]
    out = tensor_of(model)
    loss = anp.sum(out if weights is None else out * weights)
    _, cots = gradients(model, loss, state.data, [], mode=mode, inputs=[x_id])
    g = cots[x_id].graph
    value, _ = run(Axon(g.output, g.nodes), {"x": x}, state.data, mode)
    return value


SELU_SATURATION = -1.6732632423543772 * 1.0507009873554805


@pytest.mark.parametrize(
    ("kind", "kept_slope"),
    [
        ("dropout", lambda rate: 1.0 / (1.0 - rate)),
        ("alpha_dropout", lambda rate: ((1.0 - rate) * SELU_SATURATION**2) ** -0.5),
    ],
)
def test_train_dropout_gradient_uses_the_forward_mask(kind, kept_slope):
    rate = 0.4
    model = getattr(ax, kind)(ax.input("x", (None, 50)), rate=rate, seed=21)
    state = ax.build(model, mode="train", compiler="reference")[0](ax.template((1, 50)))
    x = np.random.default_rng(2).normal(size=(4, 50)).astype(np.float32)
    # The dropped elements are those whose output does not move with x.
    out, _ = run(model, {"x": x}, state.data, "train")
    shifted, _ = run(model, {"x": x + 1.0}, state.data, "train")
    kept = out != shifted
    assert 0 < kept.sum() < kept.size
    dx = _input_gradient(model, state, x, "train")
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, np.where(kept, kept_slope(rate), 0.0), rtol=1e-6)


def test_inference_dropout_gradient_is_the_identity():
    model = ax.input("x", (None, 4, 3)).feature_alpha_dropout(rate=0.5, seed=1)
    state = ax.build(model, mode="inference", compiler="reference")[0](ax.template((1, 4, 3)))
    x = np.random.default_rng(3).normal(size=(2, 4, 3))
    w = np.random.default_rng(4).normal(size=(2, 4, 3))
    np.testing.assert_allclose(_input_gradient(model, state, x, "inference", w), w)


def test_dropout_noise_is_the_forward_layers_uniforms():
    rate = 0.3
    x_in = ax.input("x", (None, 5, 4))
    model = ax.container(
        (
            ax.spatial_dropout(x_in, rate=rate, seed=8, name="drop"),
            dropout_noise(x_in, ("drop",), spatial=True),
        )
    )
    state = ax.build(model, mode="train", compiler="reference")[0](ax.template((1, 5, 4)))
    x = np.random.default_rng(5).normal(size=(3, 5, 4)).astype(np.float32)
    (out, noise), _ = run(model, {"x": x}, state.data, "train")
    assert noise.shape == (3, 5, 1) and noise.dtype == np.float32
    assert ((noise >= 0) & (noise < 1)).all()
    expected = np.where(noise < np.float32(1 - rate), x / np.float32(1 - rate), 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_dropout_noise_passes_no_gradient_to_its_input():
    x_in = ax.input("x", (None, 3))
    model = dropout_noise(ax.dropout(x_in, seed=2, name="drop"), ("drop",))
    state = ax.build(model, mode="train", compiler="reference")[0](ax.template((1, 3)))
    (x_id,) = [nid for nid, n in model.nodes.items() if n.op == "input"]
    _, cots = gradients(
        model, anp.sum(tensor_of(model)), state.data, [], mode="train", inputs=[x_id]
    )
    assert cots[x_id] is None


def test_dropout_noise_without_a_train_state_names_the_layer():
    x_in = ax.input("x", (None, 3))
    model = dropout_noise(x_in, ("dropout_7",))
    with pytest.raises(StateError, match="dropout_7"):
        run(model, {"x": np.zeros((1, 3), np.float32)}, {}, "train")


NORMS = {
    "batch_norm": lambda h: h.batch_norm(),
    "batch_norm_channels_first": lambda h: h.batch_norm(channel_index=1),
    "instance_norm": lambda h: h.instance_norm(),
    "layer_norm": lambda h: h.layer_norm(),
    "group_norm": lambda h: h.group_norm(3),
    "rms_norm": lambda h: h.rms_norm(shift=0.5),
}


def _gradient_graph(model: Axon, state, mode: str) -> Axon:
    """Every parameter's gradient and the input's of sum(w * model(x)), as one graph."""
    w = np.random.default_rng(6).normal(size=(1, 4, 2)).astype(np.float32)
    loss = anp.sum(tensor_of(model) * w)
    (x_id,) = [nid for nid, n in model.nodes.items() if n.op == "input"]
    grads, cots = gradients(
        model, loss, state.data, sorted(state.parameters), mode=mode, inputs=[x_id]
    )
    targets = {"/".join(p): g.graph for p, g in grads.items()}
    targets["x"] = cots[x_id].graph
    return ax.container({k: Axon(g.output, g.nodes) for k, g in targets.items()})


def _check_onnx_matches_reference(graph: Axon, state, mode: str) -> dict:
    onnx_model = to_onnx(graph, state, mode=mode)
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3, 6):
        x = np.random.default_rng(batch).normal(size=(batch, 4, 3)).astype(np.float32)
        expected, _ = run(graph, {"x": x}, state.data, mode)
        got, _ = onnx_run.run(onnx_model, sess, {"x": x}, state.data, batch)
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)
    return {p.key: p.value for p in onnx_model.metadata_props}


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_gradient_graph_through_a_norm_matches_reference_on_onnxruntime(norm, mode):
    model = NORMS[norm](ax.input("x", (None, 4, 3)).dense(6)).dense(2)
    state = ax.build(model, mode=mode, compiler="reference")[0](ax.template((1, 4, 3)))
    _randomize_running_stats(model, state, np.random.default_rng(8))
    _check_onnx_matches_reference(_gradient_graph(model, state, mode), state, mode)


@pytest.mark.parametrize("kind", DROPOUTS)
def test_train_gradient_graph_through_dropout_matches_reference_on_onnxruntime(kind):
    x = ax.input("x", (None, 4, 3))
    model = getattr(x.dense(5).batch_norm(), kind)(rate=0.4, seed=13).dense(2)
    state = ax.build(model, mode="train", compiler="reference")[0](ax.template((1, 4, 3)))
    assert {("batch_norm_0", "gamma"), ("dense_1", "kernel")} <= state.parameters
    graph = _gradient_graph(model, state, "train")
    assert any(n.op == "dropout_noise" for n in graph.nodes.values())
    meta = _check_onnx_matches_reference(graph, state, "train")
    # Forward and backward share the layer's one noise input.
    assert list(json.loads(meta["axonc.noise_inputs"])) == [f"{kind}_0/noise"]


def test_train_batch_norm_gradients_match_axons_sgd_step():
    # Axon's trainer took one SGD step (lr 0.1) on mean squared error with the batch
    # norm in train mode: (params before - params after) / 0.1 is its gradient,
    # which flows through the batch statistics (dense_0's gradient passes the norm).
    data = golden.load("train_mlp_mse_sgd")
    x, y = (golden.tensor(data["inputs"][k]) for k in ("input", "y_true"))
    before = golden.tree(data["params"])
    after = golden.tree(data["outputs"]["model_state_after_step"][0])
    model = (
        ax.input("input", (None, 8))
        .dense(16, activation="relu")
        .batch_norm()
        .dense(4, activation="softmax")
    )
    loss = anp.mean(anp.square(tensor_of(model) - y))
    wrt = [
        ("dense_0", "kernel"),
        ("dense_0", "bias"),
        ("batch_norm_0", "gamma"),
        ("batch_norm_0", "beta"),
        ("dense_1", "kernel"),
    ]
    grads, _ = gradients(model, loss, before, wrt, mode="train")
    graph = ax.container(
        {"/".join(p): Axon(g.graph.output, g.graph.nodes) for p, g in grads.items()}
    )
    values, _ = run(graph, {"input": x}, before, "train")
    for layer, key in wrt:
        step = (before[layer][key].astype(np.float64) - after[layer][key]) / 0.1
        np.testing.assert_allclose(values[f"{layer}/{key}"], step, atol=2e-6, err_msg=layer + key)
