"""Gradient rules of the numpy primitives (np.*), checked against float64 finite differences.

Every declared case of every primitive with a float result goes through
tests/gradcheck.check_gradients on its declared inputs (op_cases.feeds: a
normal draw, or the case's float range for ops with a domain). The random draws
avoid the points where a primitive is not differentiable (abs/sign at 0, ties of
max/min/maximum/minimum, jumps of floor/rint/remainder): a continuous draw hits
them with probability zero, and the seeds are fixed. The conventions at those
points (ties share the cotangent equally, abs'(0) = 0, rounding has a zero
gradient) are checked against closed forms instead. Beyond the declared cases,
extra graphs cover the rules' branches (1-D matmul, dynamic reduced axes, strided
and reversed slices, scatter-add with repeated and negative indices, ...), and a
gradient graph lowers to ONNX and matches the reference on onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.autodiff import gradients, tensor_of
from axonc.dtypes import is_float
from axonc.errors import ShapeError
from axonc.interpreter import run
from axonc.ir import Axon, merge_nodes
from axonc.model_state import ModelState
from axonc.ops.primitives import encode_index
from axonc.registry import OPS, Op
from axonc.shape_inference import declared_type, make_node
from axonc.to_onnx.export import to_onnx
from axonc.tracing import Tensor
from tests import golden, gradcheck, onnx_run, op_cases

PRIMITIVES = {name: op for name, op in OPS.items() if op.family == "primitives"}


def _float_output(model: Axon) -> bool:
    t = declared_type(model, model.output)
    return is_float(t.dtype)


def _cases(with_float_output: bool) -> list:
    return [
        pytest.param(op, case, id=f"{op.name}-{case.name}")
        for op in PRIMITIVES.values()
        for case in op.cases
        if _float_output(op_cases.model(case)) == with_float_output
    ]


def _state() -> ModelState:
    return ModelState({})


def _check(model: Axon, feeds: dict[str, np.ndarray], **kwargs) -> int:
    return gradcheck.check_gradients(model, _state(), feeds, "train", samples=12, **kwargs)


def _input_cots(model: Axon, feeds: dict[str, np.ndarray], weights: np.ndarray | None = None):
    """The input cotangents of sum(output * weights) on the reference, by input name."""
    inputs = {n.options["name"]: n.id for n in model.nodes.values() if n.op == "input"}
    out = tensor_of(model)
    loss = anp.sum(out if weights is None else out * weights)
    _, cots = gradients(model, loss, {}, [], inputs=inputs.values())
    names = [name for name, nid in inputs.items() if cots[nid] is not None]
    graph = Axon(
        tuple(cots[inputs[n]].graph.output for n in names),
        merge_nodes(*(cots[inputs[n]].graph for n in names)),
    )
    values, _ = run(graph, feeds, {})
    return dict(zip(names, values))


def test_every_primitive_has_a_gradient_rule():
    missing = [name for name, op in PRIMITIVES.items() if type(op).vjp is Op.vjp]
    assert missing == []


# ---------------------------------------------------------------------------
# every declared case


# these cases' float result does not depend on any float input's values


@pytest.mark.parametrize(("op", "case"), _cases(with_float_output=True))
def test_declared_case_gradient_matches_finite_differences(op, case):
    model = op_cases.model(case)
    feeds = op_cases.feeds(case, batch=3, seed=7)
    if op.name == "np.prod":
        # a product of many normal draws is ~1e-10 (below the check's atol): use
        # magnitudes near 1 with random signs so every partial derivative is O(1)
        rng = np.random.default_rng(3)
        x = feeds["in0"]
        feeds["in0"] = (rng.uniform(0.8, 1.25, x.shape) * rng.choice([-1, 1], x.shape)).astype(
            x.dtype
        )
    # full_like's input has no cotangent: the checker then verifies the finite
    # differences are zero, so every case compares some elements
    assert _check(model, feeds) > 0


@pytest.mark.parametrize(("op", "case"), _cases(with_float_output=False))
def test_boolean_and_integer_results_give_no_cotangent(op, case):
    """Comparisons, logical ops, tests, arg-reductions and casts to integers: None."""
    model = op_cases.model(case)
    tensors = {nid: Tensor(Axon(nid, model.nodes), 0) for nid in model.nodes}
    node = model.nodes[model.output]
    output = tensors[model.output]
    cots = op.vjp(None, [tensors[i] for i in node.inputs], output, output, dict(node.options))
    assert cots == [None] * len(node.inputs)


def test_full_like_gives_its_input_no_cotangent():
    x = ax.input("x", (None, 3))
    model = make_node("np.full_like", [x], {"fill_value": 2.0})
    assert _input_cots(model, {"x": np.ones((2, 3))}) == {}


# ---------------------------------------------------------------------------
# conventions at non-differentiable points (closed forms)


def test_maximum_and_minimum_split_a_tie_equally():
    a, b = ax.input("a", (None, 3)), ax.input("b", (None, 3))
    av = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    bv = np.array([[1.0, 3.0, 0.0], [0.0, -2.0, 5.0]])
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    for name, a_wins in (("np.maximum", av > bv), ("np.minimum", av < bv)):
        cots = _input_cots(make_node(name, [a, b]), {"a": av, "b": bv}, w)
        share = np.where(av == bv, 0.5, np.where(a_wins, 1.0, 0.0))
        np.testing.assert_allclose(cots["a"], w * share)
        np.testing.assert_allclose(cots["b"], w * (1.0 - share))


def test_maximum_of_a_tensor_with_itself_has_gradient_one():
    """The two halves of a tie add back up: d maximum(x, x) / dx = 1 (finite differences)."""
    x = ax.input("x", (None, 4))
    model = make_node("np.maximum", [x, x])
    x_val = np.random.default_rng(0).normal(size=(3, 4))
    assert _check(model, {"x": x_val}) > 0
    np.testing.assert_allclose(_input_cots(model, {"x": x_val})["x"], np.ones((3, 4)))


def test_max_and_min_share_the_cotangent_among_tied_elements():
    x = ax.input("x", (None, 4))
    xv = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, 0.5, -1.0, -3.0]])
    w = np.array([2.0, 3.0, 4.0])
    for name, pick in (("np.max", np.max), ("np.min", np.min)):
        model = make_node(name, [x], {"axis": 1})
        cots = _input_cots(model, {"x": xv}, w)
        hits = xv == pick(xv, axis=1, keepdims=True)
        expected = hits * (w / hits.sum(axis=1))[:, None]
        np.testing.assert_allclose(cots["x"], expected)


def test_abs_has_zero_gradient_at_zero_and_rounding_has_none_anywhere():
    x = ax.input("x", (None, 3))
    xv = np.array([[-2.0, 0.0, 1.5]])
    np.testing.assert_array_equal(
        _input_cots(make_node("np.abs", [x]), {"x": xv})["x"], [[-1.0, 0.0, 1.0]]
    )
    for name in ("np.sign", "np.floor", "np.ceil", "np.rint", "np.floor_divide"):
        args = [x, x] if name == "np.floor_divide" else [x]
        cots = _input_cots(make_node(name, args), {"x": xv + 3.25})
        np.testing.assert_array_equal(cots["x"], np.zeros((1, 3)))


# ---------------------------------------------------------------------------
# extra graphs for the rules' branches (finite differences)


def _prim(name: str, *xs, **opts) -> Axon:
    return make_node(name, list(xs), opts)


def _int_const(values) -> Axon:
    return ax.constant(np.asarray(values, np.int32))


def _getitem(x: Axon, key) -> Axon:
    return _prim("np.getitem", x, index=encode_index(key))


EXTRA = {
    "matmul_vector_vector": (
        lambda a, b: _prim("np.matmul", a, b),
        [(4,), (4,)],
    ),
    "matmul_vector_batched": (
        lambda a, b: _prim("np.matmul", a, b),
        [(3,), (None, 3, 2)],
    ),
    "matmul_both_broadcast": (
        lambda a, b: _prim("np.matmul", a, b),
        [(None, 1, 2, 3), (4, 3, 5)],
    ),
    "tensordot_two_axes_crossed": (
        lambda a, b: _prim("np.tensordot", a, b, axes=([1, 3], [2, 0])),
        [(None, 2, 3, 4), (4, 5, 2)],
    ),
    "sum_over_dynamic_batch": (lambda x: _prim("np.sum", x, axis=(0, 2)), [(None, 3, 2)]),
    "mean_over_dynamic_batch": (lambda x: _prim("np.mean", x, axis=0), [(None, 3)]),
    "mean_no_axis_keep": (lambda x: _prim("np.mean", x, keepdims=True), [(None, 3)]),
    "max_over_dynamic_batch": (lambda x: _prim("np.max", x, axis=0), [(None, 3)]),
    "sum_of_no_axis": (lambda x: _prim("np.sum", x, axis=()), [(None, 3)]),
    "where_scalar_branch": (
        lambda c, x, y: _prim("np.where", _prim("np.greater", c, ax.constant(0.0)), x, y),
        [(None, 3), (None, 1), ()],
    ),
    "power_integer_exponent_negative_base": (
        lambda x: _prim("np.power", x, ax.constant(np.float32(3.0))),
        [(None, 3)],
    ),
    "power_both_operands": (
        lambda a, b: _prim("np.power", _prim("np.exp", a), b),
        [(None, 3), (3,)],
    ),
    "remainder_negative_divisor": (
        lambda a: _prim("np.remainder", a, ax.constant(np.float32(-0.7))),
        [(None, 3)],
    ),
    "arctan2_all_quadrants": (lambda a, b: _prim("np.arctan2", a, b), [(None, 4), (None, 4)]),
    "divide_broadcast_scalar": (lambda a, b: _prim("np.divide", a, b), [(None, 3), ()]),
    "transpose_reverse": (lambda x: _prim("np.transpose", x), [(None, 2, 3)]),
    "expand_dims_two": (lambda x: _prim("np.expand_dims", x, axis=(0, -1)), [(None, 3)]),
    "squeeze_all_static": (lambda x: _prim("np.squeeze", x), [(1, 3, 1)]),
    "reshape_dynamic_to_last": (lambda x: _prim("np.reshape", x, shape=(3, -1)), [(None, 3)]),
    # (a cast down to f32 rounds the float64 finite differences, so only upward here)
    "astype_to_f64": (lambda x: _prim("np.astype", x, dtype="f64"), [(None, 3)]),
    "concatenate_dynamic_middle": (
        lambda a, b, c: _prim("np.concatenate", a, b, c, axis=0),
        [(2, 3), (None, 3), (1, 3)],
    ),
    "concatenate_dynamic_first": (
        lambda a, b: _prim("np.concatenate", a, b, axis=0),
        [(None, 3), (2, 3)],
    ),
    "stack_first": (lambda a, b: _prim("np.stack", a, b, axis=0), [(None, 3), (None, 3)]),
    "take_flat_negative_repeated": (
        lambda a: _prim("np.take", a, _int_const([[-1, 0], [5, 5]])),
        [(2, 3)],
    ),
    "take_columns_negative_repeated": (
        lambda a: _prim("np.take", a, _int_const([2, -1, 0, 2]), axis=1),
        [(None, 3, 2)],
    ),
    "take_scalar_index": (lambda a: _prim("np.take", a, _int_const(1), axis=-1), [(None, 3)]),
    "getitem_step_two": (
        lambda x: _getitem(x, (slice(None), slice(1, None, 2))),
        [(None, 6)],
    ),
    "getitem_negative_step_static": (
        lambda x: _getitem(x, (slice(None), slice(4, 0, -2), 1)),
        [(None, 6, 3)],
    ),
    "getitem_reverse_dynamic": (lambda x: _getitem(x, slice(None, None, -1)), [(None, 3)]),
    "getitem_inner_dynamic": (lambda x: _getitem(x, (1, slice(1, -1))), [(None, None)]),
    "getitem_last_of_dynamic": (lambda x: _getitem(x, (-1, None, Ellipsis)), [(None, 2, 3)]),
    "getitem_int_static": (lambda x: _getitem(x, (Ellipsis, -2)), [(None, 4)]),
    "getitem_empty_slice": (
        lambda x: _prim(
            "np.concatenate",
            _getitem(x, (slice(None), slice(3, 1))),
            _getitem(x, (slice(None), slice(-10, None, -1))),  # clamps to an empty region
            _getitem(x, (slice(None), slice(0, 1))),
            axis=1,
        ),
        [(None, 4)],
    ),
    "take_grad_of_take_grad": (
        lambda u, like: _prim("np.take_grad", u, _int_const([0, 2, 0]), like, axis=1),
        [(None, 3), (None, 4)],
    ),
}


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_extra_graph_gradient_matches_finite_differences(name):
    build, shapes = EXTRA[name]
    inputs = [ax.input(f"in{i}", s) for i, s in enumerate(shapes)]
    model = build(*inputs)
    rng = np.random.default_rng(11)
    feeds = {
        f"in{i}": rng.normal(size=tuple(4 if d is None else d for d in s)).astype(np.float32)
        for i, s in enumerate(shapes)
    }
    assert _check(model, feeds) > 0


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_extra_gradient_graph_matches_the_reference_on_onnxruntime(name):
    build, shapes = EXTRA[name]
    model = build(*(ax.input(f"in{i}", s) for i, s in enumerate(shapes)))
    ids = {n.options["name"]: n.id for n in model.nodes.values() if n.op == "input"}
    out = tensor_of(model)
    _, cots = gradients(model, anp.sum(out * out), {}, [], inputs=ids.values())  # cot = 2 out
    graph = ax.container(
        {
            n: Axon(cots[i].graph.output, cots[i].graph.nodes)
            for n, i in ids.items()
            if cots[i] is not None
        }
    )
    onnx_model = to_onnx(graph, ModelState({}), mode="inference")
    sess = onnx_run.session(onnx_model)
    rng = np.random.default_rng(4)
    for batch in (3, 5):
        feeds = {
            f"in{i}": rng.normal(size=tuple(batch if d is None else d for d in s)).astype(
                np.float32
            )
            for i, s in enumerate(shapes)
        }
        expected, _ = run(graph, feeds, {})
        got, _ = onnx_run.run(onnx_model, sess, feeds, {}, batch)
        golden.assert_tree_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("zeros", [0, 1, 2])
def test_prod_gradient_with_zeros_is_the_product_of_the_others(zeros):
    """prod is linear in each element, so the product of the others is exact at zeros too."""
    x = ax.input("x", (None, 4))
    model = _prim("np.prod", x, axis=1)
    xv = np.random.default_rng(2).uniform(0.5, 2.0, size=(3, 4))
    xv[:, :zeros] = 0.0
    expected = np.array(
        [[np.prod(np.delete(row, j)) for j in range(4)] for row in xv]
    )  # explicit leave-one-out products
    np.testing.assert_allclose(_input_cots(model, {"x": xv})["x"], expected, rtol=1e-12)
    assert _check(model, {"x": xv}) > 0


@pytest.mark.parametrize("region", [slice(3, 1), slice(-10, None, -1), slice(5, None)])
def test_empty_slice_gives_zeros_shaped_like_the_input(region):
    x = ax.input("x", (None, 4))
    model = _getitem(x, (slice(None), region))
    cots = _input_cots(model, {"x": np.ones((2, 4))})
    np.testing.assert_array_equal(cots["x"], np.zeros((2, 4)))


def test_take_gradient_adds_repeated_indices():
    a = ax.input("a", (3, 2))
    model = _prim("np.take", a, _int_const([2, 0, 2, 2]), axis=0)
    w = np.arange(8.0).reshape(4, 2)
    cots = _input_cots(model, {"a": np.zeros((3, 2))}, w)
    np.testing.assert_array_equal(cots["a"], [w[1], [0.0, 0.0], w[0] + w[2] + w[3]])


def test_take_grad_forward_is_numpy_add_at():
    u, i, like = (
        ax.input("u", (None, 2)),
        ax.input("i", (2,), dtype="s32"),
        ax.input("l", (None, 4)),
    )
    model = _prim("np.take_grad", u, i, like, axis=1)
    uv = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    out, _ = run(model, {"u": uv, "i": np.array([3, -1], np.int32), "l": np.zeros((2, 4))}, {})
    np.testing.assert_array_equal(out, [[0, 0, 0, 3.0], [0, 0, 0, 7.0]])


def test_take_grad_rejects_bad_types():
    like = ax.input("like", (5, 3))
    with pytest.raises(ShapeError, match="indices must be integers"):
        _prim("np.take_grad", ax.input("u", (2, 3)), ax.input("i", (2,)), like, axis=0)
    with pytest.raises(ShapeError, match="updates must be floats"):
        _prim("np.take_grad", ax.input("u", (2, 3), dtype="s32"), _int_const([0, 1]), like)
    with pytest.raises(ShapeError, match="has rank 2"):
        _prim("np.take_grad", ax.input("u", (2,)), _int_const([0, 1]), like, axis=0)


# ---------------------------------------------------------------------------
# gradients whose shape cannot be known before run time are refused by name


@pytest.mark.parametrize(
    ("build", "shape", "message"),
    [
        (lambda x: _prim("np.reshape", x, shape=(-1, 4)), (None, None, 4), "reshape"),
        (lambda x: _getitem(x, (slice(None), slice(None, None, 2))), (2, None), "strided slice"),
        (lambda x: _prim("np.concatenate", x, x, axis=0), (None, 3), "concatenate"),
    ],
)
def test_gradients_needing_run_time_shapes_raise(build, shape, message):
    x = ax.input("x", shape)
    model = build(x)
    x_id = next(n.id for n in model.nodes.values() if n.op == "input")
    with pytest.raises(ShapeError, match=message):
        gradients(model, anp.sum(tensor_of(model)), {}, [], inputs=[x_id])


# ---------------------------------------------------------------------------
# ONNX: a gradient graph of several primitives lowers and matches the reference


def test_gradient_graph_lowers_to_onnx_and_matches_the_reference():
    x = ax.input("x", (None, 3, 4))
    idx = ax.input("idx", (None,), dtype="s32")
    h = ax.dense(x, 5)  # a parameter gradient too
    scores = _prim("np.tanh", _prim("np.matmul", h, _prim("np.transpose", h, axes=(0, 2, 1))))
    picked = _prim(
        "np.take", _getitem(x, (slice(None), slice(1, None), slice(None, None, 2))), idx, axis=1
    )
    pooled = _prim("np.max", _prim("np.maximum", scores, ax.constant(np.float32(0.1))), axis=-1)
    joined = _prim("np.concatenate", pooled, _prim("np.sum", picked, axis=-1), axis=1)
    products = _prim("np.prod", _prim("np.exp", _getitem(x, (Ellipsis, 0))), axis=1)
    model = _prim(
        "np.add",
        _prim("np.mean", joined, axis=1),
        _prim("np.multiply", products, ax.constant(np.float32(0.5))),
    )
    state = ax.build(model, compiler="reference")[0](
        {"x": ax.template((1, 3, 4)), "idx": ax.template((1,), "s32")}
    )
    loss = anp.sum(tensor_of(model))
    wrt = [("dense_0", "kernel"), ("dense_0", "bias")]
    x_id = next(n.id for n in model.nodes.values() if n.op == "input" and n.options["name"] == "x")
    grads, cots = gradients(model, loss, state.data, wrt, inputs=[x_id])
    graph = ax.container(
        {
            "kernel": Axon(grads[wrt[0]].graph.output, grads[wrt[0]].graph.nodes),
            "bias": Axon(grads[wrt[1]].graph.output, grads[wrt[1]].graph.nodes),
            "x": Axon(cots[x_id].graph.output, cots[x_id].graph.nodes),
        }
    )
    ops = {n.op for n in graph.nodes.values()}
    assert {"np.take_grad", "np.concatenate", "np.transpose"} <= ops
    onnx_model = to_onnx(graph, state, mode="inference")
    sess = onnx_run.session(onnx_model)
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        feeds = {
            "x": rng.normal(size=(batch, 3, 4)).astype(np.float32),
            "idx": rng.integers(-2, 2, size=(batch,)).astype(np.int32),
        }
        expected, _ = run(graph, feeds, state.data)
        got, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        golden.assert_tree_close(got, expected, rtol=1e-5, atol=1e-6)
