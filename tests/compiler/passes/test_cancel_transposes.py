"""cancel_transposes: Transposes move through element-wise ops, merge, and cancel."""

import numpy as np
from onnx import helper

import axonc as ax
from axonc.passes import PassReport
from axonc.to_onnx.export import to_onnx
from tests import onnx_run
from tests.pass_numerics import (
    check_onnx_passes,
    onnx_model,
    op_types,
    random_inputs,
    random_state,
)

CANCEL = ["cancel_transposes", "dead_value_elimination_onnx"]
TO_FIRST, TO_LAST = [0, 3, 1, 2], [0, 2, 3, 1]
X = {"x": np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)}


def T(src, dst, perm):
    return helper.make_node("Transpose", [src], [dst], perm=perm)


def test_a_pair_around_a_relu_cancels():
    model = onnx_model(
        [T("x", "a", TO_LAST), helper.make_node("Relu", ["a"], ["b"]), T("b", "y", TO_FIRST)],
        [("x", [2, 3, 4, 5])],
        [("y", [2, 3, 4, 5])],
    )
    new, changed = check_onnx_passes(model, CANCEL, X)
    assert changed
    assert op_types(new) == ["Relu"]


def test_a_chain_of_unary_ops_with_scalar_operands_is_crossed():
    nodes = [
        T("x", "a", TO_LAST),
        helper.make_node("Tanh", ["a"], ["b"]),
        helper.make_node("Clip", ["b", "lo", "hi"], ["c"]),
        helper.make_node("LeakyRelu", ["c"], ["d"], alpha=0.2),
        helper.make_node("Mul", ["d", "half"], ["e"]),
        T("e", "y", TO_FIRST),
    ]
    inits = {"lo": np.float32(-0.5), "hi": np.float32(0.5), "half": np.float32(0.5)}
    model = onnx_model(nodes, [("x", [2, 3, 4, 5])], [("y", [2, 3, 4, 5])], inits)
    new, _ = check_onnx_passes(model, CANCEL, X)
    assert op_types(new) == ["Tanh", "Clip", "LeakyRelu", "Mul"]


def test_consecutive_transposes_merge_into_one():
    model = onnx_model(
        [T("x", "a", [0, 2, 3, 1]), T("a", "y", [1, 0, 2, 3])],
        [("x", [2, 3, 4, 5])],
        [("y", [4, 2, 5, 3])],
    )
    new, _ = check_onnx_passes(model, CANCEL, X)
    assert op_types(new) == ["Transpose"]
    assert list(new.graph.node[0].attribute[0].ints) == [2, 0, 3, 1]


def test_a_transpose_with_several_readers_or_a_non_elementwise_reader_stays():
    nodes = [
        T("x", "a", TO_LAST),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Softmax", ["a"], ["c"], axis=-1),
        helper.make_node("Add", ["b", "c"], ["y"]),
    ]
    model = onnx_model(nodes, [("x", [2, 3, 4, 5])], [("y", [2, 4, 5, 3])])
    new, changed = check_onnx_passes(model, CANCEL, X)
    assert not changed
    assert op_types(new) == ["Transpose", "Relu", "Softmax", "Add"]


def test_a_binary_op_with_a_per_channel_operand_is_not_crossed():
    nodes = [
        T("x", "a", TO_LAST),
        helper.make_node("Add", ["a", "bias"], ["b"]),
        T("b", "y", TO_FIRST),
    ]
    bias = np.arange(3, dtype=np.float32)
    model = onnx_model(nodes, [("x", [2, 3, 4, 5])], [("y", [2, 3, 4, 5])], {"bias": bias})
    new, changed = check_onnx_passes(model, CANCEL, X)
    assert not changed
    assert op_types(new).count("Transpose") == 2


def test_a_graph_output_between_keeps_its_value():
    nodes = [T("x", "a", TO_LAST), helper.make_node("Relu", ["a"], ["r"]), T("r", "y", TO_FIRST)]
    model = onnx_model(nodes, [("x", [2, 3, 4, 5])], [("r", [2, 4, 5, 3]), ("y", [2, 3, 4, 5])])
    new, _ = check_onnx_passes(model, CANCEL, X)
    assert {o.name for o in new.graph.output} == {"r", "y"}


def test_channels_last_cnn_has_no_transpose_between_consecutive_convs():
    x = ax.input("x", (None, 8, 8, 2))
    y = ax.conv(x, 4, kernel_size=3, padding="same", activation="relu")
    y = ax.max_pool(y, kernel_size=2)
    y = ax.conv(y, 3, kernel_size=3)
    y = ax.relu(ax.conv(y, 3, kernel_size=1))
    model = y
    state = random_state(model)
    report = PassReport()
    m = to_onnx(model, state, report=report)
    ops = [n.op_type for n in m.graph.node]
    convs = [i for i, op in enumerate(ops) if op == "Conv"]
    assert len(convs) == 3
    assert "Transpose" not in ops[convs[0] : convs[-1]]
    assert ops.count("Transpose") == 2  # in at the input, out at the output
    assert report.changes["cancel_transposes"] == 1
    _, predict = ax.build(model, compiler="reference")
    sess = onnx_run.session(m)
    for batch in (1, 3):
        feeds = random_inputs(model, batch, seed=batch)
        got, _ = onnx_run.run(m, sess, feeds, state.data, batch)
        np.testing.assert_allclose(got, predict(state, feeds), rtol=1e-5, atol=1e-5)
