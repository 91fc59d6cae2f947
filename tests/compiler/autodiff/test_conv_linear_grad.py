"""Gradients of the convolution and linear layers, and of the primitives they need.

- every declared case of conv, conv_transpose, depthwise_conv, separable_conv2d/3d,
  bilinear, embedding and of the new primitives (conv_general_dilated, fit_to_like,
  conv_kernel_grad, conv_data_grad)
  against float64 central finite differences (these ops act the same in both modes,
  so inference suffices);
- the new primitives' forward rules against direct loop formulas, and their ONNX
  lowering at the newest opset;
- gradient graphs of a channels-last conv model and of an embedding, exported to ONNX
  and run on onnxruntime, against the reference interpreter;
- a second derivative through conv_general_dilated's own VJP.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.autodiff import gradients, tensor_of
from axonc.build import input_nodes
from axonc.dtypes import TensorType, is_float
from axonc.errors import ShapeError
from axonc.interpreter import run
from axonc.ir import Axon
from axonc.ops.conv import Geometry, conv_general, conv_kernel_grad, conv_vjp, fit_to_like
from axonc.registry import OPS
from axonc.shape_inference import declared_type, make_node
from axonc.to_onnx.export import max_opset, to_onnx
from axonc.tracing import apply
from tests import golden, gradcheck, onnx_run, op_cases

LAYERS = (
    "conv",
    "conv_transpose",
    "depthwise_conv",
    "separable_conv2d",
    "separable_conv3d",
    "bilinear",
    "embedding",
)
PRIMITIVES = ("conv_general_dilated", "fit_to_like", "conv_kernel_grad", "conv_data_grad")


def _randomize(tree: dict, rng: np.random.Generator) -> None:
    """Random values for every float leaf: zero biases would put relu inputs exactly on
    the kink, where finite differences see half of each one-sided slope."""
    for value in tree.values():
        if isinstance(value, dict):
            _randomize(value, rng)
        elif np.asarray(value).dtype.kind == "f":
            value[...] = rng.normal(size=np.shape(value))


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=f"{name}-{case.name}")
        for name in LAYERS + PRIMITIVES
        for case in OPS[name].cases
    ],
)
def test_declared_case_gradients_match_finite_differences(case, monkeypatch):
    model = op_cases.model(case)
    state = ax.build(model, compiler="reference")[0](op_cases.templates(case, 2))
    _randomize(state.data, np.random.default_rng(1))
    if not all(is_float(t.dtype) for t in case.inputs):
        # An integer input keeps the output f32 even with f64 parameters, so the
        # differences need a step far above f32 rounding (these outputs are linear in
        # every parameter and float input, so a large step is exact).
        monkeypatch.setattr(gradcheck, "EPS", 1e-2)
    feeds = op_cases.feeds(case, 2, seed=0)
    assert gradcheck.check_gradients(model, state, feeds, "inference", samples=5) > 0


def _conv_loops(x, w, strides, padding, lhs_dil, rhs_dil, groups):
    """Direct formula: y[n, o, p] = sum x[n, c, q] w[o, c', k] over q*lhs_dil + lo ==
    p*stride + k*rhs_dil (q an input index), with c in o's channel group."""
    n_batch, _, *in_sp = x.shape
    n_out, cg, *ksp = w.shape
    og = n_out // groups
    out_sp = []
    for i, size in enumerate(in_sp):
        padded = (size - 1) * lhs_dil[i] + 1 + sum(padding[i])
        out_sp.append((padded - (ksp[i] - 1) * rhs_dil[i] - 1) // strides[i] + 1)
    y = np.zeros((n_batch, n_out, *out_sp))
    for o in range(n_out):
        g = o // og
        for p in np.ndindex(*out_sp):
            for c in range(cg):
                for k in np.ndindex(*ksp):
                    pos = [
                        p[i] * strides[i] + k[i] * rhs_dil[i] - padding[i][0] for i in range(len(p))
                    ]
                    if any(v % d or not 0 <= v // d < s for v, d, s in zip(pos, lhs_dil, in_sp)):
                        continue
                    q = tuple(v // d for v, d in zip(pos, lhs_dil))
                    y[(slice(None), o, *p)] += x[(slice(None), g * cg + c, *q)] * w[(o, c, *k)]
    return y


def test_conv_general_dilated_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 6, 5))
    w = rng.normal(size=(6, 2, 2, 3))
    opts = {
        "strides": (2, 1),
        "padding": [(2, -1), (-1, 3)],
        "lhs_dilation": (1, 2),
        "rhs_dilation": (2, 1),
        "feature_group_count": 2,
    }
    y = conv_general(x, w, **opts)
    expected = _conv_loops(x, w, (2, 1), [(2, -1), (-1, 3)], (1, 2), (2, 1), 2)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@pytest.mark.parametrize("channels", ["first", "last"])
def test_conv_kernel_grad_is_the_derivative_of_the_direct_formula(channels):
    """The conv's output is linear in the kernel, so the kernel cotangent's entry (o, c, k)
    is sum(conv(x, unit kernel at (o, c, k)) * cot), each conv by the loop formula."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 6, 5))
    strides, padding, lhs, rhs = (2, 1), [(2, -1), (-1, 3)], (1, 2), (2, 1)
    kernel = (2, 3)
    cot = rng.normal(
        size=_conv_loops(x, np.zeros((6, 2, *kernel)), strides, padding, lhs, rhs, 2).shape
    )
    expected = np.zeros((6, 2, *kernel))
    for idx in np.ndindex(*expected.shape):
        unit = np.zeros(expected.shape)
        unit[idx] = 1.0
        expected[idx] = np.sum(_conv_loops(x, unit, strides, padding, lhs, rhs, 2) * cot)
    geo = Geometry(kernel, strides, tuple(padding), lhs, rhs)
    if channels == "last":
        x, cot = np.moveaxis(x, 1, -1), np.moveaxis(cot, 1, -1)
        expected = np.transpose(expected, (2, 3, 1, 0))
    got = conv_kernel_grad(x, cot, geo, 2, channels)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_conv_data_grad_is_the_derivative_of_the_direct_formula():
    """The conv's output is linear in the data, so the data cotangent's entry (n, c, q)
    is sum(conv(unit data at (n, c, q), w) * cot), each conv by the loop formula."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 2, 2, 3))
    strides, padding, rhs = (2, 3), [(1, 0), (2, 1)], (1, 2)
    shape = (2, 4, 7, 6)
    cot = rng.normal(size=_conv_loops(np.zeros(shape), w, strides, padding, (1, 1), rhs, 2).shape)
    expected = np.zeros(shape)
    for idx in np.ndindex(*shape):
        unit = np.zeros(shape)
        unit[idx] = 1.0
        expected[idx] = np.sum(_conv_loops(unit, w, strides, padding, (1, 1), rhs, 2) * cot)
    opts = {
        "input_spatial": (7, 6),
        "strides": strides,
        "padding": padding,
        "rhs_dilation": rhs,
        "feature_group_count": 2,
    }
    got = apply("conv_data_grad", [cot, w], opts)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_conv_kernel_grad_rejects_a_cotangent_of_the_wrong_size():
    x, g = ax.input("x", (None, 6, 5, 3)), ax.input("g", (None, 4, 4, 2))
    with pytest.raises(ShapeError, match="does not match"):
        make_node(
            "conv_kernel_grad",
            [x, g],
            {"kernel_size": 3, "padding": [(0, 0), (0, 0)], "channels": "last"},
        )


def test_conv_general_dilated_shape_and_dtype_rules():
    x, w = ax.input("x", (None, 4, None, 5)), ax.input("w", (6, 2, 3, 1))
    node = make_node(
        "conv_general_dilated", [x, w], {"padding": [(1, 1), (0, 0)], "feature_group_count": 2}
    )
    assert declared_type(node, node.output) == TensorType((None, 6, None, 5), "f32")
    with pytest.raises(ShapeError, match="per group"):
        make_node("conv_general_dilated", [x, w], {"padding": [(0, 0), (0, 0)]})
    with pytest.raises(ShapeError, match="1 pairs but the data has 2"):
        make_node("conv_general_dilated", [x, w], {"padding": [(0, 0)], "feature_group_count": 2})


def test_fit_to_like_crops_and_zero_pads_the_end():
    a = np.arange(12.0).reshape(1, 3, 4)
    out = fit_to_like(a, np.zeros((7, 5, 2)), (1, 2))
    expected = np.zeros((1, 5, 2))
    expected[0, :3, :2] = [[0, 1], [4, 5], [8, 9]]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=f"{name}-{case.name}")
        for name in PRIMITIVES
        for case in OPS[name].cases
    ],
)
def test_primitive_case_matches_reference_at_newest_opset(case):
    model = op_cases.model(case)
    init_fn, predict_fn = ax.build(model)
    state = init_fn(op_cases.templates(case, 1))
    onnx_model = to_onnx(model, state, opset=max_opset())
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3):
        feeds = op_cases.feeds(case, batch, seed=batch)
        prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        golden.assert_tree_close(prediction, predict_fn(state, feeds), rtol=1e-5, atol=1e-5)


