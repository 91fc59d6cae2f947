"""Reverse-mode autodiff over the IR, checked against finite differences and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.autodiff import NoGradientError, gradients, tensor_of
from axonc.interpreter import run
from tests import gradcheck


def _mlp():
    x = ax.input("x", (None, 3))
    return x.dense(4, activation="tanh").dense(2).softmax()


def test_dense_gradient_has_the_closed_form():
    model = ax.input("x", (None, 3)).dense(2)
    state = ax.build(model, compiler="reference")[0](ax.template((1, 3)))
    x = np.random.default_rng(0).normal(size=(5, 3))
    loss = anp.sum(tensor_of(model))
    grads, _ = gradients(model, loss, state.data, [("dense_0", "kernel"), ("dense_0", "bias")])
    graph = ax.container(
        {
            k: ax.Axon(g.graph.output, g.graph.nodes)
            for k, g in {"k": grads[("dense_0", "kernel")], "b": grads[("dense_0", "bias")]}.items()
        }
    )
    values, _ = run(graph, {"x": x}, state.data)
    np.testing.assert_allclose(values["k"], np.tile(x.sum(axis=0)[:, None], (1, 2)), rtol=1e-6)
    np.testing.assert_allclose(values["b"], [5.0, 5.0])


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_mlp_gradients_match_finite_differences(mode):
    model = _mlp()
    state = ax.build(model, mode=mode, compiler="reference")[0](ax.template((1, 3)))
    x = np.random.default_rng(1).normal(size=(4, 3))
    assert gradcheck.check_gradients(model, state, {"x": x}, mode) > 10


def test_ops_without_a_gradient_rule_are_named():
    from axonc.registry import OPS, Op, register

    class NoGrad(Op):
        name = "test_no_grad"
        family = "test"

        def infer(self, types, opts, node):
            return types[0]

    register(NoGrad)
    try:
        from axonc.shape_inference import make_node

        model = make_node("test_no_grad", [ax.input("x", (None, 2)).dense(2)])
        state = ax.build(model, compiler="reference")[0](ax.template((1, 2)))
        with pytest.raises(NoGradientError, match="test_no_grad"):
            gradients(model, anp.sum(tensor_of(model)), state.data, [("dense_0", "kernel")])
    finally:
        del OPS["test_no_grad"]
