"""fuse_matmul_add: MatMul + bias Add -> Gemm; exact power-of-two scales into alpha/beta."""

import numpy as np
import pytest
from onnx import helper

import axonc as ax
from axonc.to_onnx.export import to_onnx
from tests.pass_numerics import check_onnx_passes, onnx_model, op_types, random_state

FUSE = ["fuse_matmul_add", "dead_value_elimination_onnx"]
RNG = np.random.default_rng(1)
W = RNG.normal(size=(4, 3)).astype(np.float32)
B = RNG.normal(size=3).astype(np.float32)
X = {"x": RNG.normal(size=(5, 4)).astype(np.float32)}


def matmul_add(x_shape, bias, out_shape, bias_first=False, inputs=()):
    add_in = ["bias", "m"] if bias_first else ["m", "bias"]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", add_in, ["y"])]
    return onnx_model(nodes, [("x", x_shape), *inputs], [("y", out_shape)], {"w": W, "bias": bias})


@pytest.mark.parametrize("bias_first", [False, True])
def test_rank2_matmul_plus_bias_becomes_gemm(bias_first):
    new, changed = check_onnx_passes(matmul_add(["n", 4], B, ["n", 3], bias_first), FUSE, X)
    assert changed
    assert op_types(new) == ["Gemm"]
    assert list(new.graph.node[0].input) == ["x", "w", "bias"]


def test_rank3_matmul_stays():
    x3 = {"x": RNG.normal(size=(2, 5, 4)).astype(np.float32)}
    new, changed = check_onnx_passes(matmul_add(["n", 5, 4], B, ["n", 5, 3]), FUSE, x3)
    assert not changed
    assert op_types(new) == ["MatMul", "Add"]


def test_a_2d_or_fed_bias_stays():
    _, changed = check_onnx_passes(matmul_add(["n", 4], B.reshape(1, 3), ["n", 3]), FUSE, X)
    assert not changed
    fed = matmul_add(["n", 4], B, ["n", 3], inputs=[("bias", [3])])
    _, changed = check_onnx_passes(fed, FUSE, {**X, "bias": B})
    assert not changed


@pytest.mark.parametrize(("scale", "folds"), [(0.5, True), (4.0, True), (0.3, False)])
def test_a_scalar_scale_folds_into_alpha_beta_only_when_a_power_of_two(scale, folds):
    nodes = [
        helper.make_node("Gemm", ["x", "w", "bias"], ["g"]),
        helper.make_node("Mul", ["g", "s"], ["y"]),
    ]
    inits = {"w": W, "bias": B, "s": np.float32(scale)}
    model = onnx_model(nodes, [("x", ["n", 4])], [("y", ["n", 3])], inits)
    new, changed = check_onnx_passes(model, FUSE, X)
    assert changed is folds
    if folds:
        assert op_types(new) == ["Gemm"]
        attrs = {a.name: a.f for a in new.graph.node[0].attribute}
        assert attrs == {"alpha": scale, "beta": scale}
        from tests.onnx_run import session

        exact = session(model).run(None, X)[0]
        np.testing.assert_array_equal(session(new).run(None, X)[0], exact)


def test_exported_rank3_dense_stays_matmul_add():
    x = ax.input("x", (None, 2, 4))
    model = ax.dense(x, 3)
    m = to_onnx(model, random_state(model))
    assert [n.op_type for n in m.graph.node] == ["MatMul", "Add"]
