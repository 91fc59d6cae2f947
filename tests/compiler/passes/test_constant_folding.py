"""constant_folding: nodes over constants become constants holding the reference value."""

import numpy as np
import pytest

import axonc as ax
from axonc.passes.constant_folding import MAX_GROWTH
from tests.pass_numerics import check_ir_passes, random_state

FOLD = ["constant_folding", "dead_node_elimination"]


def by_op(model, op):
    return [n for n in model.nodes.values() if n.op == op]


def test_a_chain_over_constants_folds_to_one_constant_with_the_formula_value():
    a = np.array([[1.0, -2.0], [3.0, -4.0]], np.float32)
    b = np.array([0.5, 0.25], np.float32)
    x = ax.input("x", (2, 2))
    folded = ax.relu(ax.add(ax.constant(a), ax.constant(b)))
    model = ax.multiply(x, folded)
    state = random_state(model)
    g_model, _, changed = check_ir_passes(model, state, FOLD)
    assert changed
    assert not by_op(g_model, "add") and not by_op(g_model, "relu")
    (c,) = by_op(g_model, "constant")
    np.testing.assert_array_equal(c.options["value"], np.maximum(a + b, 0))
    assert c.options["value"].dtype == np.float32


def test_one_pass_folds_a_whole_chain_in_graph_order():
    x = ax.input("x", (None, 3))
    c = ax.constant(np.arange(3, dtype=np.float32))
    for _ in range(5):
        c = ax.tanh(ax.add(c, c))
    model = ax.add(x, c)
    new, _, _ = check_ir_passes(model, random_state(model), FOLD)
    assert sorted(n.op for n in new.nodes.values()) == ["add", "constant", "input"]


def test_nodes_with_a_non_constant_input_stay():
    x = ax.input("x", (None, 3))
    model = ax.add(x, ax.constant(np.ones(3, np.float32)))
    _, _, changed = check_ir_passes(model, random_state(model), FOLD)
    assert not changed


def test_layers_with_parameters_are_not_folded():
    c = ax.constant(np.ones((2, 4), np.float32))
    x = ax.input("x", (2, 3))
    model = ax.add(x, ax.dense(c, 3))
    new, state, changed = check_ir_passes(model, random_state(model), FOLD)
    assert not changed
    assert by_op(new, "dense") and "dense_0" in state.data


def test_dropout_over_a_constant_is_not_folded_in_train_mode():
    c = ax.constant(np.ones((4, 6), np.float32))
    x = ax.input("x", (4, 6))
    model = ax.add(x, ax.dropout(c, rate=0.5, seed=3))
    new, _, changed = check_ir_passes(model, random_state(model, "train"), FOLD, "train")
    assert not changed
    assert by_op(new, "dropout")


def test_the_folded_node_keeps_its_layer_name():
    x = ax.input("x", (None, 2))
    model = ax.add(x, ax.relu(ax.constant(np.ones(2, np.float32)), name="act"))
    new, _, _ = check_ir_passes(model, random_state(model), FOLD)
    assert [n.name for n in by_op(new, "constant")] == ["act"]


def test_a_result_much_larger_than_its_inputs_is_not_folded():
    side = int(np.sqrt(MAX_GROWTH)) + 8
    row = ax.constant(np.ones((1, side), np.float32))
    col = ax.constant(np.ones((side, 1), np.float32))
    x = ax.input("x", (side, side))
    model = ax.add(x, ax.add(row, col))
    _, _, changed = check_ir_passes(model, random_state(model), FOLD)
    assert not changed


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_integer_constants_keep_their_dtype(mode):
    x = ax.input("x", (None, 3), dtype="s32")
    c = ax.add(
        ax.constant(np.array([1, 2, 3], np.int32)), ax.constant(np.array([1, 1, 1], np.int32))
    )
    model = ax.multiply(x, c)
    new, _, changed = check_ir_passes(model, random_state(model, mode), FOLD, mode)
    assert changed
    (k,) = by_op(new, "constant")
    np.testing.assert_array_equal(k.options["value"], np.array([2, 3, 4], np.int32))
