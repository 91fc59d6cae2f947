"""ONNX lowering of the recurrent family (lstm, gru, conv_lstm, mask), run on onnxruntime.

The reference interpreter and the real-Axon golden files are the oracles; these
tests add the newest opset, a dynamic time dimension, the lowering chosen for
each configuration and the host-drawn random initial state.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import axonc as ax
from axonc.registry import OPS
from axonc.to_onnx.export import max_opset, to_onnx
from tests import golden, onnx_run, op_cases
from tests.test_conformance import CASES

# Declared cases whose initial state is drawn from a random recurrent_initializer:
# a graph input the runtime draws (see test_random_initial_state_is_a_host_drawn_input).
RANDOM_STATE = {("lstm", "random_state_static"), ("gru", "random_state_static")}
RANDOM_STATE |= {("conv_lstm", "k1_random_state")}
FAMILY = ("lstm", "gru", "conv_lstm", "mask")
EXPORTABLE = [
    pytest.param(name, case, id=f"{name}-{case.name}")
    for name in FAMILY
    for case in OPS[name].cases
]


def _leaves(tree: Any) -> list[np.ndarray]:
    if isinstance(tree, (tuple, list)):
        return [leaf for t in tree for leaf in _leaves(t)]
    return [np.asarray(tree)]


def _assert_close(actual: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    got, want = _leaves(actual), _leaves(expected)
    assert len(got) == len(want)
    for i, (a, e) in enumerate(zip(got, want, strict=True)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"leaf {i}: {a.shape} {a.dtype}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"leaf {i}")


def _op_types(graph: Any) -> list[str]:
    """Every node's op type, Scan/Loop bodies included."""
    out = []
    for node in graph.node:
        out.append(node.op_type)
        for attr in node.attribute:
            if attr.g.node:
                out += _op_types(attr.g)
    return out


def _case(op: str, name: str):
    return next(c for c in OPS[op].cases if c.name == name)


def _export(model: ax.Axon, templates: dict, opset: int = 17):
    init_fn, predict_fn = ax.build(model, compiler="reference")
    state = init_fn(templates)
    return to_onnx(model, state, opset=opset), state, predict_fn


@pytest.mark.parametrize(("op", "case"), EXPORTABLE)
def test_declared_case_matches_reference_at_newest_opset(op, case):
    model = op_cases.model(case)
    onnx_model, state, predict_fn = _export(model, op_cases.templates(case, 1), max_opset())
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3, 17):
        feeds = op_cases.feeds(case, batch, seed=batch + 10)
        prediction, new_state = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        _assert_close(prediction, predict_fn(state, feeds))
        assert new_state == {}


@pytest.mark.parametrize(
    ("op", "case", "present", "absent"),
    [
        ("lstm", "zeros_state", {"LSTM"}, {"Scan"}),
        ("lstm", "relu_hard_sigmoid", {"LSTM"}, {"Scan"}),
        ("lstm", "masked", {"Scan", "Where"}, {"LSTM"}),
        ("lstm", "masked_static", {"Where", "Gather"}, {"LSTM", "Scan"}),
        ("lstm", "elu_hard_sigmoid_full_state", {"Scan", "Elu", "HardSigmoid"}, {"LSTM"}),
        ("gru", "no_bias", {"GRU"}, {"Scan"}),
        ("gru", "identity_state_hard_sigmoid", {"GRU", "EyeLike"}, {"Scan"}),
        ("gru", "masked_long", {"Scan"}, {"GRU"}),
        ("conv_lstm", "k3_zeros_state", {"Scan", "Conv"}, {"LSTM"}),
        ("conv_lstm", "conv1d_negative_padding_static", {"Slice", "Conv"}, {"Scan"}),
        ("mask", "floats", {"Equal", "Cast"}, set()),
    ],
)
def test_each_configuration_takes_its_lowering(op, case, present, absent):
    c = _case(op, case)
    onnx_model, _, _ = _export(op_cases.model(c), op_cases.templates(c, 1))
    types = set(_op_types(onnx_model.graph))
    assert present <= types and not absent & types


def test_onnx_rnn_attributes_follow_axon_gates():
    c = _case("lstm", "relu_hard_sigmoid")
    lstm_node = next(
        n
        for n in _export(op_cases.model(c), op_cases.templates(c, 1))[0].graph.node
        if n.op_type == "LSTM"
    )
    attrs = {a.name: a for a in lstm_node.attribute}
    assert [s.decode() for s in attrs["activations"].strings] == ["HardSigmoid", "Relu", "Relu"]
    # Axon's hard_sigmoid defaults, in every slot (runtimes disagree on slot consumption)
    np.testing.assert_allclose(attrs["activation_alpha"].floats, [0.2] * 3)
    np.testing.assert_allclose(attrs["activation_beta"].floats, [0.2] * 3)
    c = _case("gru", "zeros_state")
    gru_node = next(
        n
        for n in _export(op_cases.model(c), op_cases.templates(c, 1))[0].graph.node
        if n.op_type == "GRU"
    )
    assert {a.name: a.i for a in gru_node.attribute}["linear_before_reset"] == 1


