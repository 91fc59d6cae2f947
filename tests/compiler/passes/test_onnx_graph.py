"""The networkx view of an ONNX graph: round trip, producers/users, edits keep it consistent."""

import numpy as np
import onnx
from onnx import helper

from axonc.passes import onnx_graph as og
from tests.pass_numerics import onnx_model


def _model():
    return onnx_model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="r"),
            helper.make_node("Add", ["a", "w"], ["b"], name="add"),
            helper.make_node("Mul", ["a", "b"], ["y"], name="mul"),
        ],
        [("x", [2, 3])],
        [("y", [2, 3])],
        {"w": np.ones(3, np.float32)},
    )


def test_round_trip_keeps_the_model():
    m = _model()
    back = og.from_nx(og.to_nx(m))
    assert back.SerializeToString() == m.SerializeToString()


def test_producers_users_and_edges():
    g = og.to_nx(_model())
    relu, add, mul = (og.producer(g, v) for v in ("a", "b", "y"))
    assert og.users(g, "a") == {add, mul}
    assert set(g.edges) == {(relu, add), (relu, mul), (add, mul)}
    assert og.producer(g, "w") is None and og.constant(g, "w").tolist() == [1, 1, 1]
    assert og.pinned(g, "y") and not og.pinned(g, "a")


def test_replace_uses_rewires_and_refuses_graph_outputs():
    g = og.to_nx(_model())
    assert og.replace_uses(g, "a", "x")
    assert og.users(g, "a") == set()
    assert {n.op_type for n in (og.onnx_node(g, u) for u in og.users(g, "x"))} == {
        "Relu",
        "Add",
        "Mul",
    }
    assert not og.replace_uses(g, "y", "x")
    onnx.checker.check_model(og.from_nx(g), full_check=True)


def test_rename_output_moves_the_producer_and_its_edges():
    g = og.to_nx(_model())
    mul = og.producer(g, "y")
    og.remove_node(g, mul)
    add = og.producer(g, "b")
    og.rename_output(g, add, "b", "y")
    assert og.producer(g, "y") == add and og.producer(g, "b") is None
    onnx.checker.check_model(og.from_nx(g), full_check=True)


def test_fresh_names_never_clash():
    g = og.to_nx(_model())
    assert og.fresh(g, "a") == "a_1"
    assert og.fresh(g, "a") == "a_2"
    assert og.fresh(g, "new") == "new"
