"""inline_output_identities: a graph output is produced in place instead of copied."""

import numpy as np
from onnx import helper

from tests.pass_numerics import check_onnx_passes, onnx_model, op_types

PASS = ["inline_output_identities"]
X = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 2}


def test_an_output_copy_of_a_value_that_feeds_another_node_is_removed():
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("Identity", ["h"], ["out_h"]),
        helper.make_node("Tanh", ["h"], ["out_t"]),
    ]
    model = onnx_model(nodes, [("x", [2, 3])], [("out_h", [2, 3]), ("out_t", [2, 3])], {})
    new, changed = check_onnx_passes(model, PASS, X)
    assert changed
    assert op_types(new) == ["Relu", "Tanh"]
    assert new.graph.node[1].input[0] == "out_h"
    assert [o.name for o in new.graph.output] == ["out_h", "out_t"]


def test_a_copy_of_a_graph_input_or_of_another_output_stays():
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Relu", ["x"], ["b"]),
        helper.make_node("Identity", ["b"], ["c"]),
    ]
    model = onnx_model(nodes, [("x", [2, 3])], [("a", [2, 3]), ("b", [2, 3]), ("c", [2, 3])], {})
    new, changed = check_onnx_passes(model, PASS, X)
    assert not changed
    assert op_types(new) == ["Identity", "Relu", "Identity"]
