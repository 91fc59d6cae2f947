"""Axon's guides/model_creation/complex_models.livemd: branches that merge, and a model
made of reusable blocks."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import graph_edges, graph_labels, iota


def two_branches():
    input = ax.input("data")

    x1 = input.dense(32)
    x2 = input.dense(64).relu().dense(32)

    return ax.add(x1, x2)


def conv_block(input):
    residual = input

    x = input.conv(3, padding="same").mish()

    return x.add(residual).max_pool(kernel_size=(2, 2))


def dense_block(input):
    return input.dense(32).relu()


def my_model():
    return dense_block(dense_block(conv_block(ax.input("data")).flatten())).dense(1)


def test_two_branches_predict():
    out = two_branches()
    assert ax.get_inputs(out) == {"data": None}
    assert 'outputs: "add_0"' in str(out)

    template = ax.template((2, 8), "f32")
    init_fn, predict_fn = ax.build(out)
    params = init_fn(template, {})
    y = predict_fn(params, iota(2, 8))

    p = params.data
    x = iota(2, 8)
    x1 = x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"]
    h = np.maximum(x @ p["dense_1"]["kernel"] + p["dense_1"]["bias"], 0)
    x2 = h @ p["dense_2"]["kernel"] + p["dense_2"]["bias"]
    assert y.shape == (2, 32)
    np.testing.assert_allclose(y, x1 + x2, rtol=1e-5, atol=1e-5)


def test_two_branches_graph():
    graph = ax.display.as_graph(two_branches(), ax.template((2, 8), "f32"))
    assert sorted(graph_labels(graph)) == sorted(
        [
            "data (:input) {2, 8}",
            "dense_0 (:dense) {2, 32}",
            "dense_1 (:dense) {2, 64}",
            "relu_0 (:relu) {2, 64}",
            "dense_2 (:dense) {2, 32}",
            "container_0 (:container) {{2, 32}, {2, 32}}",
            "add_0 (:add) {2, 32}",
        ]
    )
    assert graph_edges(graph) == 7


def test_blocks_predict():
    model = my_model()
    assert 'outputs: "dense_2"' in str(model)

    template = ax.template((1, 28, 28, 3), "f32")
    assert ax.get_output_shape(model, template) == (1, 1)
    init_fn, predict_fn = ax.build(model)
    params = init_fn(template, {})
    assert params.data["dense_0"]["kernel"].shape == (588, 32)
    x = np.random.default_rng(0).standard_normal((1, 28, 28, 3)).astype(np.float32)
    assert predict_fn(params, x).shape == (1, 1)


def test_blocks_graph():
    graph = ax.display.as_graph(my_model(), ax.template((1, 28, 28, 3), "f32"))
    assert sorted(graph_labels(graph)) == sorted(
        [
            "data (:input) {1, 28, 28, 3}",
            "conv_0 (:conv) {1, 28, 28, 3}",
            "mish_0 (:mish) {1, 28, 28, 3}",
            "container_0 (:container) {{1, 28, 28, 3}, {1, 28, 28, 3}}",
            "add_0 (:add) {1, 28, 28, 3}",
            "max_pool_0 (:max_pool) {1, 14, 14, 3}",
            "flatten_0 (:flatten) {1, 588}",
            "dense_0 (:dense) {1, 32}",
            "relu_0 (:relu) {1, 32}",
            "dense_1 (:dense) {1, 32}",
            "relu_1 (:relu) {1, 32}",
            "dense_2 (:dense) {1, 1}",
        ]
    )
    assert graph_edges(graph) == 12
