"""dead_value_elimination_onnx: nodes and initializers no output reads are dropped."""

import numpy as np
from onnx import helper

from tests.pass_numerics import check_onnx_passes, onnx_model, op_types

DVE = ["dead_value_elimination_onnx"]
X = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}


def test_unused_nodes_and_initializers_are_dropped():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Add", ["x", "w"], ["unused"]),
        helper.make_node("Tanh", ["unused"], ["unused2"]),
    ]
    model = onnx_model(
        nodes, [("x", [2, 3])], [("y", [2, 3])], {"w": np.ones(3, np.float32), "v": np.ones(1)}
    )
    new, changed = check_onnx_passes(model, DVE, X)
    assert changed
    assert op_types(new) == ["Relu"]
    assert list(new.graph.initializer) == []


def test_graph_inputs_and_their_initializers_stay():
    model = onnx_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [("x", [2, 3]), ("state", [3])],
        [("y", [2, 3])],
        {"state": np.zeros(3, np.float32)},
    )
    new, changed = check_onnx_passes(model, DVE, X)
    assert not changed
    assert [i.name for i in new.graph.input] == ["x", "state"]
    assert [t.name for t in new.graph.initializer] == ["state"]


def test_a_node_with_one_live_output_of_several_stays():
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)]
    nodes.append(helper.make_node("Identity", ["a"], ["y"]))
    model = onnx_model(nodes, [("x", [2, 4])], [("y", [2, 2])], opset=18)
    new, changed = check_onnx_passes(
        model, DVE, {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    )
    assert not changed
    assert op_types(new) == ["Split", "Identity"]
