"""Axon's guides/model_creation/your_first_axon_model.livemd: the identity model."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import graph_edges, graph_labels, iota


def test_input_is_a_model():
    input = ax.input("data")
    assert ax.get_inputs(input) == {"data": None}

    init_fn, predict_fn = ax.build(input)
    params = init_fn(ax.template((1, 8), "f32"), ax.ModelState.empty())
    assert params.data == {}

    np.testing.assert_array_equal(predict_fn(params, iota(1, 8)), iota(1, 8))


def test_input_graph():
    input = ax.input("data")
    template = ax.template((2, 8), "f32")
    graph = ax.display.as_graph(input, template)
    assert graph.startswith("graph TD;")
    assert graph_labels(graph) == ["data (:input) {2, 8}"]
    assert graph_edges(graph) == 0