def _gradient_graph(model: Axon, state, params, input_name: str | None) -> Axon:
    """{param path: grad, "input": input cotangent} of sum(output ** 2), as one graph."""
    out = tensor_of(model)
    loss = anp.sum(out * out)
    inputs = [input_nodes(model)[input_name].id] if input_name else []
    grads, cots = gradients(model, loss, state.data, params, mode="inference", inputs=inputs)
    leaves = {"/".join(p): g for p, g in grads.items()}
    if input_name:
        leaves["input"] = cots[inputs[0]]
    return ax.container({k: Axon(t.graph.output, t.graph.nodes) for k, t in leaves.items()})


def _check_onnx_matches_reference(graph, state, feeds_by_batch):
    onnx_model = to_onnx(graph, state, mode="inference")
    sess = onnx_run.session(onnx_model)
    for batch, feeds in feeds_by_batch.items():
        expected, _ = run(graph, feeds, state.data, "inference")
        prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        golden.assert_tree_close(prediction, expected, rtol=1e-4, atol=1e-5)
    return onnx_model


@pytest.mark.parametrize("length", [9, None])
def test_channels_last_conv_gradient_graph_lowers_to_onnx(length):
    x = ax.input("x", (None, length, 4))
    model = x.conv(
        4,
        kernel_size=3,
        strides=2,
        input_dilation=2,
        kernel_dilation=1,
        padding=[(1, -1)],
        feature_group_size=2,
        activation="tanh",
    ).conv(3, kernel_size=2, padding="same", name="head")
    state = ax.build(model)[0](ax.template((1, 9, 4)))
    _randomize(state.data, np.random.default_rng(0))
    params = [("conv_0", "kernel"), ("conv_0", "bias"), ("head", "kernel"), ("head", "bias")]
    graph = _gradient_graph(model, state, params, "x")
    rng = np.random.default_rng(1)
    sizes = {1: 9, 3: 9} if length else {1: 9, 3: 10}
    feeds = {b: {"x": rng.normal(size=(b, n, 4)).astype(np.float32)} for b, n in sizes.items()}
    onnx_model = _check_onnx_matches_reference(graph, state, feeds)
    assert "Conv" in {n.op_type for n in onnx_model.graph.node}


