"""Gradients of the recurrent layers, traced (nx / custom) layers and composites.

- every declared case of lstm, gru, conv_lstm, rnn_initial_state and of the traced
  and composite ops against float64 central finite differences (recurrent ops act
  the same in both modes; custom layers may branch on the mode, so those run in both);
- a dynamic time dim cannot be unrolled: NoGradientError; a mask gets no gradient;
- an ax.layer with ax.param, an nx over a container, a block used twice (shared
  parameters' gradients add up), nested blocks and bidirectional;
- the gradient graphs of an LSTM classifier (zero and random initial state), a GRU
  and a ConvLSTM, exported to ONNX and run on onnxruntime, against the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.autodiff import NoGradientError, gradients, tensor_of
from axonc.build import input_nodes
from axonc.interpreter import run
from axonc.ir import Axon, tree_map
from axonc.registry import OPS
from axonc.to_onnx.export import to_onnx
from tests import golden, gradcheck, onnx_run, op_cases

RECURRENT = ("lstm", "gru", "conv_lstm", "rnn_initial_state")
TRACED = ("nx", "custom", "block", "namespace", "optional", "or_else", "cond", "scoped_body")


def _leaf_outputs(model: Axon) -> Axon:
    """A model whose output is a `container` node as the tree of that node's inputs, so
    the gradient check weights every leaf (it sees a container node as one tensor)."""
    node = model.nodes[model.output]
    if node.op != "container":
        return model
    return Axon(tree_map(lambda i: node.inputs[i], node.options["structure"]), model.nodes)


def _randomize(tree: dict, rng: np.random.Generator) -> None:
    """Random values for every float leaf (biases are zeros after init)."""
    for value in tree.values():
        if isinstance(value, dict):
            _randomize(value, rng)
        elif np.asarray(value).dtype.kind == "f":
            value[...] = rng.normal(scale=0.7, size=np.shape(value))


def _check_case(case, mode: str) -> int:
    model = _leaf_outputs(op_cases.model(case))
    state = ax.build(model, mode=mode, compiler="reference")[0](op_cases.templates(case, 2))
    _randomize(state.data, np.random.default_rng(1))
    feeds = op_cases.feeds(case, 2, seed=0)
    return gradcheck.check_gradients(model, state, feeds, mode, samples=5)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"{name}-{c.name}") for name in RECURRENT for c in OPS[name].cases],
)
def test_recurrent_case_gradients_match_finite_differences(case):
    checked = _check_case(case, "inference")
    # rnn_initial_state has no float parameter or input: its gradient is nothing at all
    assert checked > 0 or case.name in {c.name for c in OPS["rnn_initial_state"].cases}


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"{name}-{c.name}") for name in TRACED for c in OPS[name].cases],
)
def test_traced_and_composite_case_gradients_match_finite_differences(case, mode):
    assert _check_case(case, mode) > 0


def _grads(model: Axon, state, params, input_names=()):
    """Evaluated gradients of sum(leaf outputs) (params by path, inputs by name)."""
    outs = tensor_of(model)
    leaves = outs if isinstance(outs, (tuple, list)) else [outs]
    loss = anp.sum(leaves[0])
    for t in leaves[1:]:
        loss = loss + anp.sum(t)
    ids = {name: input_nodes(model)[name].id for name in input_names}
    grads, cots = gradients(model, loss, state.data, params, inputs=list(ids.values()))
    return grads, {name: cots[i] for name, i in ids.items()}


def _evaluate(tensors: dict, feeds: dict, data: dict) -> dict:
    graph = ax.container({k: Axon(t.graph.output, t.graph.nodes) for k, t in tensors.items()})
    values, _ = run(graph, feeds, data)
    return values


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_a_dynamic_time_dim_has_no_gradient(op):
    x = ax.input("x", (None, None, 3))
    seq, _ = getattr(ax, op)(x, 2, recurrent_initializer="zeros")
    state = ax.build(seq, compiler="reference")[0](ax.template((1, 4, 3)))
    path = ("lstm_0" if op == "lstm" else "gru_0", "input_kernel", "wir" if op == "gru" else "wii")
    with pytest.raises(NoGradientError, match=r"sequence length .* must be static"):
        gradients(seq, anp.sum(tensor_of(seq)), state.data, [path])


def test_conv_lstm_dynamic_time_dim_has_no_gradient():
    seq, _ = ax.conv_lstm(ax.input("x", (None, None, 1, 4)), 2, kernel_size=3)
    state = ax.build(seq, compiler="reference")[0](ax.template((1, 2, 1, 4)))
    with pytest.raises(NoGradientError, match="must be static"):
        gradients(seq, anp.sum(tensor_of(seq)), state.data, [("conv_lstm_0", "bias")])


def test_the_mask_and_its_tokens_get_no_gradient():
    """A float token input feeds only the mask: no cotangent, and no vjp needed for mask."""
    x = ax.input("x", (None, 4, 2))
    tokens = ax.input("tokens", (None, 4))
    seq, _ = ax.lstm(x, 3, recurrent_initializer="zeros", mask=ax.mask(tokens, 0))
    state = ax.build(seq, compiler="reference")[0](
        {"x": ax.template((1, 4, 2)), "tokens": ax.template((1, 4))}
    )
    _, cots = _grads(seq, state, [("lstm_0", "bias", "bi")], ["x", "tokens"])
    assert cots["tokens"] is None and cots["x"] is not None
    # tokens truncate toward zero before the comparison: 0.5 is masked, and a tiny
    # finite-difference step never crosses an integer, so the loss is flat in them
    feeds = {
        "x": np.ones((2, 4, 2), np.float32),
        "tokens": np.array([[1.5, 0.5, 1.5, 1.5]] * 2, "f4"),
    }
    assert gradcheck.check_gradients(seq, state, feeds, "inference") > 0


def test_masked_steps_pass_the_state_gradient_straight_through():
    """With every step masked the LSTM outputs its initial state: d(h)/d(h0) = identity."""
    x, c0, h0 = ax.input("x", (None, 3, 2)), ax.input("c", (None, 2)), ax.input("h", (None, 2))
    tokens = ax.input("tokens", (None, 3), dtype="s32")
    _, (c, h) = ax.lstm(x, (c0, h0), 2, mask=ax.mask(tokens, 0))
    model = ax.container((c, h))
    templates = {"x": ax.template((1, 3, 2)), "c": ax.template((1, 2)), "h": ax.template((1, 2))}
    state = ax.build(model, compiler="reference")[0]({**templates, "tokens": ax.template((1, 3))})
    _, cots = _grads(_leaf_outputs(model), state, [], ["x", "c", "h"])
    feeds = {
        "x": np.ones((2, 3, 2), np.float32),
        "c": np.ones((2, 2), np.float32),
        "h": np.ones((2, 2), np.float32),
        "tokens": np.zeros((2, 3), np.int32),
    }
    values = _evaluate(cots, feeds, state.data)
    np.testing.assert_array_equal(values["x"], np.zeros((2, 3, 2)))
    np.testing.assert_array_equal(values["c"], np.ones((2, 2)))
    np.testing.assert_array_equal(values["h"], np.ones((2, 2)))


def test_custom_layer_param_gradient_has_the_closed_form():
    x = ax.input("x", (None, 3))
    model = ax.layer(
        lambda t, w, b, **_: anp.tanh(t * w) + b, [x, ax.param("w", (3,)), ax.param("b", (3,))]
    )
    state = ax.build(model, compiler="reference")[0](ax.template((1, 3)))
    grads, cots = _grads(model, state, [("custom_0", "w"), ("custom_0", "b")], ["x"])
    xv = np.random.default_rng(0).normal(size=(4, 3))
    values = _evaluate(
        {"w": grads[("custom_0", "w")], "b": grads[("custom_0", "b")], "x": cots["x"]},
        {"x": xv},
        state.data,
    )
    w = np.asarray(state.data["custom_0"]["w"], np.float64)
    slope = 1.0 - np.tanh(xv * w) ** 2
    np.testing.assert_allclose(values["w"], (slope * xv).sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(values["b"], [4.0, 4.0, 4.0])
    np.testing.assert_allclose(values["x"], slope * w, rtol=1e-5)


def test_nx_over_a_container_differentiates_each_leaf():
    a, b = ax.input("a", (None, 3)), ax.input("b", (None, 3))
    model = ax.nx(ax.container((a.dense(3), b)), lambda p: p[0] * anp.tanh(p[1]))
    state = ax.build(model, compiler="reference")[0](
        {"a": ax.template((1, 3)), "b": ax.template((1, 3))}
    )
    rng = np.random.default_rng(2)
    feeds = {"a": rng.normal(size=(3, 3)), "b": rng.normal(size=(3, 3))}
    assert gradcheck.check_gradients(model, state, feeds, "inference") > 10


def test_a_block_used_twice_sums_its_shared_parameter_gradients():
    x = ax.input("x", (None, 3))
    shared = ax.block(lambda h: h.dense(2, use_bias=False), name="proj")
    model = ax.container((shared(x), shared(x.nx(lambda t: 2.0 * t))))
    state = ax.build(model, compiler="reference")[0](ax.template((1, 3)))
    assert set(state.data) == {"proj"}
    path = ("proj", "dense_0", "kernel")
    grads, _ = _grads(_leaf_outputs(model), state, [path])
    xv = np.random.default_rng(3).normal(size=(5, 3))
    values = _evaluate({"k": grads[path]}, {"x": xv}, state.data)
    # d/dK sum(x K) + sum(2x K) = (sum_batch x + 2 sum_batch x) for each output column
    np.testing.assert_allclose(values["k"], np.tile(3 * xv.sum(axis=0)[:, None], (1, 2)), rtol=1e-5)
    assert gradcheck.check_gradients(_leaf_outputs(model), state, {"x": xv}, "inference") > 0


def test_nested_blocks_scope_parameters_by_both_names():
    x = ax.input("x", (None, 3))
    inner = ax.block(lambda h: h.dense(3, activation="tanh"), name="inner")
    outer = ax.block(lambda h: inner(inner(h)).dense(2), name="outer")
    model = outer(x).softmax()
    state = ax.build(model, compiler="reference")[0](ax.template((1, 3)))
    assert set(state.data["outer"]) == {"inner", "dense_0"}
    _randomize(state.data, np.random.default_rng(4))
    xv = np.random.default_rng(5).normal(size=(4, 3))
    assert gradcheck.check_gradients(model, state, {"x": xv}, "inference") > 10


def test_bidirectional_lstm_gradients():
    x = ax.input("x", (None, 4, 2))
    model = ax.bidirectional(
        x,
        lambda h: ax.lstm(h, 3, recurrent_initializer="zeros")[0],
        lambda f, b: anp.concatenate([f, b], axis=-1),
        name="birnn",
    ).dense(2)
    state = ax.build(model, compiler="reference")[0](ax.template((1, 4, 2)))
    assert "lstm_0" in state.data["birnn"]
    _randomize(state.data, np.random.default_rng(6))
    xv = np.random.default_rng(7).normal(size=(3, 4, 2))
    assert gradcheck.check_gradients(model, state, {"x": xv}, "inference", samples=4) > 40


def _param_paths(tree: dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in tree.items():
        out += _param_paths(v, (*prefix, k)) if isinstance(v, dict) else [(*prefix, k)]
    return out


def _classifier(kind: str) -> tuple[Axon, tuple[int, ...]]:
    if kind == "conv_lstm":
        x = ax.input("x", (None, 3, 2, 5))
        _, (_, h) = ax.conv_lstm(x, 2, kernel_size=3, recurrent_initializer="zeros")
        return h.flatten().dense(3).softmax(), (3, 2, 5)
    x = ax.input("x", (None, 5, 3))
    if kind == "gru":
        seq, _ = ax.gru(x, 4, recurrent_initializer="zeros", unroll="static")
        return seq.nx(lambda s: s[:, -1]).dense(3).softmax(), (5, 3)
    init = "zeros" if kind == "lstm_zeros" else "glorot_uniform"
    _, (_, h) = ax.lstm(x, 4, recurrent_initializer=init)
    return h.dense(3).softmax(), (5, 3)


@pytest.mark.parametrize("kind", ["lstm_zeros", "lstm_random_state", "gru", "conv_lstm"])
def test_recurrent_classifier_gradient_graph_lowers_to_onnx(kind):
    model, shape = _classifier(kind)
    state = ax.build(model, compiler="reference")[0](ax.template((1, *shape)))
    _randomize(state.data, np.random.default_rng(8))
    loss = -anp.sum(anp.log(tensor_of(model)[:, 0]))  # cross-entropy, every label class 0
    params = _param_paths(state.data)
    x_id = input_nodes(model)["x"].id
    grads, cots = gradients(model, loss, state.data, params, mode="inference", inputs=[x_id])
    leaves = {"/".join(p): g for p, g in grads.items()}
    leaves["x"] = cots[x_id]
    graph = ax.container({k: Axon(t.graph.output, t.graph.nodes) for k, t in leaves.items()})
    onnx_model = to_onnx(graph, state, mode="inference")
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3):
        feeds = {"x": np.random.default_rng(batch).normal(size=(batch, *shape)).astype("f4")}
        expected, _ = run(graph, feeds, state.data, "inference")
        got, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        golden.assert_tree_close(got, expected, rtol=1e-4, atol=1e-5)
        assert any(np.abs(v).max() > 0 for v in expected.values())
