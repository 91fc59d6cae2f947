"""Axon's guides/model_creation/multi_input_multi_output_models.livemd: two inputs
merged, and outputs in tuples, maps and nested containers."""

import numpy as np
import pytest

import axonc as ax
from tests.axon_programs.helpers import graph_edges, graph_labels, iota


def two_inputs():
    input_1 = ax.input("input_1")
    input_2 = ax.input("input_2")

    return ax.add(input_1, input_2)


def branches():
    inp = ax.input("data")

    x1 = inp.dense(32).relu()
    x2 = inp.dense(64).relu()
    return x1, x2


def expected_branches(params, x):
    p = params.data
    x1 = np.maximum(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0)
    x2 = np.maximum(x @ p["dense_1"]["kernel"] + p["dense_1"]["bias"], 0)
    return x1, x2


def test_two_inputs():
    out = two_inputs()
    assert ax.get_inputs(out) == {"input_1": None, "input_2": None}

    inputs = {"input_1": ax.template((2, 8), "f32"), "input_2": ax.template((2, 8), "f32")}
    init_fn, predict_fn = ax.build(out)
    params = init_fn(inputs, {})
    assert params.data == {}

    inputs = {"input_1": iota(2, 8), "input_2": iota(2, 8)}
    np.testing.assert_array_equal(predict_fn(params, inputs), 2 * iota(2, 8))

    with pytest.raises(ax.AxoncError, match="input_2"):
        predict_fn(params, {"input_1": iota(2, 8)})


def test_two_inputs_graph():
    inputs = {"input_1": ax.template((2, 8), "f32"), "input_2": ax.template((2, 8), "f32")}
    graph = ax.display.as_graph(two_inputs(), inputs)
    assert graph_labels(graph) == [
        "input_1 (:input) {2, 8}",
        "input_2 (:input) {2, 8}",
        "container_0 (:container) {{2, 8}, {2, 8}}",
        "add_0 (:add) {2, 8}",
    ]
    assert graph_edges(graph) == 3


def test_tuple_output():
    x1, x2 = branches()
    out = ax.container((x1, x2))
    assert 'outputs: "container_0"' in str(out)

    template = ax.template((2, 8), "f32")
    init_fn, predict_fn = ax.build(out)
    params = init_fn(template, {})
    y = predict_fn(params, iota(2, 8))

    assert isinstance(y, tuple) and y[0].shape == (2, 32) and y[1].shape == (2, 64)
    for got, want in zip(y, expected_branches(params, iota(2, 8))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tuple_output_graph():
    x1, x2 = branches()
    graph = ax.display.as_graph(ax.container((x1, x2)), ax.template((2, 8), "f32"))
    assert "container_0 (:container) {{2, 32}, {2, 64}}" in graph_labels(graph)
    assert graph_edges(graph) == 6


def test_map_output():
    x1, x2 = branches()
    out = ax.container({"x1": x1, "x2": x2})

    template = ax.template((2, 8), "f32")
    init_fn, predict_fn = ax.build(out)
    params = init_fn(template, {})
    y = predict_fn(params, iota(2, 8))

    assert set(y) == {"x1", "x2"}
    want1, want2 = expected_branches(params, iota(2, 8))
    np.testing.assert_allclose(y["x1"], want1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y["x2"], want2, rtol=1e-5, atol=1e-5)


def test_nested_output():
    x1, x2 = branches()
    out = ax.container(({"x1": (x1, x2), "x2": {"x1": x1, "x2": (x2,)}},))

    template = ax.template((2, 8), "f32")
    init_fn, predict_fn = ax.build(out)
    params = init_fn(template, {})
    y = predict_fn(params, iota(2, 8))

    assert isinstance(y, tuple) and len(y) == 1
    inner = y[0]
    assert isinstance(inner["x1"], tuple) and isinstance(inner["x2"]["x2"], tuple)
    want1, want2 = expected_branches(params, iota(2, 8))
    np.testing.assert_allclose(inner["x1"][0], want1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inner["x1"][1], want2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inner["x2"]["x1"], want1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inner["x2"]["x2"][0], want2, rtol=1e-5, atol=1e-5)
