"""Function layers: ax.nx and custom layers ax.layer / ax.param (golden, params, modes, errors)."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.dtypes import TensorType
from axonc.errors import GraphError, OptionError, ShapeError, TraceError
from axonc.interpreter import run
from axonc.ir import assign_names
from axonc.ops.custom import layer, nx, param
from axonc.ops.special import container, graph_of, input
from axonc.registry import get_op
from axonc.serialize import from_bytes, to_bytes
from axonc.shape_inference import declared_type, infer_types, output_types
from tests import golden

RNG = np.random.default_rng(11)


def _types(model, **inputs):
    return output_types(model, infer_types(model, inputs))


def _param_specs(model):
    node = model.node
    in_types = [declared_type(model, i) for i in node.inputs]
    return get_op(node.op).params(in_types, dict(node.options), "inference", node)


def test_nx_layer_matches_axon_golden():
    inputs, expected = golden.io("nx_layer")
    model = input("x", shape=(None, 3)).nx(lambda t: t * t + 1)
    out, _ = run(model, inputs, {})
    assert out.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert assign_names(model)[model.output] == "nx_0"


def test_nx_body_is_a_subgraph_of_primitives_and_the_node_holds_no_code():
    model = nx(input("x", shape=(None, 3)), lambda t: anp.tanh(t).sum(axis=-1, keepdims=True))
    node = model.node
    body = node.subgraphs["body"]
    assert {n.op for n in body.nodes.values()} == {"argument", "np.tanh", "np.sum"}
    assert dict(node.options) == {}
    assert declared_type(model, model.output) == TensorType((None, 1))
    assert _types(model, x=TensorType((4, 3))) == TensorType((4, 1))


def test_nx_on_a_container_graph():
    a, b = input("a", shape=(None, 2)), input("b", shape=(None, 2))
    pair = container((a, b))
    model = ax.nx(pair, lambda t: t[0] - 2 * t[1])
    xa, xb = RNG.normal(size=(3, 2)).astype(np.float32), RNG.normal(size=(3, 2)).astype(np.float32)
    out, _ = run(model, {"a": xa, "b": xb}, {})
    np.testing.assert_allclose(out, xa - 2 * xb, rtol=1e-6)
    first = ax.nx(pair, lambda t: t[0])
    np.testing.assert_array_equal(run(first, {"a": xa, "b": xb}, {})[0], xa)


def test_nx_on_nested_containers_and_container_results():
    a, b, c = (input(n, shape=(None, k)) for n, k in (("a", 2), ("b", 3), ("c", 1)))
    nested = container({"left": a, "right": (b, [c])})

    def fn(t):
        joined = anp.concatenate([t["left"], t["right"][0], t["right"][1][0]], axis=-1)
        return {"joined": joined, "norm": anp.sqrt((joined**2).sum(axis=1))}

    model = nx(nested, fn)
    assert declared_type(model, model.output) == {
        "joined": TensorType((None, 6)),
        "norm": TensorType((None,)),
    }
    feeds = {
        n: RNG.normal(size=(2, k)).astype(np.float32) for n, k in (("a", 2), ("b", 3), ("c", 1))
    }
    out, _ = run(model, feeds, {})
    joined = np.concatenate([feeds["a"], feeds["b"], feeds["c"]], axis=1)
    np.testing.assert_allclose(out["joined"], joined)
    np.testing.assert_allclose(out["norm"], np.linalg.norm(joined, axis=1), rtol=1e-6)


def test_nx_on_a_graph_whose_output_is_a_tuple_of_nodes():
    a, b = input("a", shape=(2,)), input("b", shape=(2,))
    handle = graph_of((a.output, b.output), {**a.nodes, **b.nodes})
    model = nx(handle, lambda t: t[0] * t[1])
    xa, xb = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    np.testing.assert_array_equal(run(model, {"a": xa, "b": xb}, {})[0], xa * xb)


def test_nx_errors():
    x = input("x", shape=(None, 3))
    with pytest.raises(GraphError, match="function"):
        nx(x, 3)
    with pytest.raises(TraceError, match="must return a tensor"):
        nx(x, lambda t: None)
    with pytest.raises(ShapeError, match="broadcast"):
        nx(x, lambda t: t + anp.ones((4,)))


def _affine(t, w, b, *, mode, scale=1.0):
    y = t @ w + b
    return y * scale if mode == "train" else y


def _affine_model(**opts):
    x = input("x", shape=(None, 3))
    return layer(
        _affine,
        [x, param("w", lambda s: (s[-1], 4)), param("b", (4,), initializer="zeros")],
        name="affine",
        **opts,
    )


def test_custom_layer_params_rule_gives_shapes_and_initializers():
    model = _affine_model(scale=2.0)
    specs = _param_specs(model)
    assert [(s.path, s.shape, s.dtype, s.kind) for s in specs] == [
        (("w",), (3, 4), "f32", "parameter"),
        (("b",), (4,), "f32", "parameter"),
    ]
    assert specs[0].initializer["name"] == "glorot_uniform"
    assert specs[1].initializer == {"name": "zeros"}
    assert dict(model.node.options)["opts"] == {"scale": 2.0}
    assert set(model.node.subgraphs) == {"inference", "train"}


def test_custom_layer_runs_each_mode_with_its_own_trace():
    model = _affine_model(scale=2.0)
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    w = RNG.normal(size=(3, 4)).astype(np.float32)
    b = RNG.normal(size=(4,)).astype(np.float32)
    params = {"affine": {"w": w, "b": b}}
    inference, _ = run(model, {"x": x}, params, "inference")
    train, _ = run(model, {"x": x}, params, "train")
    expected = x.astype(np.float64) @ w + b
    np.testing.assert_allclose(inference, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(train, 2.0 * expected, rtol=1e-5, atol=1e-6)


def test_custom_layer_through_build_initialises_params():
    model = _affine_model()
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 3)))
    params = state.data["affine"] if hasattr(state, "data") else state["affine"]
    assert params["w"].shape == (3, 4) and params["w"].dtype == np.float32
    np.testing.assert_array_equal(params["b"], np.zeros(4, np.float32))
    limit = np.sqrt(6.0 / (3 + 4))
    assert np.all(np.abs(params["w"]) <= limit) and np.std(params["w"]) > 0
    x = RNG.normal(size=(5, 3)).astype(np.float32)
    out = predict_fn(state, x)
    np.testing.assert_allclose(out, x @ params["w"] + params["b"], rtol=1e-5, atol=1e-6)


def test_custom_layer_inputs_keep_the_given_order():
    x = input("x", shape=(None, 2))
    y = input("y", shape=(None, 2))
    model = layer(
        lambda s, a, t, c, mode: s * a - t * c,
        [param("s", (2,)), x, y, param("c", (1,))],
        op_name="mix",
    )
    assert assign_names(model)[model.output] == "mix_0"
    xs, ys = np.ones((1, 2), np.float32), np.full((1, 2), 3.0, np.float32)
    s, c = np.array([2.0, 5.0], np.float32), np.array([0.5], np.float32)
    out, _ = run(model, {"x": xs, "y": ys}, {"mix_0": {"s": s, "c": c}})
    np.testing.assert_allclose(out, s * xs - ys * c)


def test_custom_layer_with_container_input_and_no_graph_input():
    pair = container((input("a", shape=(None, 2)), input("b", shape=(None, 2))))
    model = layer(lambda p, w, mode: (p[0] + p[1]) * w, [pair, param("w", (2,))], name="c")
    xa, xb = np.ones((2, 2), np.float32), np.full((2, 2), 2.0, np.float32)
    w = np.array([1.0, -1.0], np.float32)
    out, _ = run(model, {"a": xa, "b": xb}, {"c": {"w": w}})
    np.testing.assert_allclose(out, (xa + xb) * w)
    only = layer(lambda w, mode: w * 2, [param("w", (3,), initializer="ones")], name="p")
    np.testing.assert_allclose(run(only, {}, {"p": {"w": np.ones(3, np.float32)}})[0], [2, 2, 2])


def test_custom_layer_infers_types_from_concrete_inputs():
    model = _affine_model()
    assert declared_type(model, model.output) == TensorType((None, 4))
    assert _types(model, x=TensorType((7, 3))) == TensorType((7, 4))


def test_custom_layer_errors():
    x = input("x", shape=(None, 3))
    with pytest.raises(OptionError, match="saved with the model"):
        layer(lambda t, mode, f: t, [x], f=np.ones(2))
    with pytest.raises(OptionError, match="mode"):
        layer(lambda t, mode: t, [x], mode="train")
    with pytest.raises(ShapeError, match="fully known"):
        layer(lambda t, w, mode: t * w, [x, param("w", lambda s: s)])
    # on an input without a shape the shape function runs when a template arrives
    deferred = layer(lambda t, w, mode: t * w, [input("u"), param("w", lambda s: s)])
    with pytest.raises(ShapeError, match="fully known"):
        ax.build(deferred)[0](ax.template((2, 3)))
    with pytest.raises(ShapeError, match="both modes"):
        layer(lambda t, mode: t if mode == "train" else t.sum(axis=1), [x])
    with pytest.raises(OptionError, match="unique"):
        layer(lambda t, a, b, mode: t, [x, param("w", (3,)), param("w", (3,))])
    with pytest.raises(GraphError, match="initializer"):
        param("w", (3,), initializer="nope")
    with pytest.raises(GraphError, match="name"):
        param("", (3,))


def test_custom_layer_missing_param_names_the_layer():
    model = _affine_model()
    with pytest.raises(KeyError, match="affine"):
        run(model, {"x": np.ones((1, 3), np.float32)}, {})


def test_function_layers_survive_save_and_load():
    model = _affine_model(scale=3.0)
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    params = {
        "affine": {"w": RNG.normal(size=(3, 4)).astype(np.float32), "b": np.ones(4, np.float32)}
    }
    loaded, _ = from_bytes(to_bytes(model))
    for mode in ("inference", "train"):
        np.testing.assert_array_equal(
            run(loaded, {"x": x}, params, mode)[0], run(model, {"x": x}, params, mode)[0]
        )
    nxm = nx(input("x", shape=(None, 3)), lambda t: t[:, ::-1] * anp.arange(3) + 0.5)
    back, _ = from_bytes(to_bytes(nxm))
    out = run(back, {"x": x}, {})[0]
    np.testing.assert_array_equal(out, run(nxm, {"x": x}, {})[0])
    np.testing.assert_allclose(out, x[:, ::-1] * np.arange(3) + 0.5, rtol=1e-6)
