"""fold_batch_norm: inference batch norm folds into the dense / conv layer right before it."""

import numpy as np
import pytest

import axonc as ax
from axonc.model_state import ModelState
from tests.pass_numerics import check_ir_passes, random_state

FOLD = ["fold_batch_norm"]


def ops(model):
    return sorted(n.op for n in model.nodes.values())


def test_dense_then_batch_norm_folds_with_the_formula_parameters():
    x = ax.input("x", (None, 4))
    model = ax.batch_norm(ax.dense(x, 3), epsilon=1e-3)
    state = random_state(model)
    new, new_state, changed = check_ir_passes(model, state, FOLD)
    assert changed
    assert ops(new) == ["dense", "input"]
    k, b = state.get("dense_0/kernel"), state.get("dense_0/bias")
    gamma, beta = state.get("batch_norm_0/gamma"), state.get("batch_norm_0/beta")
    mean, var = state.get("batch_norm_0/mean"), state.get("batch_norm_0/var")
    for j in range(3):  # one output unit at a time, written out
        s = gamma[j] / np.sqrt(np.float64(var[j]) + 1e-3)
        np.testing.assert_allclose(new_state.get("dense_0/kernel")[:, j], k[:, j] * s, rtol=1e-6)
        expected_bias = (b[j] - mean[j]) * s + beta[j]
        np.testing.assert_allclose(new_state.get("dense_0/bias")[j], expected_bias, rtol=1e-6)


def test_the_batch_norm_layer_and_its_state_leaves_go_away():
    x = ax.input("x", (None, 4))
    model = ax.batch_norm(ax.dense(x, 3))
    _, new_state, _ = check_ir_passes(model, random_state(model), FOLD)
    assert set(new_state.data) == {"dense_0"}
    assert new_state.state == frozenset()
    assert set(new_state.parameters) == {("dense_0", "kernel"), ("dense_0", "bias")}


def test_a_dense_without_bias_gets_one():
    x = ax.input("x", (None, 5))
    model = ax.batch_norm(ax.dense(x, 2, use_bias=False))
    new, new_state, changed = check_ir_passes(model, random_state(model), FOLD)
    assert changed
    (dense,) = [n for n in new.nodes.values() if n.op == "dense"]
    assert dense.options["use_bias"] is True
    assert new_state.get("dense_0/bias").shape == (2,)
    assert ("dense_0", "bias") in new_state.parameters


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (lambda x: ax.conv(x, 3, kernel_size=2), (None, 5, 5, 2)),
        (lambda x: ax.conv(x, 3, kernel_size=2, channels="first"), (None, 2, 5, 5)),
        (lambda x: ax.conv(x, 4, kernel_size=3, use_bias=False), (None, 6, 3)),
        (lambda x: ax.conv_transpose(x, 3, kernel_size=2, strides=2), (None, 3, 3, 2)),
        (lambda x: ax.depthwise_conv(x, 2, kernel_size=2, channels="first"), (None, 2, 4, 4)),
        (lambda x: ax.conv(x, 2, kernel_size=(2, 1, 2)), (None, 3, 3, 3, 2)),
    ],
    ids=["conv2d_last", "conv2d_first", "conv1d_no_bias", "conv_transpose", "depthwise_first",
         "conv3d"],
)  # fmt: skip
def test_conv_layers_fold_on_their_output_channel_axis(build, shape):
    x = ax.input("x", shape)
    y = build(x)
    channels_first = any(
        n.options.get("channels") == "first" for n in y.nodes.values() if n.op != "input"
    )
    model = ax.batch_norm(y, channel_index=1 if channels_first else -1)
    new, _, changed = check_ir_passes(model, random_state(model), FOLD)
    assert changed
    assert "batch_norm" not in ops(new)


def test_a_batch_norm_on_another_axis_does_not_fold():
    x = ax.input("x", (None, 4, 4, 2))
    model = ax.batch_norm(ax.conv(x, 4, kernel_size=1), channel_index=1)
    _, _, changed = check_ir_passes(model, random_state(model), FOLD)
    assert not changed


def test_dense_with_a_positive_channel_index_on_its_last_axis_folds():
    x = ax.input("x", (None, 4))
    model = ax.batch_norm(ax.dense(x, 3), channel_index=1)
    _, _, changed = check_ir_passes(model, random_state(model), FOLD)
    assert changed


def test_a_layer_read_by_something_else_too_does_not_fold():
    x = ax.input("x", (None, 4))
    d = ax.dense(x, 3)
    model = ax.add(ax.batch_norm(d), d)
    _, _, changed = check_ir_passes(model, random_state(model), FOLD)
    assert not changed


def test_never_across_an_activation():
    x = ax.input("x", (None, 4))
    model = ax.batch_norm(ax.relu(ax.dense(x, 3)))
    _, _, changed = check_ir_passes(model, random_state(model), FOLD)
    assert not changed


