"""Tracing into primitives: operators, indexing, axonc.numpy, weak types, errors, eager mode."""

from __future__ import annotations

import numpy as np
import pytest

import axonc  # noqa: F401  (registers the ops)
import axonc.numpy as anp
from axonc.dtypes import TensorType
from axonc.errors import ShapeError, TraceError
from axonc.interpreter import run
from axonc.ops.primitives import BINARY, UNARY
from axonc.shape_inference import infer_types, output_types
from axonc.tracing import Tensor, flatten_types, trace

RNG = np.random.default_rng(3)


def _eval(fn, *arrays, **kwargs):
    """Trace fn on the arrays' types and run the recorded body on the arrays."""
    body = trace(fn, [TensorType(a.shape, str(a.dtype)) for a in arrays], **kwargs)
    out, _ = run(body, {}, {}, args=list(arrays))
    return body, out


def _ops(body):
    return sorted(n.op for n in body.nodes.values())


X = RNG.uniform(0.5, 2.0, size=(2, 3)).astype(np.float32)
Y = RNG.uniform(0.5, 2.0, size=(2, 3)).astype(np.float32)

OPERATORS = [
    ("add", lambda a, b: a + b),
    ("subtract", lambda a, b: a - b),
    ("multiply", lambda a, b: a * b),
    ("divide", lambda a, b: a / b),
    ("floor_divide", lambda a, b: a // b),
    ("remainder", lambda a, b: a % b),
    ("power", lambda a, b: a**b),
    ("less", lambda a, b: a < b),
    ("less_equal", lambda a, b: a <= b),
    ("greater", lambda a, b: a > b),
    ("greater_equal", lambda a, b: a >= b),
    ("equal", lambda a, b: a == b),
    ("not_equal", lambda a, b: a != b),
]


@pytest.mark.parametrize(("op", "fn"), OPERATORS, ids=[o for o, _ in OPERATORS])
def test_binary_operators_record_the_primitive_and_match_numpy(op, fn):
    y = Y.copy()
    y[0, 0] = X[0, 0]
    body, out = _eval(fn, X, y)
    assert f"np.{op}" in _ops(body)
    expected = fn(X, y)
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=2e-6)


def test_reflected_operators_with_scalars_and_arrays():
    arr = np.arange(3, dtype=np.float32)
    _, out = _eval(lambda t: 2 - t, X)
    np.testing.assert_allclose(out, 2 - X)
    _, out = _eval(lambda t: 1.0 / t, X)
    np.testing.assert_allclose(out, 1.0 / X, rtol=1e-6)
    _, out = _eval(lambda t: 2**t, X)
    np.testing.assert_allclose(out, 2**X, rtol=1e-6)
    _, out = _eval(lambda t: arr + t, X)  # ndarray on the left goes through __array_ufunc__
    np.testing.assert_allclose(out, arr + X)
    _, out = _eval(lambda t: arr < t, X)
    np.testing.assert_array_equal(out, arr < X)
    _, out = _eval(lambda t: np.float32(3) * t, X)
    np.testing.assert_allclose(out, 3 * X)


def test_unary_operators_and_matmul():
    _, out = _eval(lambda t: -t, X)
    np.testing.assert_array_equal(out, -X)
    _, out = _eval(lambda t: abs(-t), X)
    np.testing.assert_array_equal(out, X)
    body, out = _eval(lambda t: +t, X)
    assert _ops(body) == ["argument"]
    w = RNG.normal(size=(3, 4)).astype(np.float32)
    _, out = _eval(lambda t, u: t @ u, X, w)
    np.testing.assert_allclose(out, X @ w, rtol=1e-5)
    _, out = _eval(lambda u: X @ u, w)
    np.testing.assert_allclose(out, X @ w, rtol=1e-5)


def test_boolean_operators_on_masks():
    _, out = _eval(lambda t: (t > 1) & (t < 1.5) | ~(t > 0.7), X)
    np.testing.assert_array_equal(out, ((X > 1) & (X < 1.5)) | ~(X > 0.7))
    _, out = _eval(lambda t: (t > 1) ^ True, X)
    np.testing.assert_array_equal(out, (X > 1) ^ True)
    with pytest.raises(TraceError, match="boolean"):
        trace(lambda t: t & t, [TensorType((2,))])
    with pytest.raises(TraceError, match="boolean"):
        trace(lambda t: ~t, [TensorType((2,), "s32")])


