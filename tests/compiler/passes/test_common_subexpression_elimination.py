"""common_subexpression_elimination: identical computations merge; layers with parameters never."""

import numpy as np
import pytest

import axonc as ax
from tests.pass_numerics import check_ir_passes, random_state

CSE = ["common_subexpression_elimination", "dead_node_elimination"]


def ops(model):
    return sorted(n.op for n in model.nodes.values())


def test_identical_activations_of_one_input_merge():
    x = ax.input("x", (None, 4))
    model = ax.add(ax.relu(x), ax.relu(x))
    new, _, changed = check_ir_passes(model, random_state(model), CSE)
    assert changed
    assert ops(new) == ["add", "input", "relu"]
    (add,) = [n for n in new.nodes.values() if n.op == "add"]
    assert add.inputs[0] == add.inputs[1]


def test_merging_cascades_down_the_graph():
    x = ax.input("x", (None, 4))
    a = ax.tanh(ax.relu(x))
    b = ax.tanh(ax.relu(x))
    model = ax.multiply(a, b)
    new, _, changed = check_ir_passes(model, random_state(model), CSE)
    assert changed
    assert ops(new) == ["input", "multiply", "relu", "tanh"]


def test_different_options_stay_apart():
    x = ax.input("x", (None, 4))
    model = ax.add(ax.leaky_relu(x, alpha=0.1), ax.leaky_relu(x, alpha=0.2))
    new, _, changed = check_ir_passes(model, random_state(model), CSE)
    assert not changed
    assert ops(new).count("leaky_relu") == 2


def test_different_inputs_stay_apart():
    x = ax.input("x", (None, 4))
    y = ax.input("y", (None, 4))
    model = ax.add(ax.relu(x), ax.relu(y))
    _, _, changed = check_ir_passes(model, random_state(model), CSE)
    assert not changed


def test_identical_dense_layers_are_distinct_layers():
    x = ax.input("x", (None, 4))
    model = ax.add(ax.dense(x, 3), ax.dense(x, 3))
    new, state, changed = check_ir_passes(model, random_state(model), CSE)
    assert not changed
    assert ops(new).count("dense") == 2
    assert set(state.data) == {"dense_0", "dense_1"}


def test_equal_constants_merge_and_unequal_ones_do_not():
    x = ax.input("x", (None, 3))
    c1 = ax.constant(np.array([1.0, 2.0, 3.0], np.float32))
    c2 = ax.constant(np.array([1.0, 2.0, 3.0], np.float32))
    c3 = ax.constant(np.array([1.0, 2.0, 4.0], np.float32))
    model = ax.add(ax.add(ax.multiply(x, c1), ax.multiply(x, c2)), c3)
    new, _, changed = check_ir_passes(model, random_state(model), CSE)
    assert changed
    assert ops(new).count("constant") == 2
    assert ops(new).count("multiply") == 1


def test_two_uses_of_a_block_on_one_input_merge_and_share_parameters():
    shared = ax.block(lambda t: ax.dense(t, 3))
    x = ax.input("x", (None, 4))
    model = ax.add(shared(x), shared(x))
    new, state, changed = check_ir_passes(model, random_state(model), CSE)
    assert changed
    assert ops(new).count("block") == 1
    assert list(state.data) == ["block_0"]


def test_a_block_used_on_different_inputs_stays_twice():
    shared = ax.block(lambda t: ax.dense(t, 3))
    x = ax.input("x", (None, 4))
    model = ax.add(shared(x), shared(ax.relu(x)))
    new, _, changed = check_ir_passes(model, random_state(model), CSE)
    assert not changed
    assert ops(new).count("block") == 2


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_dropout_layers_are_never_merged_in_train_mode(mode):
    x = ax.input("x", (None, 6))
    model = ax.add(ax.dropout(x, rate=0.5, seed=1), ax.dropout(x, rate=0.5, seed=1))
    new, _, _ = check_ir_passes(model, random_state(model, mode), CSE, mode)
    if mode == "train":
        assert ops(new).count("dropout") == 2


def test_container_outputs_are_rewired():
    x = ax.input("x", (None, 4))
    model = ax.container({"a": ax.relu(x), "b": ax.relu(x)})
    new, _, changed = check_ir_passes(model, random_state(model), CSE)
    assert changed
    (container,) = [n for n in new.nodes.values() if n.op == "container"]
    assert container.inputs[0] == container.inputs[1]
