"""Gradients of the pooling, shape and combinator layers and of the window primitives.

Every declared case of these ops is checked against float64 central finite
differences (tests/gradcheck.py); closed forms pin the conventions (max pooling's
first-maximum tie rule, nearest resize's scatter-add, split's zero pieces, Nx's
dtype merge); the window primitives are checked against explicit loops and as
each other's transpose; np.max_pool_grad is checked against explicit loops, with ties
and overlapping windows, on the reference and on onnxruntime; and a gradient graph
through max_pool lowers to ONNX.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import axonc as ax
from axonc.autodiff import gradients, tensor_of
from axonc.interpreter import run
from axonc.ir import Axon, tree_map
from axonc.registry import OPS
from axonc.shape_inference import make_node
from axonc.to_onnx.export import to_onnx
from axonc.tracing import apply
from tests import gradcheck, onnx_run, op_cases

FAMILIES = ("pooling", "shape", "combinators")
WINDOW_PRIMITIVES = ("np.windows", "np.windows_transpose", "np.max_pool_grad")
CASES = [
    pytest.param(op, case, id=f"{op.name}-{case.name}")
    for op in OPS.values()
    if op.family in FAMILIES or op.name in WINDOW_PRIMITIVES
    for case in op.cases
]


def _unwrap_container(model: Axon) -> Axon:
    """A model whose output node is a `container` layer, with that container as its output
    tree instead (the same values; the gradient check weights each leaf)."""
    node = model.nodes[model.output] if isinstance(model.output, int) else None
    if node is None or node.op != "container":
        return model
    return Axon(tree_map(lambda i: node.inputs[i], node.options["structure"]), model.nodes)


def _state(model: Axon, case) -> ax.ModelState:
    return ax.build(model, compiler="reference")[0](op_cases.templates(case, 1))


def test_every_op_of_these_families_has_a_gradient_rule():
    from axonc.registry import Op

    ops = [op for op in OPS.values() if op.family in FAMILIES or op.name in WINDOW_PRIMITIVES]
    assert {op.name for op in ops} >= {"max_pool", "resize", "split", "np.windows"}
    assert [op.name for op in ops if type(op).vjp is Op.vjp] == []


@pytest.mark.parametrize(("op", "case"), CASES)
def test_declared_case_gradient_matches_finite_differences(op, case):
    model = _unwrap_container(op_cases.model(case))
    feeds = op_cases.feeds(case, 3, seed=11)
    checked = gradcheck.check_gradients(model, _state(model, case), feeds, "inference", samples=24)
    assert checked > 0 or any(v.size == 0 for v in feeds.values())


# ---------------------------------------------------------------------------
# the window primitives


def _windows_by_loops(x, window, strides, dilations, pads, fill):
    """Window (n, c, o..., t...) = padded x at o * stride + t * dilation, one index at a time."""
    n, c, *spatial = x.shape
    lo = [p[0] for p in pads]
    sizes = [s + p0 + p1 for s, (p0, p1) in zip(spatial, pads)]
    k_eff = [(k - 1) * d + 1 for k, d in zip(window, dilations)]
    outs = [(s - k) // st + 1 for s, k, st in zip(sizes, k_eff, strides)]
    out = np.empty((n, c, *outs, *window))
    for o in itertools.product(*(range(m) for m in outs)):
        for t in itertools.product(*(range(k) for k in window)):
            src = [oi * st + ti * d - l for oi, ti, st, d, l in zip(o, t, strides, dilations, lo)]
            inside = all(0 <= s < size for s, size in zip(src, spatial))
            out[(slice(None), slice(None), *o, *t)] = x[(..., *src)] if inside else fill
    return out


def _prim(name, inputs, opts):
    """Run a primitive eagerly on numpy arrays (its reference rule)."""
    return apply(name, inputs, opts)


@pytest.mark.parametrize(
    ("window", "strides", "dilations", "pads"),
    [
        ((3,), (2,), (1,), ((1, 1),)),
        ((2, 3), (1, 2), (2, 1), ((1, 0), (2, 1))),
        ((2, 2, 1), (2, 1, 1), (1, 1, 1), ((0, 1), (0, 0), (1, 1))),
    ],
)
def test_windows_match_explicit_loops_and_transpose_is_the_adjoint(
    window, strides, dilations, pads
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 6, 5)[: 2 + len(window)])
    opts = {"window": window, "strides": strides, "dilations": dilations, "pads": pads}
    got = _prim("np.windows", [x], {**opts, "pad_value": -np.inf})
    np.testing.assert_array_equal(
        got, _windows_by_loops(x, window, strides, dilations, pads, -np.inf)
    )
    # <windows(x), g> = <x, windows_transpose(g)> with zero padding: the two are adjoint
    zero = _prim("np.windows", [x], opts)
    g = rng.normal(size=zero.shape)
    back = _prim("np.windows_transpose", [g, x], opts)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(zero * g), np.sum(x * back), rtol=1e-12)


def test_windows_negative_pads_crop_before_windowing():
    x = np.arange(2 * 1 * 6, dtype=np.float64).reshape(2, 1, 6)
    got = _prim("np.windows", [x], {"window": 2, "pads": [(-1, -2)]})
    np.testing.assert_array_equal(
        got, _windows_by_loops(x[..., 1:4], (2,), (1,), (1,), ((0, 0),), 0)
    )
    back = _prim("np.windows_transpose", [np.ones_like(got), x], {"window": 2, "pads": [(-1, -2)]})
    np.testing.assert_array_equal(back[0, 0], [0, 1, 2, 1, 0, 0])


def _max_pool_grad_by_loops(x, g, window, strides, dilations, pads):
    """For each output position, scan its window's taps in row-major order, keep the first
    strictly larger in-bounds value (padding never wins), and add the cotangent there."""
    n, c, *spatial = x.shape
    out = np.zeros(x.shape)
    for b, ch in itertools.product(range(n), range(c)):
        for o in itertools.product(*(range(m) for m in g.shape[2:])):
            best, where = -np.inf, None
            for t in itertools.product(*(range(k) for k in window)):
                src = [
                    oi * st + ti * d - lo
                    for oi, ti, st, d, (lo, _) in zip(o, t, strides, dilations, pads)
                ]
                if all(0 <= s < size for s, size in zip(src, spatial)) and x[(b, ch, *src)] > best:
                    best, where = x[(b, ch, *src)], tuple(src)
            if where is not None:
                out[(b, ch, *where)] += g[(b, ch, *o)]
    return out


MAX_POOL_GRAD_GEOMETRIES = [
    # window, strides, dilations, pads
    ((2,), (2,), (1,), ((0, 0),)),
    ((2, 2), (2, 2), (1, 1), ((0, 0), (0, 0))),  # tiling windows, a tail of 1 column
    ((3,), (1,), (2,), ((2, 2),)),  # pads as large as the window
    ((3, 2), (1, 1), (1, 2), ((1, 1), (1, 0))),  # overlapping windows
    ((2, 3), (2, 1), (1, 1), ((-1, 1), (1, -1))),  # crops and pads
    ((2, 1, 2), (1, 1, 2), (1, 1, 1), ((0, 1), (0, 0), (1, 1))),
]


def _max_pool_grad_model(x_shape, g_shape, opts) -> Axon:
    """np.max_pool_grad on inputs "x" and "g" with a dynamic batch."""
    x, g = ax.input("x", (None, *x_shape[1:])), ax.input("g", (None, *g_shape[1:]))
    return make_node("np.max_pool_grad", [x, g], opts)


@pytest.mark.parametrize(("window", "strides", "dilations", "pads"), MAX_POOL_GRAD_GEOMETRIES)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("channels", ["first", "last"])
def test_max_pool_grad_matches_loops_and_onnxruntime(
    window, strides, dilations, pads, ties, channels
):
    """Reference and onnxruntime (MaxPool Indices + ScatterElements add, or for tiling
    windows the Slice/Where cascade) both send each cotangent to the first maximum, also
    with many ties (values drawn from {0, 1, 2}) and several batch items and channels
    (MaxPool's flat indices include their offset), in either channel layout."""
    rng = np.random.default_rng(3)
    shape = (3, 2, 6, 5, 4)[: 2 + len(window)]
    x = rng.integers(0, 3, size=shape) if ties else rng.normal(size=shape)
    x = x.astype(np.float32)
    opts = {"window": window, "strides": strides, "dilations": dilations, "pads": pads}
    outs = _prim("np.windows", [x], opts).shape[: 2 + len(window)]
    g = rng.normal(size=outs).astype(np.float32)
    expected = _max_pool_grad_by_loops(x, g, window, strides, dilations, pads)
    if channels == "last":
        x, g, expected = (np.moveaxis(a, 1, -1) for a in (x, g, expected))
        opts["channels"] = "last"
    got = _prim("np.max_pool_grad", [x, g], opts)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    model = _max_pool_grad_model(x.shape, g.shape, opts)
    onnx_model = to_onnx(model, {})
    on_ort, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), {"x": x, "g": g}, {}, 3)
    np.testing.assert_allclose(on_ort, expected, rtol=1e-5, atol=1e-6)


