"""dtypes: dtype names, shapes with dynamic dims, TensorType, broadcasting."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.dtypes import (
    DTYPES,
    TensorType,
    broadcast_shapes,
    dtype_name,
    float_or_f32,
    float_or_f32_np,
    is_float,
    is_int,
    jnp_promote,
    normalize_shape,
    nx_merge,
    nx_result_dtype,
    same_dim,
    to_numpy_dtype,
    type_of,
    with_f32_params,
    with_f32_params_np,
)
from axonc.errors import ShapeError


class TestDtypeName:
    @pytest.mark.parametrize(
        "given, expected",
        [
            ("f32", "f32"),
            ("float32", "f32"),
            (np.float32, "f32"),
            (np.dtype("float32"), "f32"),
            ("float64", "f64"),
            (np.float16, "f16"),
            ("int8", "s8"),
            (np.int32, "s32"),
            (np.dtype("int64"), "s64"),
            ("uint8", "u8"),
            (np.uint32, "u32"),
            ("bool", "pred"),
            (np.bool_, "pred"),
            ("pred", "pred"),
            ("s16", "s16"),
        ],
    )
    def test_normalises_numpy_and_nx_names(self, given, expected):
        assert dtype_name(given) == expected

    @pytest.mark.parametrize("bad", ["f31", "bfloat16", "complex64", np.complex128, "string"])
    def test_unknown_dtype_lists_the_valid_names(self, bad):
        with pytest.raises(ShapeError) as err:
            dtype_name(bad)
        msg = str(err.value)
        assert "unknown dtype" in msg
        for name in DTYPES:
            assert name in msg

    def test_none_is_not_a_dtype(self):
        # numpy reads np.dtype(None) as float64; a missing dtype must not silently become f64.
        with pytest.raises(ShapeError, match="unknown dtype None"):
            dtype_name(None)

    def test_to_numpy_dtype_round_trips_every_name(self):
        for name in DTYPES:
            assert dtype_name(to_numpy_dtype(name)) == name
        assert to_numpy_dtype("float32") == np.dtype(np.float32)

    def test_float_and_int_predicates(self):
        assert [d for d in DTYPES if is_float(d)] == ["f32", "f64", "f16"]
        assert sorted(d for d in DTYPES if is_int(d)) == sorted(
            ["s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64"]
        )
        assert not is_int("pred") and not is_float("pred")


class TestShapes:
    def test_an_int_is_a_rank_1_shape(self):
        assert normalize_shape(5) == (5,)

    def test_dims_become_python_ints_and_none_stays(self):
        shape = normalize_shape([np.int64(2), None, 3])
        assert shape == (2, None, 3)
        assert all(type(d) is int for d in shape if d is not None)

    @pytest.mark.parametrize("bad", [(2, -1), (2.0, 3), (True, 3), ("a",), 3.5])
    def test_bad_dims_are_a_shape_error_quoting_the_shape(self, bad):
        with pytest.raises(ShapeError) as err:
            normalize_shape(bad, "input shape")
        assert "input shape" in str(err.value)
        assert repr(bad) in str(err.value)

    def test_scalar_shape_is_empty_tuple(self):
        assert normalize_shape(()) == ()


class TestTensorType:
    def test_repr_shows_dtype_and_dynamic_dims(self):
        assert repr(TensorType((None, 4))) == "f32[?, 4]"
        assert repr(TensorType((2, None, 3), "int32")) == "s32[2, ?, 3]"
        assert repr(TensorType((), "f64")) == "f64[]"

    def test_normalises_shape_and_dtype(self):
        t = TensorType([1, np.int32(784)], np.float32)
        assert t.shape == (1, 784)
        assert t.dtype == "f32"
        assert t.rank == 2

    def test_is_a_hashable_value(self):
        assert TensorType((None, 3)) == TensorType((None, 3), "float32")
        assert TensorType((None, 3)) != TensorType((None, 3), "f64")
        assert len({TensorType((1,)), TensorType((1,), "f32")}) == 1
        with pytest.raises(AttributeError):
            TensorType((1,)).shape = (2,)  # type: ignore[misc]

    def test_with_shape_and_with_dtype_return_new_types(self):
        t = TensorType((None, 3), "f32")
        assert t.with_shape((2, 3)) == TensorType((2, 3), "f32")
        assert t.with_dtype("s64") == TensorType((None, 3), "s64")
        assert t == TensorType((None, 3))

    def test_bad_dtype_or_shape_raise(self):
        with pytest.raises(ShapeError):
            TensorType((1,), "float128x")
        with pytest.raises(ShapeError):
            TensorType((-1,))


class TestTemplate:
    def test_template_is_a_tensor_type(self):
        assert ax.template((1, 784), "f32") == TensorType((1, 784), "f32")
        assert ax.template((None, 3)).dtype == "f32"
        assert ax.template(4, "s64") == TensorType((4,), "s64")

    def test_bad_template_shape_names_the_template(self):
        with pytest.raises(ShapeError, match="template shape"):
            ax.template((1, -3))

    def test_type_of_an_array(self):
        assert type_of(np.zeros((2, 3), np.int16)) == TensorType((2, 3), "s16")
        assert type_of(np.float32(1.0)) == TensorType((), "f32")
        assert type_of([[True, False]]) == TensorType((1, 2), "pred")


class TestBroadcast:
    @pytest.mark.parametrize(
        "shapes, expected",
        [
            (((2, 3), (2, 3)), (2, 3)),
            (((2, 1), (1, 3)), (2, 3)),
            (((4, 3), (3,)), (4, 3)),
            (((None, 4), (1, 4)), (None, 4)),
            (((None, 1), (3,)), (None, 3)),
            (((None, 4), (None, 4)), (None, 4)),
            (((None,), (1,)), (None,)),
            # A known size wins over a dynamic dim: the dynamic one must be 1 or equal.
            (((None,), (5,)), (5,)),
            (((), (2, 2)), (2, 2)),
            (((1, 1), (1,)), (1, 1)),
            ((), ()),
        ],
    )
    def test_matches_numpy_rules_with_dynamic_dims(self, shapes, expected):
        assert broadcast_shapes(*shapes) == expected

    def test_agrees_with_numpy_on_static_shapes(self):
        cases = [((5, 1, 4), (3, 1)), ((1,), (7, 2, 1)), ((6, 1, 1), (1, 2, 3))]
        for a, b in cases:
            assert broadcast_shapes(a, b) == np.broadcast_shapes(a, b)

    def test_incompatible_shapes_name_both(self):
        with pytest.raises(ShapeError) as err:
            broadcast_shapes((2, 3), (4, 3))
        assert "(2, 3)" in str(err.value) and "(4, 3)" in str(err.value)
        with pytest.raises(ShapeError):
            broadcast_shapes((None, 3), (None, 4))

    def test_same_dim(self):
        assert same_dim(None, 3) and same_dim(3, None) and same_dim(None, None)
        assert same_dim(3, 3)
        assert not same_dim(3, 4)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [  # examples from Nx.Type.merge's documentation
        ("s8", "s16", "s16"),
        ("u8", "u32", "u32"),
        ("s32", "u8", "s32"),
        ("s8", "u32", "s64"),
        ("s64", "u8", "s64"),
        ("u8", "f32", "f32"),
        ("s64", "f32", "f32"),
        ("u64", "f64", "f64"),
        ("f16", "f32", "f32"),
        ("f64", "f32", "f64"),
        ("u64", "s8", "s64"),
    ],
)
def test_nx_merge_matches_nx_type_merge(a, b, expected):
    assert nx_merge(a, b) == expected
    assert nx_merge(b, a) == expected


def test_nx_result_dtype_folds_over_inputs():
    assert nx_result_dtype(["u8", "s8", "f16"]) == "f16"
    assert nx_result_dtype(["pred", "pred"]) == "u8"


def test_nx_merge_and_jnp_promote_differ_only_on_pred():
    assert nx_merge("pred", "s8") == "s16" and jnp_promote("pred", "s8") == "s8"
    assert nx_merge("pred", "pred") == "u8" and jnp_promote("pred", "pred") == "pred"
    assert nx_merge("u8", "s8") == jnp_promote("u8", "s8") == "s16"


@pytest.mark.parametrize(
    ("dtype", "with_params", "float_or"),
    [
        ("f64", "f64", "f64"),
        ("f32", "f32", "f32"),
        ("f16", "f32", "f16"),
        ("s64", "f32", "f32"),
        ("u8", "f32", "f32"),
        ("pred", "f32", "f32"),
    ],
)
def test_float_result_rules(dtype, with_params, float_or):
    assert with_f32_params(dtype) == with_params == nx_merge(dtype, "f32")
    assert float_or_f32(dtype) == float_or
    np_dtype = to_numpy_dtype(dtype)
    assert np.dtype(with_f32_params_np(np_dtype)) == to_numpy_dtype(with_params)
    assert float_or_f32_np(np_dtype) == to_numpy_dtype(float_or)