def _dynamic_time_models() -> dict[str, ax.Axon]:
    def x():
        return ax.input("x", shape=(None, None, 2))

    def tokens():
        return ax.input("tokens", shape=(None, None), dtype="s64")

    def masked(kind):
        seq, state = getattr(ax, kind)(
            x(), 3, recurrent_initializer="zeros", mask=ax.mask(tokens(), 0)
        )
        return ax.container((seq, state))

    conv_x = ax.input("x", shape=(None, None, 2, 3, 3))
    return {
        "lstm_onnx_op": ax.container(ax.lstm(x(), 3, recurrent_initializer="zeros")),
        "lstm_masked_scan": masked("lstm"),
        "gru_onnx_op": ax.container(ax.gru(x(), 3, recurrent_initializer="ones")),
        "gru_masked_scan": masked("gru"),
        "gru_elu_scan": ax.container(
            ax.gru(x(), 3, activation="elu", gate="hard_sigmoid", recurrent_initializer="zeros")
        ),
        "conv_lstm_scan": ax.container(
            ax.conv_lstm(conv_x, 2, kernel_size=3, recurrent_initializer="zeros")
        ),
    }


@pytest.mark.parametrize("name", sorted(_dynamic_time_models()))
def test_one_export_serves_every_sequence_length(name):
    model = _dynamic_time_models()[name]
    is_conv = name.startswith("conv")
    templates = {"x": ax.template((1, 4, 2, 3, 3) if is_conv else (1, 4, 2), "f32")}
    if "masked" in name:
        templates["tokens"] = ax.template((1, 4), "s64")
    onnx_model, state, predict_fn = _export(model, templates, max_opset())
    time_dim = onnx_model.graph.input[0].type.tensor_type.shape.dim[1]
    assert time_dim.dim_param == "x_dim1"
    sess = onnx_run.session(onnx_model)
    rng = np.random.default_rng(5)
    for batch, steps in [(1, 1), (3, 2), (2, 7)]:
        shape = (batch, steps, 2, 3, 3) if is_conv else (batch, steps, 2)
        feeds = {"x": rng.normal(size=shape).astype(np.float32)}
        if "masked" in name:
            feeds["tokens"] = rng.integers(0, 3, size=(batch, steps))
        prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        _assert_close(prediction, predict_fn(state, feeds))


@pytest.mark.parametrize(("op", "case"), sorted(RANDOM_STATE))
def test_random_initial_state_is_a_host_drawn_input(op, case):
    c = _case(op, case)
    model = op_cases.model(c)
    state = ax.build(model, compiler="reference")[0](op_cases.templates(c, 1))
    onnx_model = to_onnx(model, state)
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    random_inputs = json.loads(meta["axonc.random_inputs"])
    assert list(random_inputs) == [f"{op}_0/initial_state"]
    spec = random_inputs[f"{op}_0/initial_state"]
    assert spec["initializer"]["name"] == "glorot_uniform"
    assert spec["shape"][0] is None
    assert f"{op}_0/initial_state" in {i.name for i in onnx_model.graph.input}


def test_mask_truncates_float_tokens_toward_zero():
    model = ax.mask(ax.input("x", shape=(None, 6)), 1)
    onnx_model, state, _ = _export(model, {"x": ax.template((1, 6), "f32")})
    x = np.array([[-1.7, -1.0, 0.3, 1.0, 1.9, 2.0]], dtype=np.float32)
    out, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), {"x": x}, state.data, 1)
    np.testing.assert_array_equal(out, np.array([[0, 0, 0, 1, 1, 0]], dtype=np.uint8))


GOLDEN = [n for n in sorted(CASES) if n.startswith(("lstm_", "gru_", "conv_lstm_"))]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_case_matches_axon_through_onnx(name):
    case = golden.load(name)
    model = CASES[name]()
    inputs = golden.inputs(case)
    init_fn, _ = ax.build(model, mode=case["mode"], compiler="reference")
    templates = {k: ax.template(v.shape, v.dtype) for k, v in inputs.items()}
    state = init_fn(templates, golden.tree(case["params"]))
    onnx_model = to_onnx(model, state, mode=case["mode"], opset=max_opset())
    batch = next(iter(inputs.values())).shape[0]
    prediction, _ = onnx_run.run(
        onnx_model, onnx_run.session(onnx_model), inputs, state.data, batch
    )
    golden.assert_tree_close(prediction, golden.tree(case["outputs"]), rtol=1e-5, atol=1e-5)


def test_golden_cases_cover_every_recurrent_op():
    assert {n.split("_")[0] for n in GOLDEN} >= {"lstm", "gru", "conv"}
    assert "gru_with_mask" in GOLDEN
