"""ONNX lowering of the primitives (np.*), the function layers (nx, custom) and composites.

Beyond the opset-17 parity sweep (test_parity.py): every declared case of these
ops at the newest opset, the real-Axon golden cases built from them run through
onnxruntime, and the dtype corners where ONNX and numpy differ (integer floor
division and remainder, NaN in max/argmax, wrapping integer powers, signed zeros
of arctan2, pred and small-integer dtypes onnxruntime has no kernel for), each
checked against numpy written out in the test.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.dtypes import dtype_name, to_numpy_dtype
from axonc.errors import GraphError
from axonc.ops.primitives import encode_index
from axonc.registry import OPS
from axonc.shape_inference import make_node
from axonc.to_onnx.export import max_opset, to_onnx
from tests import golden, onnx_run, op_cases
from tests.test_conformance import CASES

FAMILIES = ("primitives", "custom", "composite")
OUR_OPS = {name for name, op in OPS.items() if op.family in FAMILIES}
NEWEST = max_opset()


def _as_lists(tree):
    if isinstance(tree, (tuple, list)):
        return [_as_lists(t) for t in tree]
    if isinstance(tree, dict):
        return {k: _as_lists(v) for k, v in tree.items()}
    return tree


def _onnx(build, *arrays, opset: int = 17, mode: str = "inference"):
    """Export `build(in0, in1, ...)` for these arrays (dim 0 dynamic); (onnx model, output)."""
    inputs = [
        ax.input(f"in{i}", shape=(None, *a.shape[1:]), dtype=dtype_name(a.dtype))
        for i, a in enumerate(arrays)
    ]
    model = build(*inputs)
    feeds = {f"in{i}": a for i, a in enumerate(arrays)}
    init_fn, _ = ax.build(model, mode=mode, compiler="reference")
    state = init_fn({k: ax.template(v.shape, dtype_name(v.dtype)) for k, v in feeds.items()})
    onnx_model = to_onnx(model, state, mode=mode, opset=opset)
    sess = onnx_run.session(onnx_model)
    prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, arrays[0].shape[0])
    return onnx_model, prediction


def _prim(op: str, **opts):
    return lambda *xs: make_node(op, list(xs), opts)


def _assert_same(actual, expected):
    """Equal values, dtype and shape; floats to rtol 1e-5 / atol 1e-6 with NaNs in place."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)


# ---------------------------------------------------------------------------
# every declared case at the newest opset, and the golden models built from these ops

CASES_NEWEST = [
    pytest.param(op, case, mode, id=f"{op.name}-{case.name}-{mode}")
    for op in OPS.values()
    if op.name in OUR_OPS
    for case in op.cases
    for mode in case.modes
]
# these cases leave an optional input unfed; export decides presence, see the template test
NEEDS_TEMPLATE = {"optional_input_missing", "missing_input_takes_default"}


