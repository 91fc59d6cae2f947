"""Combinators: add/subtract/multiply, concatenate, split, stack_columns vs numpy and real Axon."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.errors import GraphError, OptionError, ShapeError
from axonc.interpreter import run
from axonc.ir import assign_names
from axonc.shape_inference import infer_types, output_types
from tests import golden

RTOL, ATOL = 1e-5, 1e-6


def out_type(model: ax.Axon):
    return output_types(model, infer_types(model))


def forward(model: ax.Axon, **inputs: np.ndarray):
    out, state = run(model, inputs, {})
    assert state == {}
    return out


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------
# add, subtract, multiply


@pytest.mark.parametrize(
    ("case", "layer", "b_shape"),
    [
        ("add", ax.add, (None, 3)),
        ("add_broadcast", ax.add, (None, 1)),
        ("subtract", ax.subtract, (None, 3)),
        ("multiply", ax.multiply, (None, 3)),
    ],
)
def test_elementwise_matches_axon_golden(case, layer, b_shape):
    inputs, expected = golden.io(case)
    model = layer(ax.input("a", (None, 3)), ax.input("b", b_shape))
    assert out_type(model) == ax.TensorType((None, 3))
    np.testing.assert_allclose(forward(model, **inputs), expected, RTOL, ATOL)


def test_list_form_folds_left():
    a, b, c = (ax.input(n, (None, 4)) for n in "abc")
    da, db, dc = rand(2, 4, seed=1), rand(2, 4, seed=2), rand(2, 4, seed=3)
    feeds = {"a": da, "b": db, "c": dc}
    np.testing.assert_allclose(forward(ax.subtract([a, b, c]), **feeds), (da - db) - dc, RTOL, ATOL)
    np.testing.assert_allclose(forward(ax.add([a, b, c]), **feeds), da + db + dc, RTOL, ATOL)
    np.testing.assert_allclose(forward(ax.multiply([a, b, c]), **feeds), da * db * dc, RTOL, ATOL)


def test_method_form_equals_function_form():
    a, b = ax.input("a", (None, 3)), ax.input("b", (None, 3))
    da, db = rand(2, 3, seed=4), rand(2, 3, seed=5)
    np.testing.assert_array_equal(forward(a.subtract(b), a=da, b=db), da - db)


def test_broadcasting_across_ranks():
    a = ax.input("a", (None, 2, 3))
    b = ax.input("b", (None, 1, 3))
    c = ax.input("c", (3,))
    model = ax.multiply([a, b, c])
    assert out_type(model) == ax.TensorType((None, 2, 3))
    da, db, dc = rand(4, 2, 3, seed=1), rand(4, 1, 3, seed=2), rand(3, seed=3)
    expected = np.empty((4, 2, 3), np.float32)
    for n, i, j in np.ndindex(4, 2, 3):
        expected[n, i, j] = da[n, i, j] * db[n, 0, j] * dc[j]
    np.testing.assert_allclose(forward(model, a=da, b=db, c=dc), expected, RTOL, ATOL)


def test_single_element_list_is_identity():
    a = ax.input("a", (None, 3))
    data = rand(2, 3)
    np.testing.assert_array_equal(forward(ax.add([a]), a=data), data)


def test_elementwise_default_names():
    a, b = ax.input("a", (None, 3)), ax.input("b", (None, 3))
    model = ax.add(ax.add(a, b), ax.multiply(a, b))
    names = sorted(assign_names(model).values())
    assert names == ["a", "add_0", "add_1", "b", "multiply_0"]


def test_mixed_dtypes_follow_nx_type_merge():
    a = ax.input("a", (None, 2), dtype="s32")
    b = ax.input("b", (None, 2), dtype="f32")
    model = ax.add(a, b)
    assert out_type(model) == ax.TensorType((None, 2), "f32")
    out = forward(model, a=np.array([[1, 2]], np.int32), b=np.array([[0.5, 0.25]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.5, 2.25]])

    u = ax.input("u", (None, 2), dtype="u8")
    s = ax.input("s", (None, 2), dtype="s8")
    model = ax.multiply(u, s)
    assert out_type(model).dtype == "s16"
    out = forward(model, u=np.array([[200, 3]], np.uint8), s=np.array([[-2, 4]], np.int8))
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [[-400, 12]])


def test_incompatible_broadcast_raises_shape_error():
    with pytest.raises(ShapeError, match="expected inputs that broadcast together"):
        ax.add(ax.input("a", (None, 3)), ax.input("b", (None, 4)))


def test_elementwise_call_forms_are_checked():
    a = ax.input("a", (None, 3))
    with pytest.raises(GraphError, match="got one graph"):
        ax.add(a)
    with pytest.raises(GraphError, match="not both"):
        ax.add([a, a], a)
    with pytest.raises(GraphError, match="non-empty"):
        ax.multiply([])
    with pytest.raises(GraphError, match="must be an Axon graph"):
        ax.add(a, np.ones(3))


# ---------------------------------------------------------------------------
# concatenate


def test_concatenate_matches_axon_golden():
    inputs, expected = golden.io("concatenate_axis1")
    model = ax.concatenate([ax.input("a", (None, 2, 3)), ax.input("b", (None, 1, 3))], axis=1)
    assert out_type(model) == ax.TensorType((None, 3, 3))
    np.testing.assert_allclose(forward(model, **inputs), expected, RTOL, ATOL)


def test_concatenate_two_graphs_default_last_axis():
    a, b = ax.input("a", (None, 4)), ax.input("b", (None, 2))
    model = a.concatenate(b)
    assert out_type(model) == ax.TensorType((None, 6))
    da, db = rand(3, 4, seed=1), rand(3, 2, seed=2)
    out = forward(model, a=da, b=db)
    np.testing.assert_array_equal(out[:, :4], da)
    np.testing.assert_array_equal(out[:, 4:], db)


def test_concatenate_three_inputs_negative_axis():
    xs = [ax.input(f"x{i}", (None, 2, i + 1)) for i in range(3)]
    data = {f"x{i}": rand(2, 2, i + 1, seed=i) for i in range(3)}
    out = forward(ax.concatenate(xs, axis=-1), **data)
    assert out.shape == (2, 2, 6)
    np.testing.assert_array_equal(out[..., 0:1], data["x0"])
    np.testing.assert_array_equal(out[..., 1:3], data["x1"])
    np.testing.assert_array_equal(out[..., 3:6], data["x2"])


def test_concatenate_dynamic_axis_and_dtype_merge():
    a = ax.input("a", (None, None), dtype="s32")
    b = ax.input("b", (None, 3), dtype="f32")
    model = ax.concatenate(a, b)
    assert out_type(model) == ax.TensorType((None, None), "f32")
    out = forward(model, a=np.array([[1, 2]], np.int32), b=rand(1, 3))
    assert out.dtype == np.float32 and out.shape == (1, 5)


def test_concatenate_mismatched_non_axis_dims_raise_shape_error():
    a, b = ax.input("a", (None, 2, 3)), ax.input("b", (None, 3, 3))
    with pytest.raises(ShapeError, match=r"every dim but the concatenation axis 2.*axis 1"):
        ax.concatenate(a, b)


def test_concatenate_rank_mismatch_and_bad_axis():
    a, b = ax.input("a", (None, 2, 3)), ax.input("b", (None, 3))
    with pytest.raises(ShapeError, match="same rank"):
        ax.concatenate([a, b])
    with pytest.raises(ShapeError, match="axis 3 is out of range"):
        ax.concatenate([a, a], axis=3)
    with pytest.raises(OptionError, match="axis"):
        ax.concatenate([a, a], axis="last")


# ---------------------------------------------------------------------------
# split


def test_split_equal_matches_axon_golden():
    inputs, expected = golden.io("split_2")
    parts = ax.split(ax.input("x", (None, 6)), 2)
    assert isinstance(parts, tuple) and len(parts) == 2
    out = forward(ax.container(parts), **inputs)
    assert len(out) == 2
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, RTOL, ATOL)


def test_split_sizes_matches_axon_golden():
    inputs, expected = golden.io("split_list")
    parts = ax.split(ax.input("x", (None, 6)), [1, 3, 2])
    assert [out_type(p) for p in parts] == [ax.TensorType((None, n)) for n in (1, 3, 2)]
    out = forward(ax.container(parts), **inputs)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, RTOL, ATOL)


def test_split_is_one_split_node_with_element_nodes():
    x = ax.input("x", (None, 6))
    parts = x.split(3)
    split_ids = {p.node.inputs[0] for p in parts}
    assert len(split_ids) == 1
    (sid,) = split_ids
    assert parts[0].nodes[sid].op == "split"
    assert [p.node.op for p in parts] == ["elem"] * 3
    assert [p.node.options["path"] for p in parts] == [(0,), (1,), (2,)]
    names = assign_names(ax.container(parts))
    assert names[sid] == "split_0"


def test_split_along_axis_1():
    x = ax.input("x", (None, 4, 2))
    data = rand(3, 4, 2)
    parts = ax.split(x, 2, axis=1)
    out = forward(ax.container(parts), x=data)
    np.testing.assert_array_equal(out[0], data[:, 0:2])
    np.testing.assert_array_equal(out[1], data[:, 2:4])


def test_split_sizes_may_leave_a_remainder_like_axon():
    x = ax.input("x", (None, 6))
    data = rand(2, 6)
    out = forward(ax.container(ax.split(x, [2, 1])), x=data)
    np.testing.assert_array_equal(out[0], data[:, :2])
    np.testing.assert_array_equal(out[1], data[:, 2:3])


def test_split_dynamic_axis_is_checked_at_run_time():
    x = ax.input("x", (2, None))
    parts = ax.split(x, 2)
    assert out_type(parts[0]) == ax.TensorType((2, None))
    assert forward(parts[1], x=rand(2, 4)).shape == (2, 2)
    with pytest.raises(ShapeError, match="divisible by 2"):
        forward(parts[1], x=rand(2, 5))


def test_split_not_dividing_raises_shape_error():
    with pytest.raises(ShapeError, match="size 6 into 4 equal parts; expected a size divisible"):
        ax.split(ax.input("x", (None, 6)), 4)


def test_split_sizes_too_large_raise_shape_error():
    with pytest.raises(ShapeError, match="add up to 7, more than the axis size 6"):
        ax.split(ax.input("x", (None, 6)), [3, 4])


@pytest.mark.parametrize("splits", [0, [], 2.0, [1, -1]])
def test_split_bad_splits_raise_option_error(splits):
    with pytest.raises(OptionError, match="splits"):
        ax.split(ax.input("x", (None, 6)), splits)


def test_split_rank1_raises_shape_error():
    with pytest.raises(ShapeError, match="rank >= 2"):
        ax.split(ax.input("x", (6,)), 2)


# ---------------------------------------------------------------------------
# stack_columns


def test_stack_columns_stacks_dict_leaves_in_order():
    cols = {k: ax.input(k, (None,)) for k in ("price", "rooms", "age")}
    model = ax.stack_columns(ax.container(cols))
    assert out_type(model) == ax.TensorType((None, 3))
    data = {k: rand(4, seed=i) for i, k in enumerate(cols)}
    out = forward(model, **data)
    for row in range(4):
        np.testing.assert_array_equal(
            out[row], [data["price"][row], data["rooms"][row], data["age"][row]]
        )


def test_stack_columns_ignore_and_plain_dict_argument():
    cols = {k: ax.input(k, (None,)) for k in ("x", "id", "y")}
    model = ax.stack_columns(cols, ignore=["id"])
    assert out_type(model) == ax.TensorType((None, 2))
    data = {k: rand(3, seed=i) for i, k in enumerate(cols)}
    np.testing.assert_array_equal(forward(model, **data), np.column_stack([data["x"], data["y"]]))


def test_stack_columns_tuple_container_and_dtype_merge():
    a = ax.input("a", (None,), dtype="s32")
    b = ax.input("b", (None,), dtype="f32")
    model = ax.stack_columns((a, b))
    assert out_type(model) == ax.TensorType((None, 2), "f32")
    out = forward(model, a=np.array([1, 2], np.int32), b=np.array([0.5, 1.5], np.float32))
    np.testing.assert_array_equal(out, [[1.0, 0.5], [2.0, 1.5]])


def test_stack_columns_mismatched_columns_raise_shape_error():
    with pytest.raises(ShapeError, match="same shape"):
        ax.stack_columns({"a": ax.input("a", (None,)), "b": ax.input("b", (None, 2))})


def test_stack_columns_needs_a_container():
    with pytest.raises(ShapeError, match="expected a container"):
        ax.stack_columns(ax.input("a", (None, 3)))
    with pytest.raises(ShapeError, match="every entry is ignored"):
        ax.stack_columns({"a": ax.input("a", (None,))}, ignore=["a"])


def test_stack_columns_bad_ignore_raises_option_error():
    with pytest.raises(OptionError, match="ignore"):
        ax.stack_columns({"a": ax.input("a", (None,))}, ignore="a")