def test_embedding_gradient_graph_lowers_to_a_scatter_add():
    x = ax.input("ids", (None, 3), dtype="s32")
    model = x.embedding(5, 2)
    state = ax.build(model)[0](ax.template((1, 3), "s32"))
    graph = _gradient_graph(model, state, [("embedding_0", "kernel")], None)
    feeds = {b: {"ids": np.array([[0, 4, 4]] * b, np.int32)} for b in (1, 3)}
    onnx_model = _check_onnx_matches_reference(graph, state, feeds)
    assert "ScatterElements" in {n.op_type for n in onnx_model.graph.node}
    grad, _ = run(graph, feeds[3], state.data, "inference")
    table = np.asarray(state.data["embedding_0"]["kernel"], np.float64)
    expected = np.zeros((5, 2))
    for i in (0, 4, 4, 0, 4, 4, 0, 4, 4):
        expected[i] += 2 * table[i]
    np.testing.assert_allclose(grad["embedding_0/kernel"], expected, rtol=1e-6)


def test_conv_gradient_is_itself_differentiable():
    """conv_general_dilated's VJP is written with conv_general_dilated and shape
    primitives, so a loss of the gradients has gradients too (second order)."""
    geo = Geometry((2, 3), (2, 1), ((1, -1), (0, 2)), (1, 2), (2, 1))
    kernel = np.random.default_rng(5).normal(size=(4, 4, 2, 3)).astype(np.float32)

    def grad_norms(t):
        dx, dw = conv_vjp(t[0], kernel, t[1], geo, 1)
        return anp.sum(dx * dx, axis=(1, 2, 3)) + anp.sum(dw * dw)

    x, cot = ax.input("x", (None, 4, 6, 4)), ax.input("cot", (None, 4, 2, 7))
    model = ax.nx(ax.container((x, cot)), grad_norms)
    state = ax.build(model, compiler="reference")[0](
        {"x": ax.template((2, 4, 6, 4)), "cot": ax.template((2, 4, 2, 7))}
    )
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(2, 4, 6, 4)), "cot": rng.normal(size=(2, 4, 2, 7))}
    assert gradcheck.check_gradients(model, state, feeds, "inference", samples=10) == 20