def test_max_pool_grad_ties_go_to_the_first_maximum():
    x = np.array([[[1.0, 1.0, 4.0, 4.0, 2.0, 2.0]]], np.float32)
    g = np.array([[[10.0, 20.0, 30.0]]], np.float32)
    opts = {"window": 2, "strides": 2}
    expected = [[[10.0, 0.0, 20.0, 0.0, 30.0, 0.0]]]
    np.testing.assert_array_equal(_prim("np.max_pool_grad", [x, g], opts), expected)
    onnx_model = to_onnx(_max_pool_grad_model(x.shape, g.shape, opts), {})
    got, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), {"x": x, "g": g}, {}, 1)
    np.testing.assert_array_equal(got, expected)


def test_max_pool_grad_overlapping_windows_add_up():
    """Stride 1 < window 3: the 5 sits in all three windows that cover it, so it gets the
    sum of their cotangents; the 3 wins only the last window."""
    x = np.array([[[0.0, 5.0, 1.0, 2.0, 3.0]]], np.float32)
    g = np.array([[[1.0, 10.0, 100.0]]], np.float32)
    opts = {"window": 3, "strides": 1}
    expected = [[[0.0, 11.0, 0.0, 0.0, 100.0]]]
    np.testing.assert_array_equal(_prim("np.max_pool_grad", [x, g], opts), expected)
    onnx_model = to_onnx(_max_pool_grad_model(x.shape, g.shape, opts), {})
    got, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), {"x": x, "g": g}, {}, 1)
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# closed forms