def test_weak_python_scalars_take_the_tensor_dtype():
    def dtypes(fn, dtype):
        body = trace(fn, [TensorType((2,), dtype)])
        return output_types(body, infer_types(body, arg_types=[TensorType((2,), dtype)])).dtype

    assert dtypes(lambda t: t * 2.0, "f32") == "f32"
    assert dtypes(lambda t: t + 1.0, "f16") == "f16"
    assert dtypes(lambda t: t + 1, "s32") == "s32"
    assert dtypes(lambda t: t * 1.5, "s32") == "f32"  # JAX: int tensor * python float -> f32
    assert dtypes(lambda t: t + 1, "u8") == "u8"
    assert dtypes(lambda t: t + np.float64(1), "f32") == "f64"  # numpy scalars are strong
    assert dtypes(lambda t: t + np.ones(2), "f32") == "f64"  # so are numpy arrays
    assert dtypes(lambda t: anp.add(t, [1.0, 2.0]), "f32") == "f32"  # lists default to f32


def test_constants_mixed_in_are_constant_nodes():
    body = trace(lambda t: t * 2 + np.arange(3, dtype=np.float32), [TensorType((None, 3))])
    consts = [n for n in body.nodes.values() if n.op == "constant"]
    assert len(consts) == 2
    assert {str(c.options["value"].dtype) for c in consts} == {"float32"}


@pytest.mark.parametrize(
    "key",
    [
        0,
        -1,
        (slice(None), 0),
        (Ellipsis, None),
        (slice(None, None, -1), slice(1, None)),
        (None, 1, Ellipsis),
        (0, 2),
    ],
    ids=repr,
)
def test_indexing_matches_numpy(key):
    body, out = _eval(lambda t: t[key], X)
    np.testing.assert_array_equal(out, X[key])
    assert "np.getitem" in _ops(body)


def test_indexing_with_integer_arrays_gathers_rows():
    idx = np.array([1, 0, 1], np.int32)
    body, out = _eval(lambda t: t[[1, 0, 1]], X)
    np.testing.assert_array_equal(out, X[[1, 0, 1]])
    assert "np.take" in _ops(body)
    _, out = _eval(lambda t, i: t[i], X, idx)
    np.testing.assert_array_equal(out, X[idx])


def test_indexing_errors():
    with pytest.raises(TraceError, match="boolean-mask"):
        trace(lambda t: t[t > 1], [TensorType((2, 3))])
    with pytest.raises(TraceError, match=r"anp\.take"):
        trace(lambda t: t[0, [1, 2]], [TensorType((2, 3))])
    with pytest.raises(TraceError, match="immutable"):

        def assign(t):
            t[0] = 1
            return t

        trace(assign, [TensorType((2, 3))])
    with pytest.raises(ShapeError, match="out of range"):
        trace(lambda t: t[:, 5], [TensorType((None, 3))])


def test_tensor_attributes_come_from_the_declared_type():
    seen = {}

    def fn(t):
        seen.update(shape=t.shape, dtype=t.dtype, ndim=t.ndim, size=t.size, tshape=t.T.shape)
        seen["len"] = len(t[0])
        return t

    trace(fn, [TensorType((None, 3, 4), "f16")])
    assert seen == {
        "shape": (None, 3, 4),
        "dtype": np.float16,
        "ndim": 3,
        "size": None,
        "tshape": (4, 3, None),
        "len": 3,
    }
    with pytest.raises(TraceError, match="dynamic"):
        trace(lambda t: t[: len(t)], [TensorType((None, 3))])
    with pytest.raises(TraceError, match="len\\(\\) of a 0-d tensor"):
        trace(lambda t: len(t.sum()), [TensorType((2, 3))])


def test_tensor_methods_match_numpy():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    cases = [
        lambda t: t.T,
        lambda t: t.reshape(6, 4),
        lambda t: t.reshape((-1,)),
        lambda t: t.transpose(1, 0, 2),
        lambda t: t.sum(axis=1),
        lambda t: t.sum(axis=(0, 2), keepdims=True),
        lambda t: t.mean(-1),
        lambda t: t.max(axis=0),
        lambda t: t.min(),
        lambda t: t.prod(axis=2),
        lambda t: t.argmax(axis=-1),
        lambda t: t.argmin(),
        lambda t: t.astype(np.int32),
        lambda t: t.astype("float16"),
        lambda t: t.flatten(),
        lambda t: t[:, :1].squeeze(1),
        lambda t: t.clip(-0.5, 0.5),
        lambda t: (t > 0).any(axis=1),
        lambda t: (t > 0).all(),
    ]
    for fn in cases:
        _, out = _eval(fn, x)
        expected = fn(x)
        assert out.shape == np.shape(expected)
        if np.asarray(expected).dtype.kind == "f":
            np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(out, expected)


def test_anp_has_every_primitive_family_member():
    for name in (*UNARY, *BINARY):
        assert callable(getattr(anp, name)), name
    for name in ("sum", "mean", "max", "min", "prod", "argmax", "argmin", "concatenate"):
        assert callable(getattr(anp, name))