def test_two_batch_norms_in_a_row_both_fold():
    x = ax.input("x", (None, 4))
    model = ax.batch_norm(ax.batch_norm(ax.dense(x, 3)))
    new, new_state, changed = check_ir_passes(model, random_state(model), FOLD)
    assert changed
    assert ops(new) == ["dense", "input"]
    assert set(new_state.data) == {"dense_0"}


def test_other_batch_norms_keep_their_names_and_state():
    x = ax.input("x", (None, 4))
    first = ax.batch_norm(ax.dense(x, 3))  # folds
    model = ax.batch_norm(ax.relu(first))  # stays: after an activation
    new, new_state, _ = check_ir_passes(model, random_state(model), FOLD)
    (bn,) = [n for n in new.nodes.values() if n.op == "batch_norm"]
    assert bn.name == "batch_norm_1"
    assert set(new_state.data) == {"dense_0", "batch_norm_1"}


def test_the_pass_is_inference_only():
    from axonc.passes import PASSES

    assert PASSES["fold_batch_norm"].modes == ("inference",)
    assert PASSES["fold_batch_norm"].level == 2


def test_a_tied_kernel_is_left_alone():
    x = ax.input("x", (None, 3))
    d0 = ax.dense(x, 3, use_bias=False)
    model = ax.batch_norm(ax.dense(d0, 3, use_bias=False))
    state = random_state(model)
    tied = ModelState(
        state.data,
        state=state.state,
        ties={("dense_1", "kernel"): (("dense_0", "kernel"), "transpose")},
    )
    _, _, changed = check_ir_passes(model, tied, FOLD)
    assert not changed


def test_frozen_kernel_makes_the_new_bias_frozen():
    x = ax.input("x", (None, 3))
    model = ax.batch_norm(ax.dense(x, 2, use_bias=False))
    state = random_state(model).freeze(lambda path: path[0] == "dense_0")
    _, new_state, _ = check_ir_passes(model, state, FOLD)
    assert ("dense_0", "bias") in new_state.frozen


def test_a_batch_norm_before_a_dense_folds_forward_with_the_formula_parameters():
    x = ax.input("x", (None, 4))
    model = ax.dense(ax.batch_norm(ax.relu(ax.dense(x, 3)), epsilon=1e-3), 2)
    state = random_state(model)
    new, new_state, changed = check_ir_passes(model, state, FOLD)
    assert changed
    assert ops(new) == ["dense", "dense", "input", "relu"]
    k, b = state.get("dense_1/kernel"), state.get("dense_1/bias")
    gamma, beta = state.get("batch_norm_0/gamma"), state.get("batch_norm_0/beta")
    mean, var = state.get("batch_norm_0/mean"), state.get("batch_norm_0/var")
    for j in range(2):  # one output unit at a time, written out
        s = gamma / np.sqrt(var.astype(np.float64) + 1e-3)
        np.testing.assert_allclose(new_state.get("dense_1/kernel")[:, j], s * k[:, j], rtol=1e-6)
        expected_bias = b[j] + sum((beta[i] - s[i] * mean[i]) * k[i, j] for i in range(3))
        np.testing.assert_allclose(new_state.get("dense_1/bias")[j], expected_bias, rtol=1e-5)
    assert set(new_state.data) == {"dense_0", "dense_1"}


def test_the_forward_fold_sees_through_inference_dropout():
    x = ax.input("x", (None, 6))
    model = ax.dense(ax.dropout(ax.batch_norm(ax.relu(ax.dense(x, 5))), rate=0.5), 3)
    passes = ["specialize_mode", "dead_node_elimination", *FOLD]  # as the pipeline runs them
    new, _, _ = check_ir_passes(model, random_state(model), passes)
    assert ops(new) == ["dense", "dense", "input", "relu"]


def test_a_dense_without_bias_gets_one_from_a_forward_fold():
    x = ax.input("x", (None, 4))
    model = ax.dense(ax.batch_norm(ax.tanh(x)), 3, use_bias=False)
    new, new_state, changed = check_ir_passes(model, random_state(model), FOLD)
    assert changed
    (dense,) = [n for n in new.nodes.values() if n.op == "dense"]
    assert dense.options["use_bias"] is True and new_state.get("dense_0/bias").shape == (3,)


@pytest.mark.parametrize(
    "build",
    [
        # the batch norm normalises axis 1 of a rank-3 tensor, the dense reads the last
        lambda x: ax.dense(ax.batch_norm(x, channel_index=1), 2),
        # read by two layers
        lambda x: (lambda bn: ax.add(ax.dense(bn, 2), ax.dense(bn, 2)))(ax.batch_norm(x)),
        # a conv's zero padding would see the shift
        lambda x: ax.conv(ax.batch_norm(x), 2, kernel_size=2, padding="same"),
    ],
)
def test_forward_folds_that_would_change_the_result_are_not_made(build):
    x = ax.input("x", (None, 3, 4))
    model = build(x)
    _, new_state, _ = check_ir_passes(model, random_state(model), FOLD)
    assert any(layer.startswith("batch_norm") for layer in new_state.data)