def _input_grad(model: Axon, x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """d sum(weights * model(x)) / dx, through autodiff on the reference interpreter
    (the model's output is the loss: its cotangent is ones)."""
    if weights is not None:
        model = ax.multiply(model, ax.constant(weights))
    (node,) = [n for n in model.nodes.values() if n.op == "input"]
    _, cots = gradients(model, tensor_of(model), {}, [], inputs=[node.id])
    (cot,) = cots.values()
    return run(Axon(cot.graph.output, cot.graph.nodes), {"x": x}, {})[0]


def test_max_pool_gives_a_tied_window_gradient_to_its_first_maximum():
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 2:, 2:, 0] = [[1.0, 3.0], [3.0, 2.0]]  # a tie in the last window too
    model = ax.input("x", (None, 4, 4, 1)).max_pool(kernel_size=2)
    grad = _input_grad(model, x)
    expected = np.zeros((4, 4))
    expected[0, 0] = expected[0, 2] = expected[2, 0] = expected[2, 3] = 1.0
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)


def test_overlapping_max_windows_add_up_at_a_shared_maximum():
    x = np.random.default_rng(2).normal(size=(1, 5, 1)).astype(np.float32)
    x[0, 2, 0] = 10.0
    model = ax.input("x", (None, 5, 1)).max_pool(kernel_size=3, strides=1, padding="same")
    grad = _input_grad(model, x)
    assert grad[0, 2, 0] == 3.0  # the maximum of the three windows that contain it
    assert grad.sum() == 5.0


def test_avg_pool_gradient_counts_padding_in_the_divisor():
    x = np.ones((1, 3, 1), np.float32)
    model = ax.input("x", (None, 3, 1)).avg_pool(kernel_size=3, strides=1, padding="same")
    # every input sits in 2 or 3 windows of size 3, padded zeros included in the divisor
    np.testing.assert_allclose(_input_grad(model, x)[0, :, 0], [2 / 3, 1.0, 2 / 3], rtol=1e-6)


