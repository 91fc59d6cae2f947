"""Linear layers (bias, dense, bilinear, embedding): params, shapes, numerics, goldens, errors."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.dtypes import TensorType
from axonc.errors import InputError, OptionError, ShapeError
from axonc.interpreter import run
from axonc.ir import assign_names
from axonc.registry import get_op
from axonc.shape_inference import declared_type
from tests import golden

RNG = np.random.default_rng(1)


def _layer_node(model, op):
    return next(n for n in model.nodes.values() if n.op == op)


def _params(model, op):
    node = _layer_node(model, op)
    types = [declared_type(model, i) for i in node.inputs]
    return {s.path: s for s in get_op(op).params(types, dict(node.options), "inference", node)}


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# --- bias ---------------------------------------------------------------------------------


def test_bias_param_and_forward():
    m = ax.bias(ax.input("x", (None, 3, 4)))
    spec = _params(m, "bias")[("bias",)]
    assert spec.shape == (4,) and spec.initializer["name"] == "zeros" and spec.kind == "parameter"
    assert declared_type(m, m.output) == TensorType((None, 3, 4))
    x, b = _f32(2, 3, 4), _f32(4)
    out, _ = run(m, {"x": x}, {"bias_0": {"bias": b}})
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], [x[i, j, c] + b[c] for c in range(4)], rtol=1e-6)


def test_bias_initializer_option_and_unknown_last_dim():
    m = ax.bias(ax.input("x", (None, 2)), bias_initializer="ones")
    assert _params(m, "bias")[("bias",)].initializer["name"] == "ones"
    with pytest.raises(ShapeError, match="last dim of the input must be known"):
        ax.bias(ax.input("x", (None, None)))


# --- dense --------------------------------------------------------------------------------


def test_dense_defaults_and_params():
    m = ax.dense(ax.input("x", (None, 6)), 4)
    opts = m.node.options
    assert opts["use_bias"] is True
    assert opts["kernel_initializer"]["name"] == "glorot_uniform"
    assert opts["bias_initializer"]["name"] == "zeros"
    specs = _params(m, "dense")
    assert list(specs) == [("kernel",), ("bias",)]
    assert specs[("kernel",)].shape == (6, 4) and specs[("bias",)].shape == (4,)
    assert specs[("kernel",)].dtype == "f32"
    assert declared_type(m, m.output) == TensorType((None, 4))


def test_dense_use_bias_false_and_custom_initializers():
    m = ax.dense(ax.input("x", (None, 6)), 2, use_bias=False, kernel_initializer="zeros")
    specs = _params(m, "dense")
    assert list(specs) == [("kernel",)]
    assert specs[("kernel",)].initializer["name"] == "zeros"


@pytest.mark.parametrize("shape", [(2, 5), (2, 3, 5), (2, 3, 4, 5)])
def test_dense_contracts_last_axis(shape):
    m = ax.dense(ax.input("x", (None, *shape[1:])), 3)
    assert declared_type(m, m.output).shape == (None, *shape[1:-1], 3)
    x, k, b = _f32(*shape), _f32(5, 3), _f32(3)
    out, _ = run(m, {"x": x}, {"dense_0": {"kernel": k, "bias": b}})
    assert out.shape == (*shape[:-1], 3) and out.dtype == np.float32
    flat = x.reshape(-1, 5).astype(np.float64)
    expected = np.array(
        [[sum(row[i] * k[i, o] for i in range(5)) + b[o] for o in range(3)] for row in flat]
    )
    np.testing.assert_allclose(out.reshape(-1, 3), expected, rtol=1e-5, atol=1e-6)


def test_dense_activation_is_separate_layer():
    m = ax.dense(ax.input("x", (None, 4)), 3, activation="tanh")
    names = assign_names(m)
    assert names[m.output] == "tanh_0"
    assert names[m.node.inputs[0]] == "dense_0"
    x, k = _f32(5, 4), _f32(4, 3)
    out, _ = run(m, {"x": x}, {"dense_0": {"kernel": k, "bias": np.zeros(3, np.float32)}})
    np.testing.assert_allclose(out, np.tanh(x.astype(np.float64) @ k), rtol=1e-5, atol=1e-6)


def test_dense_errors():
    with pytest.raises(ShapeError, match="rank >= 2"):
        ax.dense(ax.input("x", (None,)), 3)
    with pytest.raises(ShapeError, match="last dim of the input must be known"):
        ax.dense(ax.input("x", (None, None)), 3)
    with pytest.raises(OptionError, match="units"):
        ax.dense(ax.input("x", (None, 4)), 0)
    with pytest.raises(OptionError, match="use_bias"):
        ax.dense(ax.input("x", (None, 4)), 2, use_bias="no")
    with pytest.raises(OptionError, match="unknown activation"):
        ax.dense(ax.input("x", (None, 4)), 2, activation="nope")


# --- bilinear -----------------------------------------------------------------------------


def test_bilinear_params_and_shape():
    m = ax.bilinear(ax.input("a", (None, 3)), ax.input("b", (None, 4)), 2)
    specs = _params(m, "bilinear")
    assert specs[("kernel",)].shape == (2, 3, 4) and specs[("bias",)].shape == (2,)
    assert declared_type(m, m.output) == TensorType((None, 2))
    m = ax.bilinear(ax.input("a", (None, 3)), ax.input("b", (None, 4)), 2, use_bias=False)
    assert list(_params(m, "bilinear")) == [("kernel",)]


def test_bilinear_matches_loops_rank2_and_rank3():
    a, c, k, b = _f32(3, 3), _f32(3, 4), _f32(2, 3, 4), _f32(2)
    m = ax.bilinear(ax.input("a", (None, 3)), ax.input("b", (None, 4)), 2)
    out, _ = run(m, {"a": a, "b": c}, {"bilinear_0": {"kernel": k, "bias": b}})
    expected = np.zeros((3, 2))
    for n in range(3):
        for o in range(2):
            expected[n, o] = b[o] + sum(
                float(a[n, i]) * float(k[o, i, j]) * float(c[n, j])
                for i in range(3)
                for j in range(4)
            )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # rank 3: the same formula at every leading position
    a3, c3 = _f32(2, 5, 3), _f32(2, 5, 4)
    m3 = ax.bilinear(ax.input("a", (None, 5, 3)), ax.input("b", (None, None, 4)), 2, use_bias=False)
    assert declared_type(m3, m3.output).shape == (None, 5, 2)
    out3, _ = run(m3, {"a": a3, "b": c3}, {"bilinear_0": {"kernel": k}})
    for n in range(2):
        for t in range(5):
            want = [
                a3[n, t].astype(np.float64) @ k[o].astype(np.float64) @ c3[n, t] for o in range(2)
            ]
            np.testing.assert_allclose(out3[n, t], want, rtol=1e-5, atol=1e-5)


def test_bilinear_errors():
    with pytest.raises(ShapeError, match="dim 1 is 5 in input1"):
        ax.bilinear(ax.input("a", (None, 5, 3)), ax.input("b", (None, 6, 4)), 2)
    with pytest.raises(ShapeError, match="same rank"):
        ax.bilinear(ax.input("a", (None, 5, 3)), ax.input("b", (None, 4)), 2)
    with pytest.raises(ShapeError, match="rank >= 2"):
        ax.bilinear(ax.input("a", (None,)), ax.input("b", (None,)), 2)
    with pytest.raises(ShapeError, match="dim 0 is 2"):
        ax.bilinear(ax.input("a", (2, 3)), ax.input("b", (3, 4)), 2)


# --- embedding ----------------------------------------------------------------------------


def test_embedding_params_shape_and_dtype():
    m = ax.embedding(ax.input("x", (None, 5), dtype="s64"), 10, 4)
    spec = _params(m, "embedding")[("kernel",)]
    assert spec.shape == (10, 4) and spec.initializer["name"] == "uniform"
    assert declared_type(m, m.output) == TensorType((None, 5, 4), "f32")
    m = ax.embedding(ax.input("x", (None,), dtype="u8"), 3, 2, kernel_initializer="normal")
    assert declared_type(m, m.output) == TensorType((None, 2), "f32")
    assert _params(m, "embedding")[("kernel",)].initializer["name"] == "normal"


def test_embedding_gathers_rows():
    m = ax.embedding(ax.input("x", (None, 2, 3), dtype="s32"), 6, 3)
    ids = np.array([[[0, 5, 2], [1, 1, 3]]], np.int32)
    table = _f32(6, 3)
    out, _ = run(m, {"x": ids}, {"embedding_0": {"kernel": table}})
    assert out.shape == (1, 2, 3, 3) and out.dtype == np.float32
    for idx in np.ndindex(ids.shape):
        np.testing.assert_array_equal(out[idx], table[ids[idx]])


@pytest.mark.parametrize("bad", [6, -1])
def test_embedding_out_of_range_id_raises(bad):
    m = ax.embedding(ax.input("x", (None, 3), dtype="s64"), 6, 2)
    ids = np.array([[0, bad, 1]], np.int64)
    with pytest.raises(InputError, match=rf"token id {bad} is out of range .* 6 rows"):
        run(m, {"x": ids}, {"embedding_0": {"kernel": _f32(6, 2)}})


def test_embedding_errors():
    with pytest.raises(ShapeError, match="integer token ids"):
        ax.embedding(ax.input("x", (None, 5), dtype="f32"), 10, 4)
    # without a declared dtype the ids' dtype comes from the template or data
    init, _ = ax.build(ax.embedding(ax.input("x", (None, 5)), 10, 4))
    with pytest.raises(ShapeError, match="integer token ids"):
        init(ax.template((1, 5), "f32"))
    with pytest.raises(OptionError, match="vocab_size"):
        ax.embedding(ax.input("x", (None, 5), dtype="s32"), 0, 4)
    with pytest.raises(OptionError, match="embedding_size"):
        ax.embedding(ax.input("x", (None, 5), dtype="s32"), 3, 2.5)


# --- golden files (real Axon 0.8.1) -------------------------------------------------------

GOLDEN = {
    "dense_no_bias": lambda i: ax.dense(i["x"], 3, use_bias=False),
    "dense_relu": lambda i: ax.dense(i["x"], 3, activation="relu"),
    "bilinear": lambda i: ax.bilinear(i["a"], i["b"], 2),
    "bilinear_no_bias": lambda i: ax.bilinear(i["a"], i["b"], 2, use_bias=False),
    "embedding": lambda i: ax.embedding(i["x"], 10, 4),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden(case):
    data = golden.load(case)
    xs = golden.inputs(data)
    handles = {name: ax.input(name, (None, *x.shape[1:]), dtype=x.dtype) for name, x in xs.items()}
    m = GOLDEN[case](handles)
    params = golden.tree(data["params"])
    (layer,) = params
    op = layer.rsplit("_", 1)[0]
    specs = _params(m, op)
    assert {p[0]: s.shape for p, s in specs.items()} == {
        k: v.shape for k, v in params[layer].items()
    }
    out, _ = run(m, xs, params)
    golden.assert_tree_close(out, golden.tree(data["outputs"]), rtol=1e-5, atol=1e-6)


def test_golden_cases_cover_every_linear_file():
    assert golden.case_names(("dense", "bilinear", "embedding")) == sorted(GOLDEN)
