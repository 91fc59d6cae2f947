"""fold_constants_onnx: exact nodes over initializers become initializers."""

import numpy as np
import onnx
from onnx import helper

import axonc as ax
from axonc.to_onnx.export import to_onnx
from tests.pass_numerics import check_onnx_passes, onnx_model, op_types, random_state

FOLD = ["fold_constants_onnx", "dead_value_elimination_onnx"]
RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 4)).astype(np.float32)
X = {"x": RNG.normal(size=(2, 4)).astype(np.float32)}


def initializer(model, name):
    (t,) = [t for t in model.graph.initializer if t.name == name]
    return onnx.numpy_helper.to_array(t)


def test_a_transposed_kernel_becomes_the_transposed_initializer():
    model = onnx_model(
        [
            helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["y"]),
        ],
        [("x", [2, 4])],
        [("y", [2, 3])],
        {"w": W},
    )
    new, changed = check_onnx_passes(model, FOLD, X)
    assert changed
    assert op_types(new) == ["MatMul"]
    np.testing.assert_array_equal(initializer(new, "wt"), W.T)
    assert [t.name for t in new.graph.initializer] == ["wt"]


def test_chains_of_exact_ops_fold_completely():
    b = np.arange(3, dtype=np.float32)
    model = onnx_model(
        [
            helper.make_node("Unsqueeze", ["b", "axes"], ["b2"]),
            helper.make_node("Concat", ["b2", "b2"], ["bb"], axis=0),
            helper.make_node("Mul", ["bb", "two"], ["bb2"]),
            helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["m"]),
            helper.make_node("Add", ["m", "bb2"], ["y"]),
        ],
        [("x", [2, 4])],
        [("y", [2, 3])],
        {"w": W, "b": b, "axes": np.array([0], np.int64), "two": np.float32(2.0)},
    )
    new, _ = check_onnx_passes(model, FOLD, X)
    assert op_types(new) == ["MatMul", "Add"]
    np.testing.assert_array_equal(initializer(new, "bb2"), np.stack([b, b]) * 2)


def test_transcendental_ops_are_not_folded():
    model = onnx_model(
        [helper.make_node("Exp", ["w"], ["e"]), helper.make_node("Add", ["x", "e"], ["y"])],
        [("x", [3, 4])],
        [("y", [3, 4])],
        {"w": W},
    )
    new, changed = check_onnx_passes(model, FOLD, {"x": np.ones((3, 4), np.float32)})
    assert not changed
    assert op_types(new) == ["Exp", "Add"]


def test_initializers_that_are_graph_inputs_are_not_constants():
    model = onnx_model(
        [
            helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["y"]),
        ],
        [("x", [2, 4]), ("w", [3, 4])],
        [("y", [2, 3])],
        {"w": W},
    )
    new, changed = check_onnx_passes(model, FOLD, X)
    assert not changed
    assert op_types(new) == ["Transpose", "MatMul"]


def test_a_node_producing_a_graph_output_stays():
    model = onnx_model(
        [helper.make_node("Transpose", ["w"], ["y"], perm=[1, 0])], [], [("y", [4, 3])], {"w": W}
    )
    new, changed = check_onnx_passes(model, FOLD, {})
    assert not changed
    assert op_types(new) == ["Transpose"]


def test_an_initializer_still_read_elsewhere_is_kept():
    model = onnx_model(
        [
            helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "wt"], ["m"]),
            helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0),
            helper.make_node("Add", ["m", "s"], ["y"]),
        ],
        [("x", [2, 4])],
        [("y", [2, 3])],
        {"w": W},
    )
    new, _ = check_onnx_passes(model, FOLD, X)
    assert sorted(t.name for t in new.graph.initializer) == ["w", "wt"]


def readers(model, value):
    return [n.op_type for n in model.graph.node if value in n.input]


def test_exported_conv_kernels_fold_but_train_state_inputs_stay():
    x = ax.input("x", (None, 5, 5, 2))
    model = ax.batch_norm(ax.conv(x, 3, kernel_size=2))
    state = random_state(model, "train")
    assert readers(to_onnx(model, state, mode="inference", opt_level=0), "conv_0/kernel")
    for mode in ("inference", "train"):
        assert readers(to_onnx(model, state, mode=mode, opt_level=1), "conv_0/kernel") == []
    train = to_onnx(model, state, mode="train", opt_level=1)
    assert "batch_norm_0/mean" in {i.name for i in train.graph.input}
    assert readers(train, "batch_norm_0/mean")