def test_nearest_resize_gradient_scatter_adds_onto_the_sampled_inputs():
    x = np.random.default_rng(3).normal(size=(2, 3, 1)).astype(np.float32)
    w = np.random.default_rng(4).normal(size=(2, 7, 1)).astype(np.float32)
    model = ax.input("x", (None, 3, 1)).resize((7,))
    src = np.minimum(np.floor((np.arange(7) + 0.5) * 3 / 7).astype(int), 2)
    expected = np.zeros_like(x)
    np.add.at(expected, (slice(None), src), w)
    np.testing.assert_allclose(_input_grad(model, x, w), expected, rtol=1e-6)


def test_split_gradient_is_zero_for_unused_pieces_and_the_dropped_tail():
    x = np.random.default_rng(5).normal(size=(2, 7)).astype(np.float32)
    inp = ax.input("x", (None, 7))
    model = ax.split(inp, [2, 3, 1])[1]  # sizes add up to 6: the last column is dropped
    grad = _input_grad(model, x)
    np.testing.assert_array_equal(grad, np.tile([0, 0, 1, 1, 1, 0, 0], (2, 1)))


@pytest.mark.parametrize("layer", ["add", "subtract", "multiply"])
def test_element_wise_gradients_follow_the_nx_dtype_merge(layer):
    a = ax.input("a", (None, 3), dtype="s32")
    b = ax.input("b", (None, 1), dtype="f16")
    c = ax.input("c", (3,), dtype="f32")
    model = getattr(ax, layer)([a, b, c])
    feeds = {
        "a": np.array([[1, 2, 3], [4, 5, 6]], np.int32),
        "b": np.array([[0.5], [-1.5]], np.float16),
        "c": np.array([2.0, -1.0, 0.25], np.float32),
    }
    ids = {n.options["name"]: n.id for n in model.nodes.values() if n.op == "input"}
    _, cots = gradients(model, tensor_of(model), {}, [], inputs=list(ids.values()))
    assert cots[ids["a"]] is None  # integers get no cotangent
    graph = ax.container(
        {k: Axon(cots[ids[k]].graph.output, cots[ids[k]].graph.nodes) for k in "bc"}
    )
    got = run(graph, feeds, {})[0]
    assert got["b"].dtype == np.float16 and got["c"].dtype == np.float32
    av, bv, cv = (feeds[k].astype(np.float64) for k in "abc")
    expected = {
        "add": (np.full((2, 1), 3.0), np.full(3, 2.0)),
        "subtract": (np.full((2, 1), -3.0), np.full(3, -2.0)),
        "multiply": ((av * cv).sum(axis=1, keepdims=True), (av * bv).sum(axis=0)),
    }[layer]
    np.testing.assert_allclose(got["b"], expected[0], rtol=1e-3)
    np.testing.assert_allclose(got["c"], expected[1], rtol=1e-6)


# ---------------------------------------------------------------------------
# the gradient graph on onnxruntime


def test_channels_last_pooling_gradient_graph_lowers_to_onnx_and_matches_the_reference():
    x = ax.input("x", (None, 6, 6, 2))
    h = x.dense(4, activation="tanh").max_pool(kernel_size=3, strides=2, padding="same")
    model = ax.concatenate(h.flatten(), h.avg_pool(kernel_size=2).flatten()).dense(3)
    state = ax.build(model, compiler="reference")[0](ax.template((1, 6, 6, 2)))
    wrt = [("dense_0", "kernel"), ("dense_0", "bias"), ("dense_1", "kernel")]
    grads, _ = gradients(model, tensor_of(model), state.data, wrt, mode="inference")
    graph = ax.container(
        {"/".join(p): Axon(g.graph.output, g.graph.nodes) for p, g in grads.items()}
    )
    ops = {n.op for n in graph.nodes.values()}
    assert {"np.max_pool_grad", "np.windows_transpose"} <= ops  # max_pool, avg_pool
    onnx_model = to_onnx(graph, state.data)
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3):
        feeds = {"x": np.random.default_rng(batch).normal(size=(batch, 6, 6, 2)).astype(np.float32)}
        expected = run(graph, feeds, state.data)[0]
        got, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5, err_msg=key)
