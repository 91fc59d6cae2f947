"""dead_node_elimination: nodes the output does not reach are dropped."""

import axonc as ax
from axonc.passes import PASSES
from axonc.passes.graph import redirect, to_nx
from tests.pass_numerics import random_state


def test_nodes_bypassed_by_a_rewrite_are_removed():
    x = ax.input("x", (None, 3))
    model = ax.tanh(ax.relu(x))
    g = to_nx(model, random_state(model), mode="inference", target="onnx")
    relu = next(n for n, d in g.nodes(data=True) if d["node"].op == "relu")
    redirect(g, relu, x.output)
    assert PASSES["dead_node_elimination"].fn(g)
    assert sorted(d["node"].op for _, d in g.nodes(data=True)) == ["input", "tanh"]
    assert not PASSES["dead_node_elimination"].fn(g)


def test_every_leaf_of_a_container_output_is_live():
    x = ax.input("x", (None, 3))
    model = ax.container((ax.relu(x), ax.tanh(x)))
    g = to_nx(model, random_state(model), mode="inference", target="onnx")
    assert not PASSES["dead_node_elimination"].fn(g)
    assert len(g) == 4