ANP_CASES = [
    ("sum", lambda m, t: m.sum(t, axis=1, keepdims=False)),
    ("mean", lambda m, t: m.mean(t, axis=(0, 1))),
    ("max", lambda m, t: m.max(t, axis=-1, keepdims=True)),
    ("min", lambda m, t: m.min(t)),
    ("prod", lambda m, t: m.prod(t, axis=0)),
    ("argmax", lambda m, t: m.argmax(t, axis=1)),
    ("argmin", lambda m, t: m.argmin(t)),
    ("concatenate", lambda m, t: m.concatenate([t, m.exp(t)], axis=-1)),
    ("stack", lambda m, t: m.stack([t, t * 2], axis=1)),
    ("greater", lambda m, t: m.greater(t, 0.1)),
    ("logical_and", lambda m, t: m.logical_and(m.less(t, 1), m.greater_equal(t, 0))),
    ("logical_or", lambda m, t: m.logical_or(m.less_equal(t, -1), m.equal(t, t))),
    ("logical_not", lambda m, t: m.logical_not(m.not_equal(t, 0))),
    ("exp", lambda m, t: m.exp(t)),
    ("log", lambda m, t: m.log(m.abs(t) + 1)),
    ("sqrt", lambda m, t: m.sqrt(m.square(t))),
    ("sin_cos_tanh", lambda m, t: m.sin(t) + m.cos(t) * m.tanh(t)),
    ("negative_sign", lambda m, t: m.negative(t) * m.sign(t)),
    ("floor_ceil", lambda m, t: m.floor(t * 3) + m.ceil(t * 3)),
    ("power", lambda m, t: m.power(m.abs(t), 1.5)),
    ("maximum_minimum", lambda m, t: m.maximum(t, 0) + m.minimum(t, 0.2)),
    ("clip", lambda m, t: m.clip(t, -0.3, 0.4)),
    ("clip_upper", lambda m, t: m.clip(t, None, 0.4)),
    ("where", lambda m, t: m.where(t > 0, t, 0.0)),
    ("matmul", lambda m, t: m.matmul(t, m.transpose(t))),
    ("dot", lambda m, t: m.dot(t, m.transpose(t))),
    ("reshape", lambda m, t: m.reshape(t, (3, 2))),
    ("transpose", lambda m, t: m.transpose(t, (1, 0))),
    ("expand_dims", lambda m, t: m.expand_dims(t, 1)),
    ("squeeze", lambda m, t: m.squeeze(m.expand_dims(t, 0))),
    ("broadcast_to", lambda m, t: m.broadcast_to(t[:1], (4, 3))),
    ("take", lambda m, t: m.take(t, [2, 0], axis=1)),
    ("take_flat", lambda m, t: m.take(t, [5, 0])),
    ("var_std", lambda m, t: m.var(t, axis=0) + m.std(t)),
    ("zeros_like", lambda m, t: m.zeros_like(t) + m.ones_like(t) + m.full_like(t, 2)),
]


@pytest.mark.parametrize(("name", "fn"), ANP_CASES, ids=[n for n, _ in ANP_CASES])
def test_anp_functions_match_numpy_traced_and_eager(name, fn):
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    expected = np.asarray(fn(np, x))
    body, traced = _eval(lambda t: fn(anp, t), x)
    assert all(
        n.op in ("argument", "constant") or n.op.startswith("np.") for n in body.nodes.values()
    )
    eager = fn(anp, x)
    for out in (traced, np.asarray(eager)):
        assert out.shape == expected.shape
        if expected.dtype.kind == "f":
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(out, expected)


