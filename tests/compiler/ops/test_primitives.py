"""Primitives ("np.*" ops): each one against numpy itself, dtype rules, None-dim shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import axonc  # noqa: F401  (registers the ops)
from axonc.dtypes import TensorType, jnp_promote
from axonc.errors import OptionError, ShapeError
from axonc.interpreter import run
from axonc.ops import special
from axonc.ops.primitives import BINARY, REDUCE, UNARY, encode_index
from axonc.registry import OPS, get_op
from axonc.shape_inference import make_node

RNG = np.random.default_rng(7)


def _run(op, arrays, opts=None):
    """Build a graph applying `op` to inputs holding `arrays` and run the interpreter."""
    inputs = [special.input(f"x{i}", a.shape, dtype=str(a.dtype)) for i, a in enumerate(arrays)]
    model = make_node(op, inputs, opts or {})
    out, _ = run(model, {f"x{i}": a for i, a in enumerate(arrays)}, {})
    return model, out


def _infer(op, types, opts=None):
    spec = get_op(op)
    return spec.infer(types, spec.normalize_options(opts or {}, op), None)


# numpy's own function per primitive, applied to the same f32 inputs.
NUMPY_UNARY = {name: getattr(np, name) for name in UNARY if name != "erf"}
NUMPY_UNARY["erf"] = scipy.special.erf
DOMAIN = {
    **dict.fromkeys(("log", "log1p", "log2", "log10", "sqrt"), (0.1, 4.0)),
    **dict.fromkeys(("arcsin", "arccos"), (-0.95, 0.95)),
}


def test_every_primitive_is_marked_and_prefixed():
    prims = [op for op in OPS.values() if op.primitive]
    assert {op.name for op in prims} >= {f"np.{n}" for n in (*UNARY, *BINARY, *REDUCE)}
    assert all(op.name.startswith("np.") and op.family == "primitives" for op in prims)
    assert {"np.getitem", "np.take", "np.where", "np.matmul", "np.reshape"} <= {
        op.name for op in prims
    }


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_matches_numpy_on_f32(name):
    lo, hi = DOMAIN.get(name, (-3.0, 3.0))
    x = RNG.uniform(lo, hi, size=(3, 5)).astype(np.float32)
    x[0, 0] = np.float32(1.5) if lo > 0 else np.float32(-0.5)  # a half for rint
    _, out = _run(f"np.{name}", [x])
    expected = NUMPY_UNARY[name](x)
    assert out.dtype == expected.dtype
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["exp", "sqrt", "tanh", "erf", "log1p"])
def test_float_unary_of_integers_gives_f32(name):
    x = np.array([[1, 2, 3]], np.int32)
    _, out = _run(f"np.{name}", [x])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, NUMPY_UNARY[name](x.astype(np.float64)), rtol=1e-6)
    assert _infer(f"np.{name}", [TensorType((None, 3), "s32")]) == TensorType((None, 3), "f32")


@pytest.mark.parametrize("name", ["negative", "abs", "sign", "square"])
def test_numeric_unary_keeps_integer_dtype(name):
    x = np.array([-2, 0, 3], np.int32)
    _, out = _run(f"np.{name}", [x])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, NUMPY_UNARY[name](x))


def test_rounding_is_identity_on_integers_and_numeric_ops_reject_bool():
    x = np.array([-2, 5], np.int32)
    for name in ("floor", "ceil", "rint"):
        _, out = _run(f"np.{name}", [x])
        assert out.dtype == np.int32 and out.tolist() == [-2, 5]
    with pytest.raises(ShapeError, match="numeric"):
        _infer("np.negative", [TensorType((2,), "pred")])


def test_logical_not_and_tests_give_pred():
    x = np.array([0.0, np.nan, np.inf, -2.0], np.float32)
    for name in ("logical_not", "isnan", "isinf", "isfinite"):
        _, out = _run(f"np.{name}", [x])
        assert out.dtype == np.bool_
        np.testing.assert_array_equal(out, NUMPY_UNARY[name](x))
    _, out = _run("np.isnan", [np.array([1, 2], np.int32)])
    assert out.tolist() == [False, False]


BINARY_DOMAIN = {"divide", "floor_divide", "remainder", "power"}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_matches_numpy_with_broadcasting(name):
    lo, hi = (0.5, 3.0) if name in BINARY_DOMAIN else (-3.0, 3.0)
    a = RNG.uniform(lo, hi, size=(2, 1, 4)).astype(np.float32)
    b = RNG.uniform(lo, hi, size=(3, 1)).astype(np.float32)
    b[0, 0] = a[0, 0, 0]  # an equal pair for the comparisons
    _, out = _run(f"np.{name}", [a, b])
    expected = getattr(np, name)(a, b)
    assert out.shape == (2, 3, 4)
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("a", "b", "out"),
    [
        ("f32", "s32", "f32"),
        ("s32", "f16", "f16"),
        ("f16", "f32", "f32"),
        ("s32", "s64", "s64"),
        ("u8", "s8", "s16"),
        ("u64", "s64", "s64"),
        ("pred", "s32", "s32"),
        ("pred", "f32", "f32"),
        ("f64", "f32", "f64"),
    ],
)
def test_promotion_keeps_floats_and_follows_numpy_for_integers(a, b, out):
    assert jnp_promote(a, b) == out
    assert _infer("np.add", [TensorType((2,), a), TensorType((2,), b)]).dtype == out


def test_integer_division_gives_f32_and_comparisons_give_pred():
    a, b = np.array([7, -7], np.int32), np.array([2, 2], np.int32)
    _, out = _run("np.divide", [a, b])
    assert out.dtype == np.float32 and out.tolist() == [3.5, -3.5]
    _, out = _run("np.floor_divide", [a, b])
    assert out.dtype == np.int32 and out.tolist() == [3, -4]
    _, out = _run("np.remainder", [a, b])
    assert out.tolist() == [1, 1]
    _, out = _run("np.less", [a, np.array([1.5, 1.5], np.float32)])
    assert out.dtype == np.bool_ and out.tolist() == [False, True]


def test_arithmetic_on_two_booleans_is_rejected_but_max_is_allowed():
    p = TensorType((3,), "pred")
    with pytest.raises(ShapeError, match="boolean"):
        _infer("np.add", [p, p])
    assert _infer("np.maximum", [p, p]).dtype == "pred"
    assert _infer("np.logical_and", [TensorType((3,)), p]).dtype == "pred"


@pytest.mark.parametrize(
    ("a", "b", "out"),
    [
        ((None, 1, 4), (3, 1), (None, 3, 4)),
        ((None, 3), (None, 1), (None, 3)),
        ((None, 3), (1, 3), (None, 3)),
        ((1,), (None,), (None,)),
        ((2, None), (2, 5), (2, 5)),
        ((), (None, 2), (None, 2)),
    ],
)
def test_binary_broadcasting_with_dynamic_dims(a, b, out):
    assert _infer("np.multiply", [TensorType(a), TensorType(b)]).shape == out


def test_incompatible_broadcast_is_a_shape_error():
    with pytest.raises(ShapeError, match="broadcast"):
        _infer("np.add", [TensorType((None, 3)), TensorType((4,))])


REDUCE_AXES = [None, 0, 1, -1, (0, 2)]


@pytest.mark.parametrize("name", ["sum", "prod", "mean", "max", "min", "any", "all"])
@pytest.mark.parametrize("axis", REDUCE_AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_match_numpy(name, axis, keepdims):
    x = RNG.uniform(0.5, 1.5, size=(2, 3, 4)).astype(np.float32)
    opts = {"axis": axis, "keepdims": keepdims}
    _, out = _run(f"np.{name}", [x], opts)
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    assert out.dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(out, expected, rtol=2e-6)
    assert _infer(f"np.{name}", [TensorType((2, 3, 4))], opts) == TensorType(
        out.shape, str(out.dtype)
    )


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_arg_reductions_match_numpy_and_give_s32(name, axis):
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    _, out = _run(f"np.{name}", [x], {"axis": axis})
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, getattr(np, name)(x, axis=axis))
    _, kept = _run(f"np.{name}", [x], {"axis": 1, "keepdims": True})
    assert kept.shape == (3, 1)


def test_reduction_dtypes_and_dynamic_dims():
    assert _infer("np.sum", [TensorType((None, 3), "pred")]) == TensorType((), "s32")
    assert _infer("np.mean", [TensorType((None, 3), "s32")], {"axis": 1}) == TensorType(
        (None,), "f32"
    )
    assert _infer("np.max", [TensorType((None, 3), "s32")], {"axis": 0, "keepdims": True}) == (
        TensorType((1, 3), "s32")
    )
    _, out = _run("np.sum", [np.array([True, True, False])])
    assert out.dtype == np.int32 and out == 2
    _, out = _run("np.mean", [np.array([1, 2], np.int32)])
    assert out.dtype == np.float32 and out == 1.5


def test_reduction_axis_errors():
    with pytest.raises(ShapeError, match="out of range"):
        _infer("np.sum", [TensorType((None, 3))], {"axis": 2})
    with pytest.raises(ShapeError, match="repeated"):
        _infer("np.sum", [TensorType((None, 3))], {"axis": (1, -1)})
    with pytest.raises(OptionError, match="axis"):
        get_op("np.argmax").normalize_options({"axis": (0, 1)}, "argmax")


def test_where_matches_numpy_and_promotes():
    c = np.array([[True], [False]])
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    y = np.float32(-1.5) * np.ones((1, 3), np.float32)
    _, out = _run("np.where", [c, x, y])
    np.testing.assert_array_equal(out, np.where(c, x, y).astype(np.float32))
    assert out.dtype == np.float32
    t = _infer("np.where", [TensorType((None, 1), "pred"), TensorType((3,), "s32"), TensorType(())])
    assert t == TensorType((None, 3), "f32")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((2, 3), (3, 4)),
        ((3,), (3, 4)),
        ((2, 3), (3,)),
        ((3,), (3,)),
        ((5, 2, 3), (3, 4)),
        ((1, 2, 3), (5, 3, 2)),
    ],
)
def test_matmul_matches_numpy(a, b):
    x = RNG.normal(size=a).astype(np.float32)
    y = RNG.normal(size=b).astype(np.float32)
    _, out = _run("np.matmul", [x, y])
    expected = np.matmul(x, y)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert _infer("np.matmul", [TensorType(a), TensorType(b)]).shape == expected.shape


def test_matmul_shapes_with_dynamic_dims_and_errors():
    t = _infer("np.matmul", [TensorType((None, 2, 3)), TensorType((3, None))])
    assert t.shape == (None, 2, None)
    with pytest.raises(ShapeError, match="contracted"):
        _infer("np.matmul", [TensorType((None, 3)), TensorType((4, 2))])
    with pytest.raises(ShapeError, match="rank"):
        _infer("np.matmul", [TensorType(()), TensorType((3,))])


def test_tensordot_matches_numpy():
    a = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    b = RNG.normal(size=(4, 3, 5)).astype(np.float32)
    _, out = _run("np.tensordot", [a, b], {"axes": ([1, 2], [1, 0])})
    np.testing.assert_allclose(out, np.tensordot(a, b, axes=([1, 2], [1, 0])), rtol=1e-5)
    with pytest.raises(ShapeError):
        _infer("np.tensordot", [TensorType((2, 3)), TensorType((4, 5))], {"axes": ([1], [0])})


@pytest.mark.parametrize(
    ("shape", "target", "expected"),
    [
        ((2, 3, 4), (6, 4), (6, 4)),
        ((2, 3, 4), (-1,), (24,)),
        ((2, 3, 4), (None, -1), (2, 12)),
        ((None, 3, 4), (-1, 12), (None, 12)),
        ((None, 3, 4), (None, -1), (None, 12)),
        ((None, 3, 4), (None, 2, 6), (None, 2, 6)),
        ((None, 3, 4), (None, 3, None, 1), (None, 3, 4, 1)),
        ((3, None), (-1, None), (3, None)),
        ((None, 3), (3, -1), (3, None)),
    ],
)
def test_reshape_infers_the_free_dim_and_keeps_none_dims(shape, target, expected):
    assert _infer("np.reshape", [TensorType(shape)], {"shape": target}).shape == expected
    concrete = tuple(5 if d is None else d for d in shape)
    x = np.arange(np.prod(concrete), dtype=np.float32).reshape(concrete)
    _, out = _run("np.reshape", [x], {"shape": target})
    kept = tuple(concrete[i] if d is None else d for i, d in enumerate(target))
    np.testing.assert_array_equal(out, x.reshape(kept))


def test_reshape_errors():
    with pytest.raises(ShapeError, match="cannot reshape"):
        _infer("np.reshape", [TensorType((2, 3))], {"shape": (4,)})
    with pytest.raises(ShapeError, match="cannot reshape"):
        _infer("np.reshape", [TensorType((None, 3))], {"shape": (None, 2)})
    with pytest.raises(ShapeError, match="at most one"):
        _infer("np.reshape", [TensorType((2, 3))], {"shape": (-1, -1)})
    with pytest.raises(ShapeError, match="no dim"):
        _infer("np.reshape", [TensorType((6,))], {"shape": (2, None)})


def test_transpose_expand_squeeze_match_numpy():
    x = RNG.normal(size=(2, 1, 3)).astype(np.float32)
    _, out = _run("np.transpose", [x])
    np.testing.assert_array_equal(out, np.transpose(x))
    _, out = _run("np.transpose", [x], {"axes": (1, 2, 0)})
    np.testing.assert_array_equal(out, np.transpose(x, (1, 2, 0)))
    _, out = _run("np.expand_dims", [x], {"axis": (0, -1)})
    np.testing.assert_array_equal(out, np.expand_dims(x, (0, -1)))
    _, out = _run("np.squeeze", [x])
    np.testing.assert_array_equal(out, np.squeeze(x))
    assert _infer("np.transpose", [TensorType((None, 2, 3))]).shape == (3, 2, None)
    assert _infer("np.expand_dims", [TensorType((None, 3))], {"axis": -1}).shape == (None, 3, 1)
    assert _infer("np.squeeze", [TensorType((None, 1, 3))], {"axis": 1}).shape == (None, 3)
    with pytest.raises(ShapeError, match="ambiguous"):
        _infer("np.squeeze", [TensorType((None, 1, 3))])
    with pytest.raises(ShapeError, match="cannot squeeze"):
        _infer("np.squeeze", [TensorType((None, 2))], {"axis": 1})
    with pytest.raises(ShapeError, match="permutation"):
        _infer("np.transpose", [TensorType((2, 3))], {"axes": (0, 0)})


def test_broadcast_to_keeps_dynamic_dims():
    x = RNG.normal(size=(4, 1, 3)).astype(np.float32)
    _, out = _run("np.broadcast_to", [x], {"shape": (2, 4, 5, 3)})
    np.testing.assert_array_equal(out, np.broadcast_to(x, (2, 4, 5, 3)))
    _, out = _run("np.broadcast_to", [x], {"shape": (None, 5, 3)})
    np.testing.assert_array_equal(out, np.broadcast_to(x, (4, 5, 3)))
    assert _infer("np.broadcast_to", [TensorType((None, 1))], {"shape": (None, 6)}).shape == (
        None,
        6,
    )
    with pytest.raises(ShapeError, match="cannot broadcast"):
        _infer("np.broadcast_to", [TensorType((None, 2))], {"shape": (None, 6)})


def test_concatenate_and_stack_match_numpy():
    a = RNG.normal(size=(2, 3)).astype(np.float32)
    b = np.arange(4, dtype=np.int32).reshape(2, 2)
    _, out = _run("np.concatenate", [a, b], {"axis": -1})
    np.testing.assert_array_equal(out, np.concatenate([a, b.astype(np.float32)], axis=-1))
    assert out.dtype == np.float32
    _, out = _run("np.stack", [a, a * 2], {"axis": 1})
    np.testing.assert_array_equal(out, np.stack([a, a * 2], axis=1))
    t = _infer("np.concatenate", [TensorType((None, 2)), TensorType((None, 3))], {"axis": 1})
    assert t.shape == (None, 5)
    t = _infer("np.concatenate", [TensorType((None, 2)), TensorType((3, 2))], {"axis": 0})
    assert t.shape == (None, 2)
    assert _infer("np.stack", [TensorType((None, 2))] * 3, {"axis": -1}).shape == (None, 2, 3)
    with pytest.raises(ShapeError, match="does not match"):
        _infer("np.concatenate", [TensorType((2, 2)), TensorType((3, 3))], {"axis": 1})


def test_take_gathers_along_an_axis():
    a = RNG.normal(size=(4, 3)).astype(np.float32)
    idx = np.array([[3, 0], [1, 1]], np.int32)
    for axis in (0, 1, None):
        use = idx % 3 if axis == 1 else idx
        _, out = _run("np.take", [a, use], {"axis": axis})
        np.testing.assert_array_equal(out, np.take(a, use, axis=axis))
    t = _infer("np.take", [TensorType((None, 5, 3)), TensorType((None,), "s32")], {"axis": 1})
    assert t.shape == (None, None, 3)
    with pytest.raises(ShapeError, match="integers"):
        _infer("np.take", [TensorType((4,)), TensorType((2,))], {"axis": 0})


def test_astype_and_full_like():
    x = np.array([-1.7, 2.5], np.float32)
    _, out = _run("np.astype", [x], {"dtype": "s32"})
    np.testing.assert_array_equal(out, x.astype(np.int32))
    _, out = _run("np.full_like", [x], {"fill_value": 3})
    np.testing.assert_array_equal(out, np.full_like(x, 3))
    assert out.dtype == np.float32
    assert _infer("np.full_like", [TensorType((None, 2))], {"fill_value": 1, "dtype": "s32"}) == (
        TensorType((None, 2), "s32")
    )
    with pytest.raises(OptionError, match="dtype"):
        get_op("np.astype").normalize_options({"dtype": "complex"}, "astype")


INDEXES = [
    0,
    -1,
    (slice(None), 1),
    (Ellipsis, None),
    (slice(None, None, -1),),
    (1, Ellipsis, slice(None, None, 2)),
    (slice(1, None), None, -2),
    (None, slice(0, 1), 2, slice(-3, None)),
]


@pytest.mark.parametrize("key", INDEXES, ids=[repr(k) for k in INDEXES])
def test_getitem_matches_numpy_basic_indexing(key):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    _, out = _run("np.getitem", [x], {"index": encode_index(key)})
    np.testing.assert_array_equal(out, x[key])
    t = _infer("np.getitem", [TensorType((2, 3, 4))], {"index": encode_index(key)})
    assert t.shape == x[key].shape


def test_getitem_with_dynamic_dims_and_errors():
    t = _infer("np.getitem", [TensorType((None, 5))], {"index": encode_index((slice(None), 1))})
    assert t.shape == (None,)
    t = _infer("np.getitem", [TensorType((None, 5))], {"index": encode_index(slice(1, 3))})
    assert t.shape == (None, 5)
    t = _infer("np.getitem", [TensorType((None, 5))], {"index": encode_index((0, slice(1, 3)))})
    assert t.shape == (2,)
    with pytest.raises(ShapeError, match="out of range"):
        _infer("np.getitem", [TensorType((None, 5))], {"index": encode_index((0, 5))})
    with pytest.raises(ShapeError, match="too many"):
        _infer("np.getitem", [TensorType((5,))], {"index": encode_index((0, 1))})
    with pytest.raises(OptionError, match="zero"):
        bad = {"index": [{"start": None, "stop": None, "step": 0}]}
        get_op("np.getitem").normalize_options(bad, "getitem")


def test_index_option_is_json_data():
    index = encode_index((1, slice(None, 2), None, Ellipsis))
    assert index == (1, {"start": None, "stop": 2, "step": None}, None, "...")