@pytest.mark.parametrize(("op", "case", "mode"), CASES_NEWEST)
def test_case_matches_reference_at_newest_opset(op, case, mode):
    model = op_cases.model(case)
    init_fn, predict_fn = ax.build(model, mode=mode, compiler="reference")
    state = init_fn(op_cases.templates(case, 1))
    template = None
    if case.name in NEEDS_TEMPLATE:
        template = {
            **op_cases.templates(case, 1),
            "maybe" if op.name == "or_else" else "mask": None,
        }
    onnx_model = to_onnx(model, state, mode=mode, opset=NEWEST, template=template)
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3):
        feeds = op_cases.feeds(case, batch, seed=batch)
        expected = predict_fn(state, feeds)
        prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        expected = expected["prediction"] if mode == "train" else expected
        golden.assert_tree_close(prediction, _as_lists(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["nx_layer", "cond_true", "cond_false", "constant_only_output", "two_inputs_model"]
)
@pytest.mark.parametrize("opset", sorted({17, NEWEST}))
def test_golden_case_through_onnx_matches_axon(name, opset):
    case = golden.load(name)
    model = CASES[name]()
    inputs = golden.inputs(case)
    init_fn, _ = ax.build(model, mode=case["mode"], compiler="reference")
    templates = {k: ax.template(v.shape, v.dtype) for k, v in inputs.items()}
    state = init_fn(templates, golden.tree(case["params"]))
    onnx_model = to_onnx(model, state, mode=case["mode"], opset=opset)
    batch = next(iter(inputs.values())).shape[0]
    prediction, _ = onnx_run.run(
        onnx_model, onnx_run.session(onnx_model), inputs, state.data, batch
    )
    golden.assert_tree_close(
        _as_lists(prediction), golden.tree(case["outputs"]), rtol=1e-5, atol=1e-6
    )


def test_cond_is_a_where_on_the_lowered_predicate():
    case = golden.load("cond_true")
    model = CASES["cond_true"]()
    init_fn, _ = ax.build(model, compiler="reference")
    state = init_fn(ax.template((1, 3), "f32"))
    types = [n.op_type for n in to_onnx(model, state).graph.node]
    assert "If" not in types and "Where" in types
    assert case["mode"] == "inference"


def test_block_parameters_are_initializers_under_the_block_name():
    x = ax.input("x", shape=(None, 3))
    shared = ax.block(lambda h: h.dense(4))
    model = ax.container((shared(x), shared(x.tanh())))
    init_fn, _ = ax.build(model, compiler="reference")
    state = init_fn(ax.template((1, 3), "f32"))
    names = {i.name for i in to_onnx(model, state, opt_level=0).graph.initializer}
    assert {"block_0/dense_0/kernel", "block_0/dense_0/bias"} <= names
    assert not any(n.startswith("block_1") for n in names)


# ---------------------------------------------------------------------------
# optional inputs: presence is fixed when the graph is exported


def _optional_model():
    x = ax.input("x", shape=(None, 3))
    maybe = ax.input("maybe", shape=(None, 3), optional=True)
    return ax.or_else(maybe, x.relu())


@pytest.mark.parametrize("given", [True, False])
def test_or_else_and_optional_custom_inputs_follow_the_export_template(given):
    model = _optional_model()
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    maybe = np.array([[7.0, 8.0, 9.0]], np.float32)
    init_fn, _ = ax.build(model, compiler="reference")
    template = {
        "x": ax.template((1, 3), "f32"),
        "maybe": ax.template((1, 3), "f32") if given else None,
    }
    state = init_fn(template)
    onnx_model = to_onnx(model, state, template=template)
    feeds = {"x": x, "maybe": maybe} if given else {"x": x}
    assert {i.name for i in onnx_model.graph.input} == set(feeds)
    out, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), feeds, state.data, 1)
    _assert_same(out, maybe if given else np.maximum(x, 0))


def test_custom_layer_with_a_missing_optional_input_uses_that_body():
    x = ax.input("x", shape=(None, 3))
    mask = ax.input("mask", shape=(None, 3), optional=True)
    model = ax.layer(
        lambda t, m, w, **_: t * w if m is None else t * w * m,
        [x, ax.optional(mask), ax.param("w", (3,))],
    )
    init_fn, _ = ax.build(model, compiler="reference")
    w = np.array([1.0, -2.0, 3.0], np.float32)
    state = init_fn({"x": ax.template((2, 3), "f32"), "mask": None}, {"custom_0": {"w": w}})
    onnx_model = to_onnx(model, state, template={"x": ax.template((2, 3), "f32"), "mask": None})
    xs = np.arange(6, dtype=np.float32).reshape(2, 3)
    out, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), {"x": xs}, state.data, 2)
    _assert_same(out, xs * w)


def test_cond_with_a_branch_missing_in_only_one_side_is_refused():
    x = ax.input("x", shape=(None, 3))
    maybe = ax.input("maybe", shape=(None, 3), optional=True)
    on_true = ax.container((ax.optional(maybe), x))
    model = ax.cond(x, lambda t: t.sum() > 0, on_true, ax.container((x, x)))
    init_fn, _ = ax.build(model, compiler="reference")
    state = init_fn({"x": ax.template((1, 3), "f32"), "maybe": None})
    with pytest.raises(GraphError, match="only one branch"):
        to_onnx(model, state, template={"x": ax.template((1, 3), "f32"), "maybe": None})


# ---------------------------------------------------------------------------
# integer division and remainder: numpy's floor semantics, x // 0 == 0, MIN // -1 == MIN

INT_DTYPES = ["s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64"]