def test_erf_matches_scipy():
    import scipy.special

    x = np.linspace(-3, 3, 13, dtype=np.float32)
    _, out = _eval(lambda t: anp.erf(t), x)
    np.testing.assert_allclose(out, scipy.special.erf(x), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize(("a", "b"), [((2, 3, 4), (5, 4, 2)), ((2, 3, 4), (4,)), ((3,), (3, 2))])
def test_dot_follows_numpy_for_every_rank(a, b):
    x = RNG.normal(size=a).astype(np.float32)
    y = RNG.normal(size=b).astype(np.float32)
    _, out = _eval(lambda s, t: anp.dot(s, t), x, y)
    np.testing.assert_allclose(out, np.dot(x, y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(anp.dot(x, y), np.dot(x, y), rtol=1e-5, atol=1e-6)


def test_tensordot_matches_numpy():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    y = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    for axes in (2, ([1], [0]), ([2, 1], [1, 0])):
        _, out = _eval(lambda s, t, a=axes: anp.tensordot(s, t, a), x, y)
        np.testing.assert_allclose(out, np.tensordot(x, y, axes), rtol=1e-5, atol=1e-6)


def test_eager_mode_runs_without_tensors():
    assert anp.sum(np.ones(3)) == 3.0
    assert float(anp.mean(np.array([1.0, 2.0]))) == 1.5
    np.testing.assert_allclose(anp.exp(np.zeros(2)), [1.0, 1.0])
    assert anp.add(1, 2).dtype == np.int32
    assert anp.add(1, 2.5).dtype == np.float32 and float(anp.add(1, 2.5)) == 3.5
    np.testing.assert_array_equal(anp.where([True, False], 1, 2), [1, 2])
    assert anp.zeros((2,)).dtype == np.float32 and anp.arange(3).dtype == np.int32
    with pytest.raises(ShapeError, match="broadcast"):
        anp.add(np.ones(2), np.ones(3))


def test_dynamic_batch_reshape_uses_none_as_the_free_dim():
    def fn(t):
        return t.reshape(t.shape[0], -1).sum(axis=1)

    body = trace(fn, [TensorType((None, 3, 4))])
    for batch in (1, 5):
        x = RNG.normal(size=(batch, 3, 4)).astype(np.float32)
        out, _ = run(body, {}, {}, args=[x])
        np.testing.assert_allclose(out, x.reshape(batch, -1).sum(1), rtol=1e-5)
    t = output_types(body, infer_types(body, arg_types=[TensorType((7, 3, 4))]))
    assert t == TensorType((7,))


def test_container_arguments_and_results():
    types = [(TensorType((None, 2)), {"b": TensorType((None, 3)), "a": TensorType((None, 2))})]

    def fn(pair):
        x, d = pair
        return {"sum": x + d["a"], "cat": anp.concatenate([x, d["b"]], axis=1)}

    body = trace(fn, types)
    args = flatten_types(types)
    assert [t.shape for t in args] == [(None, 2), (None, 3), (None, 2)]
    x, b, a = (RNG.normal(size=t.shape[1:]).reshape(1, -1).astype(np.float32) for t in args)
    out, _ = run(body, {}, {}, args=[x, b, a])
    np.testing.assert_allclose(out["sum"], x + a)
    np.testing.assert_allclose(out["cat"], np.concatenate([x, b], axis=1))


def test_the_traced_body_holds_only_reachable_nodes():
    def fn(t):
        _unused = t * 100
        return t + 1

    body = trace(fn, [TensorType((2,))])
    assert _ops(body) == ["argument", "constant", "np.add"]


def test_returning_a_non_tensor_is_a_trace_error():
    with pytest.raises(TraceError, match="must return a tensor"):
        trace(lambda t: 3.0, [TensorType((2,))])
    with pytest.raises(TraceError, match="must return a tensor"):
        trace(lambda t: (t, np.ones(2)), [TensorType((2,))])
    with pytest.raises(TraceError, match="empty"):
        trace(lambda t: (), [TensorType((2,))])


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: np.exp(t),
        lambda t: np.sum(t),
        lambda t: np.concatenate([t, t]),
        lambda t: np.asarray(t),
        lambda t: np.where(t > 0, t, 0),
    ],
    ids=["exp", "sum", "concatenate", "asarray", "where"],
)
def test_numpy_functions_on_tensors_say_to_use_axonc_numpy(fn):
    with pytest.raises(TraceError, match=r"axonc\.numpy"):
        trace(fn, [TensorType((2,))])


def test_python_control_flow_on_tensors_is_a_trace_error():
    def branchy(t):
        if t.sum() > 0:
            return t
        return -t

    with pytest.raises(TraceError, match=r"anp\.where"):
        trace(branchy, [TensorType((2,))])
    with pytest.raises(TraceError, match=r"ax\.cond"):
        trace(lambda t: t.max() and t, [TensorType((2,))])
    with pytest.raises(TraceError):
        trace(lambda t: t * float(t[0]), [TensorType((2,))])


def test_tensors_leaking_between_traces_are_rejected():
    leaked: list[Tensor] = []
    trace(lambda t: leaked.append(t) or t, [TensorType((2,))])
    with pytest.raises(TraceError, match="different traced"):
        trace(lambda t: t + leaked[0], [TensorType((2,))])
    with pytest.raises(TraceError, match="another trace"):
        trace(lambda t: leaked[0], [TensorType((2,))])


def test_shape_errors_inside_a_traced_function_name_it():
    def bad(t):
        return t + anp.ones((4,))

    with pytest.raises(ShapeError, match=r"'bad'.*broadcast"):
        trace(bad, [TensorType((None, 3))])


def test_unknown_argument_shapes_still_trace():
    body = trace(lambda t: anp.exp(t) * 2, [None])
    x = np.ones((2, 2), np.float32)
    out, _ = run(body, {}, {}, args=[x])
    np.testing.assert_allclose(out, np.exp(x) * 2, rtol=1e-6)
    assert [n.options["value"].dtype for n in body.nodes.values() if n.op == "constant"] == [
        np.int32
    ]
    with pytest.raises(TraceError, match="unknown"):
        trace(lambda t: t.reshape(t.shape[0], -1), [None])
