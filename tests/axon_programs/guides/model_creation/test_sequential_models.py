"""Axon's guides/model_creation/sequential_models.livemd: a pipeline of layers."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import graph_edges, graph_labels, iota


def build():
    return (
        ax.input("data")
        .dense(32)
        .activation("relu")
        .dropout(rate=0.5)
        .dense(1)
        .activation("softmax")
    )


def test_sequential_model_predicts():
    model = build()
    assert "softmax_0" in str(model) and "nodes: 6" in str(model)

    template = ax.template((2, 16), "f32")
    init_fn, predict_fn = ax.build(model)
    params = init_fn(template, {})
    assert params.data["dense_0"]["kernel"].shape == (16, 32)
    assert params.data["dense_1"]["kernel"].shape == (32, 1)
    np.testing.assert_array_equal(params.data["dense_0"]["bias"], np.zeros(32, np.float32))

    # a softmax over one unit is 1 whatever the logits
    np.testing.assert_array_equal(predict_fn(params, iota(2, 16)), np.ones((2, 1), np.float32))


def test_sequential_model_graph():
    template = ax.template((2, 16), "f32")
    graph = ax.display.as_graph(build(), template)
    assert graph_labels(graph) == [
        "data (:input) {2, 16}",
        "dense_0 (:dense) {2, 32}",
        "relu_0 (:relu) {2, 32}",
        "dropout_0 (:dropout) {2, 32}",
        "dense_1 (:dense) {2, 1}",
        "softmax_0 (:softmax) {2, 1}",
    ]
    assert graph_edges(graph) == 5