def _int_pairs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    info = np.iinfo(to_numpy_dtype(dtype))
    values = [0, 1, 2, 3, 7, info.max, info.max - 1]
    if info.min < 0:
        values += [-1, -2, -3, -7, info.min, info.min + 1]
    a, b = np.meshgrid(values, values, indexing="ij")
    np_dtype = to_numpy_dtype(dtype)
    return a.reshape(-1, 1).astype(np_dtype), b.reshape(-1, 1).astype(np_dtype)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("op", ["floor_divide", "remainder"])
def test_integer_floor_divide_and_remainder_match_numpy(op, dtype):
    a, b = _int_pairs(dtype)
    with np.errstate(all="ignore"):
        expected = getattr(np, op)(a, b)
    _, out = _onnx(_prim(f"np.{op}"), a, b)
    _assert_same(out, expected)


@pytest.mark.parametrize("op", ["floor_divide", "remainder"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_floor_divide_and_remainder_match_numpy(op, dtype):
    values = [1.0, 0.1, -0.1, 3.0, -3.0, 0.7, -0.7, 0.0, -0.0, 1e30, np.inf, -np.inf, np.nan, 5.5]
    a, b = np.meshgrid(values, values, indexing="ij")
    a, b = a.reshape(-1, 1).astype(dtype), b.reshape(-1, 1).astype(dtype)
    with np.errstate(all="ignore"):
        expected = getattr(np, op)(a, b)
    _, out = _onnx(_prim(f"np.{op}"), a, b)
    # exact, NaNs in place (the sign of a zero result is not compared: onnxruntime's
    # graph optimizer merges the constants +0.0 and -0.0)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", ["s8", "s32", "s64", "u8", "u64"])
def test_integer_power_wraps_like_numpy(dtype):
    np_dtype = to_numpy_dtype(dtype)
    base = np.array([[0], [1], [2], [3], [7], [10], [255]], np.int64).astype(np_dtype)
    exponent = np.array([[0, 1, 2, 5, 13, 40, 63]], np_dtype)
    _, out = _onnx(_prim("np.power"), base, np.repeat(exponent, len(base), axis=0))
    _assert_same(out, np.power(base, exponent))


def test_integer_true_division_rounds_once_to_f32():
    a = np.array([[2**31 - 1, 7, -5]], np.int32)
    b = np.array([[3, 3, 3]], np.int32)
    _, out = _onnx(_prim("np.divide"), a, b)
    np.testing.assert_array_equal(out, (a.astype(np.float64) / b).astype(np.float32))


# ---------------------------------------------------------------------------
# floats: NaN propagation, signed zeros, accuracy near 0


def test_arctan2_quadrants_signed_zeros_and_infinities():
    values = [0.0, -0.0, 1.0, -1.0, 2.5, -3.0, np.inf, -np.inf, np.nan]
    y, x = np.meshgrid(values, values, indexing="ij")
    y, x = y.reshape(-1, 1).astype(np.float32), x.reshape(-1, 1).astype(np.float32)
    _, out = _onnx(_prim("np.arctan2"), y, x)
    expected = np.arctan2(y, x)
    _assert_same(out, expected)
    nonzero = expected != 0
    np.testing.assert_array_equal(np.signbit(out)[nonzero], np.signbit(expected)[nonzero])


@pytest.mark.parametrize("op", ["expm1", "log1p"])
def test_expm1_and_log1p_keep_relative_accuracy_near_zero(op):
    x = np.array([[1e-10, -1e-8, 3e-6, 1e-3, 0.5, 0.0, -0.9, 20.0, np.inf]], np.float32)
    _, out = _onnx(_prim(f"np.{op}"), x)
    expected = getattr(np, op)(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_elementwise_max_min_propagate_nan(op):
    a = np.array([[np.nan, 1.0, -2.0, np.nan]], np.float32)
    b = np.array([[0.0, np.nan, -3.0, np.nan]], np.float32)
    _, out = _onnx(_prim(f"np.{op}"), a, b)
    _assert_same(out, getattr(np, op)(a, b))


@pytest.mark.parametrize("op", ["max", "min", "argmax", "argmin"])
def test_reductions_see_nan_like_numpy(op):
    x = np.array([[1.0, np.nan, 5.0, np.nan], [3.0, -1.0, 2.0, 0.0]], np.float32)
    _, out = _onnx(_prim(f"np.{op}", axis=1), x)
    expected = getattr(np, op)(x, axis=1)
    _assert_same(out, expected.astype(np.int32) if op.startswith("arg") else expected)


@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax_over_the_flattened_tensor(keepdims):
    x = np.array([[1.0, 9.0, 5.0], [9.0, 2.0, 0.0]], np.float32)
    _, out = _onnx(_prim("np.argmax", keepdims=keepdims), x)
    _assert_same(out, np.argmax(x, keepdims=keepdims).astype(np.int32))


def test_sign_of_nan_is_nan_and_isfinite_of_ints_is_true():
    x = np.array([[np.nan, -0.5, 0.0, 2.0]], np.float32)
    _, out = _onnx(_prim("np.sign"), x)
    _assert_same(out, np.sign(x))
    i = np.array([[1, -5, 0]], np.int32)
    _, out = _onnx(_prim("np.isfinite"), i)
    _assert_same(out, np.isfinite(i))


# ---------------------------------------------------------------------------
# dtypes onnxruntime has no kernel for: computed in a wider type, exact


@pytest.mark.parametrize("dtype", ["s8", "s16", "u16", "u32", "u64", "pred"])
@pytest.mark.parametrize("op", ["max", "min", "sum", "prod", "argmax", "any", "all"])
def test_reductions_on_narrow_and_unsigned_dtypes(op, dtype):
    np_dtype = to_numpy_dtype(dtype)
    if dtype == "pred":
        x = np.array([[True, False, True], [False, False, False]])
    else:
        info = np.iinfo(np_dtype)
        x = np.array([[info.max, 0, 3], [info.min, 5, info.max - 2]]).astype(np_dtype)
    if op in ("sum", "prod"):
        expected = getattr(np, op)(x, axis=0, dtype=np.int32 if dtype == "pred" else np_dtype)
    else:
        expected = getattr(np, op)(x, axis=0)
    if op == "argmax":
        expected = expected.astype(np.int32)
    # axis 0 is the dynamic one: reduce the batch
    _, out = _onnx(_prim(f"np.{op}", axis=0), x)
    _assert_same(out, expected)


@pytest.mark.parametrize("dtype", ["s8", "s16", "u16", "u64", "pred", "f32"])
def test_where_on_every_value_dtype(dtype):
    np_dtype = to_numpy_dtype(dtype)
    c = np.array([[1, 0, 2, 0]], np.int32)
    x = np.array([[1, 1, 0, 1]]).astype(np_dtype)
    y = np.array([[0, 1, 1, 0]]).astype(np_dtype)
    if dtype == "u64":
        x[0, 0] = np.iinfo(np.uint64).max
    _, out = _onnx(_prim("np.where"), c, x, y)
    _assert_same(out, np.where(c.astype(bool), x, y))


@pytest.mark.parametrize("dtype", ["s8", "u8", "u16", "s64", "pred"])
def test_matmul_and_tensordot_of_integers_and_booleans(dtype):
    np_dtype = to_numpy_dtype(dtype)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100 if dtype != "pred" else 2, size=(2, 3, 4)).astype(np_dtype)
    b = rng.integers(0, 100 if dtype != "pred" else 2, size=(2, 4, 5)).astype(np_dtype)
    with np.errstate(all="ignore"):
        _, out = _onnx(_prim("np.matmul"), a, b)
        _assert_same(out, np.matmul(a, b))
        _, out = _onnx(_prim("np.tensordot", axes=([2], [1])), a, b)
        _assert_same(out, np.tensordot(a, b, axes=([2], [1])))


def test_comparisons_and_logic_on_pred_and_mixed_dtypes():
    a = np.array([[True, False, True, False]])
    b = np.array([[True, True, False, False]])
    for op in ("less", "greater_equal", "not_equal", "logical_xor", "maximum", "minimum"):
        _, out = _onnx(_prim(f"np.{op}"), a, b)
        _assert_same(out, getattr(np, op)(a, b))
    f = np.array([[np.nan, 0.0, -0.0, 2.0]], np.float32)
    i = np.array([[0, 0, 1, 2]], np.int32)
    _, out = _onnx(_prim("np.logical_and"), f, i)
    _assert_same(out, np.logical_and(f, i))
    _, out = _onnx(_prim("np.less_equal"), i, f)
    _assert_same(out, np.less_equal(i.astype(np.float32), f))


def test_negative_of_unsigned_wraps_and_astype_to_pred_treats_nan_as_true():
    u = np.array([[0, 1, 200]], np.uint8)
    _, out = _onnx(_prim("np.negative"), u)
    _assert_same(out, np.negative(u))
    f = np.array([[np.nan, 0.0, -0.0, 0.25]], np.float32)
    _, out = _onnx(_prim("np.astype", dtype="pred"), f)
    _assert_same(out, f.astype(bool))
    _, out = _onnx(_prim("np.astype", dtype="s32"), np.array([[-1.7, 2.9, 0.5]], np.float32))
    _assert_same(out, np.array([[-1, 2, 0]], np.int32))


def test_mean_of_integers_and_sum_of_booleans():
    i = np.array([[2**31 - 1, 2**31 - 1, 1]], np.int32)
    _, out = _onnx(_prim("np.mean", axis=1), i)
    _assert_same(out, np.mean(i.astype(np.float64), axis=1).astype(np.float32))
    p = np.array([[True, True, False]])
    _, out = _onnx(_prim("np.sum"), p)
    _assert_same(out, np.sum(p, dtype=np.int32))


# ---------------------------------------------------------------------------
# indexing and shapes


@pytest.mark.parametrize(
    "key",
    [
        (slice(None), slice(None, None, -1)),
        (Ellipsis, -1),
        (slice(None), None, 2, slice(3, 0, -2)),
        (slice(None), slice(-2, None), None),
        (slice(None), slice(1, 100, 3), -4),
        (slice(None), slice(None, -10, -1)),
        (slice(None, None, -2), Ellipsis, None),
        (0,),
    ],
    ids=lambda k: repr(k).replace(" ", ""),
)
def test_getitem_matches_numpy_indexing(key):
    x = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    _, out = _onnx(lambda t: make_node("np.getitem", [t], {"index": encode_index(key)}), x)
    _assert_same(out, x[key])


def test_take_with_negative_and_flat_indices():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    idx = np.array([[0, -1], [2, 1]], np.int64)
    _, out = _onnx(_prim("np.take", axis=1), a, idx)
    _assert_same(out, np.take(a, idx, axis=1))
    _, out = _onnx(_prim("np.take"), a, np.array([[11, -12]], np.int32))
    _assert_same(out, np.take(a, np.array([[11, -12]])))


def test_reshape_with_kept_dims_and_a_zero_size_dim():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    _, out = _onnx(_prim("np.reshape", shape=(None, 4, -1)), x)
    _assert_same(out, x.reshape(2, 4, 3))
    empty = np.zeros((2, 0, 3), np.float32)
    _, out = _onnx(_prim("np.reshape", shape=(None, 3, 0)), empty)
    _assert_same(out, empty.reshape(2, 3, 0))


def test_broadcast_to_keeps_the_dynamic_batch_and_full_like_fills_pred():
    x = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    _, out = _onnx(_prim("np.broadcast_to", shape=(None, 4, 3)), x)
    _assert_same(out, np.broadcast_to(x, (2, 4, 3)))
    _, out = _onnx(_prim("np.full_like", fill_value=1.0, dtype="pred"), x)
    _assert_same(out, np.full(x.shape, True))
    _, out = _onnx(_prim("np.full_like", fill_value=2.7, dtype="s32"), x)
    _assert_same(out, np.full(x.shape, 2, np.int32))


def test_scalar_results_stay_rank_zero():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    model, out = _onnx(lambda t: ax.nx(t, lambda v: v.sum() * 2.0 + 1.0), x)
    _assert_same(out, np.float32(x.sum() * 2 + 1))
    assert len(model.graph.output[0].type.tensor_type.shape.dim) == 0


def test_stack_concatenate_and_squeeze_promote_like_jax():
    a = np.array([[1, 2, 3]], np.int32)
    b = np.array([[0.5, 1.5, 2.5]], np.float32)
    _, out = _onnx(_prim("np.stack", axis=1), a, b)
    _assert_same(out, np.stack([a.astype(np.float32), b], axis=1))
    _, out = _onnx(_prim("np.concatenate", axis=-1), a, b)
    _assert_same(out, np.concatenate([a.astype(np.float32), b], axis=-1))
    _, out = _onnx(_prim("np.squeeze", axis=(1,)), np.zeros((2, 1, 3), np.float32))
    _assert_same(out, np.zeros((2, 3), np.float32))


def test_every_op_of_these_families_has_a_lowering():
    from axonc.registry import Op

    assert all(type(OPS[name]).onnx is not Op.onnx for name in OUR_OPS)
