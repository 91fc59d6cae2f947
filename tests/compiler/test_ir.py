"""The graph IR: immutable handles, both call styles, deterministic layer names."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import axonc as ax
from axonc.errors import GraphError, OptionError, ShapeError
from axonc.ir import (
    Axon,
    Node,
    assign_names,
    merge_nodes,
    topo_order,
    tree_leaves,
    tree_map,
)
from axonc.shape_inference import make_node


def _x(shape=(None, 4)):
    return ax.input("x", shape)


def canonical(model: Axon) -> list[tuple]:
    """A graph as (name, op, input names, options) in graph order: ids play no part."""
    names = assign_names(model)
    return [
        (
            names[nid],
            model.nodes[nid].op,
            tuple(names[i] for i in model.nodes[nid].inputs),
            repr(sorted(model.nodes[nid].options.items())),
        )
        for nid in topo_order(model.nodes, model.output)
    ]


def _units_by_name(model: Axon) -> dict[str, int]:
    names = assign_names(model)
    return {names[i]: n.options["units"] for i, n in model.nodes.items() if n.op == "dense"}


class TestImmutability:
    def test_a_layer_call_returns_a_new_handle_and_keeps_the_old_one(self):
        x = _x()
        before_output, before_nodes = x.output, dict(x.nodes)
        y = x.dense(8)
        assert y is not x
        assert x.output == before_output
        assert dict(x.nodes) == before_nodes
        assert len(x.nodes) == 1 and len(y.nodes) == 2

    def test_new_handles_share_the_old_nodes(self):
        x = _x()
        y = x.dense(8)
        z1, z2 = y.relu(), y.tanh()
        assert y.nodes[y.output] is z1.nodes[y.output] is z2.nodes[y.output]
        assert x.nodes[x.output] is y.nodes[x.output]
        assert z1.output != z2.output

    def test_nodes_and_handles_cannot_be_mutated(self):
        y = _x().dense(8)
        with pytest.raises(dataclasses.FrozenInstanceError):
            y.node.name = "other"  # type: ignore[misc]
        with pytest.raises(TypeError):
            y.node.options["units"] = 3  # type: ignore[index]
        with pytest.raises(TypeError):
            y.nodes[123] = y.node  # type: ignore[index]
        with pytest.raises(AttributeError):
            y.extra = 1  # type: ignore[attr-defined]

    def test_node_options_are_a_copy_of_what_was_given(self):
        opts = {"units": 3}
        y = make_node("dense", [_x()], opts)
        opts["units"] = 99
        assert y.node.options["units"] == 3

    def test_node_replace_makes_a_new_node(self):
        node = _x().dense(2).node
        other = node.replace(name="proj")
        assert other.name == "proj" and node.name is None
        assert other.id == node.id

    def test_node_ids_grow_in_creation_order(self):
        x = _x()
        a = x.dense(2)
        b = a.relu()
        assert x.output < a.output < b.output


class TestCallStyles:
    def test_function_and_method_styles_give_identical_graphs(self):
        x = _x()
        f = ax.dense(ax.relu(ax.dense(x, 8, activation="tanh")), 2, use_bias=False)
        m = x.dense(8, activation="tanh").relu().dense(2, use_bias=False)
        assert canonical(f) == canonical(m)
        assert len(f.nodes) == len(m.nodes) == 5

    def test_styles_give_the_same_numbers(self):
        x = _x()
        f = ax.dense(x, 3, activation="relu")
        m = x.dense(3, activation="relu")
        init_f, pred_f = ax.build(f)
        _, pred_m = ax.build(m)
        state = init_f(ax.template((2, 4)))
        data = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
        np.testing.assert_array_equal(pred_f(state, data), pred_m(state, data))

    def test_method_carries_the_constructor_docstring(self):
        x = _x()
        assert x.dense.__doc__ == ax.dense.__doc__
        assert "dense" in dir(x) and "relu" in dir(x)

    def test_non_method_constructors_are_not_methods(self):
        with pytest.raises(AttributeError, match="no layer or attribute 'input'"):
            _x().input  # noqa: B018
        with pytest.raises(AttributeError, match="no layer or attribute 'densse'"):
            _x().densse  # noqa: B018

    def test_a_graph_is_not_iterable(self):
        with pytest.raises(TypeError, match="not iterable"):
            list(_x())


class TestNaming:
    def test_generated_names_count_per_op(self):
        x = _x()
        y = x.dense(8).relu().dense(4).relu().dense(2)
        names = sorted(assign_names(y).values())
        assert names == ["dense_0", "dense_1", "dense_2", "relu_0", "relu_1", "x"]
        assert _units_by_name(y) == {"dense_0": 8, "dense_1": 4, "dense_2": 2}

    def test_names_follow_dfs_post_order_from_the_output_not_creation_order(self):
        x = _x()
        a = x.dense(2)  # created first
        b = x.dense(3)  # created second
        c = b.dense(2)  # created third
        out = ax.add(c, a)
        # Post-order from `add`: its first input's chain (b, then c), then a.
        names = assign_names(out)
        assert [names[b.output], names[c.output], names[a.output]] == [
            "dense_0",
            "dense_1",
            "dense_2",
        ]
        assert names[out.output] == "add_0"

    def test_names_are_deterministic_across_rebuilds(self):
        def make():
            x = _x()
            return ax.concatenate([x.dense(3).relu(), x.dense(5).tanh()], axis=-1).dense(1)

        assert canonical(make()) == canonical(make())

    def test_container_outputs_are_named_left_to_right(self):
        x = _x()
        out = ax.container({"a": x.dense(7), "b": x.dense(9)})
        assert _units_by_name(out) == {"dense_0": 7, "dense_1": 9}

    def test_explicit_names_are_honoured_and_do_not_consume_counters(self):
        x = _x()
        y = x.dense(8, name="encoder").dense(4).relu(name="act").dense(2)
        names = assign_names(y)
        assert _units_by_name(y) == {"encoder": 8, "dense_0": 4, "dense_1": 2}
        assert "act" in names.values() and "relu_0" not in names.values()
        init, _ = ax.build(y)
        state = init(ax.template((1, 4)))
        assert set(state.data) == {"encoder", "dense_0", "dense_1"}

    def test_input_nodes_are_named_by_their_input_name(self):
        a, b = ax.input("image", (None, 2)), ax.input("mask", (None, 2))
        names = assign_names(ax.add(a, b))
        assert {names[a.output], names[b.output]} == {"image", "mask"}

    def test_layers_sharing_a_name_share_parameters_as_in_axon(self):
        # a VAE notebook builds its encoder twice: the two uses share parameters
        def encoder(x):
            return x.dense(4, name="enc").relu(name="act")

        x = _x()
        y = ax.container((encoder(x), encoder(x.tanh())))
        names = assign_names(y)
        assert sorted(n for n in names.values() if n in ("enc", "act")) == [
            "act",
            "act",
            "enc",
            "enc",
        ]
        init, predict = ax.build(y)
        state = init(ax.template((1, 4)))
        assert set(state.data) == {"enc"}
        data = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
        kernel, bias = state.data["enc"]["kernel"], state.data["enc"]["bias"]
        a, b = predict(state, data)
        np.testing.assert_allclose(a, np.maximum(data @ kernel + bias, 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            b, np.maximum(np.tanh(data) @ kernel + bias, 0), rtol=1e-5, atol=1e-6
        )

    def test_layers_sharing_a_name_but_not_a_shape_are_a_shape_error_naming_both(self):
        y = _x().dense(3).dense(3, name="dense_0")
        init, _ = ax.build(y)
        with pytest.raises(ShapeError) as err:
            init(ax.template((1, 4)))
        msg = str(err.value)
        assert "two layers named 'dense_0'" in msg
        assert "dense_0/kernel as f32[4, 3] and f32[3, 3]" in msg

    def test_inputs_sharing_a_name_are_one_input(self):
        y = ax.add(ax.input("x", (None, 3)), ax.input("x"))
        init, predict = ax.build(y)
        data = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(predict(init(ax.template((1, 3))), {"x": data}), 2 * data)

    def test_a_shared_name_gets_the_sum_of_both_uses_gradients(self):
        def model():
            x = ax.input("x")
            return ax.add(
                x.dense(1, name="w", use_bias=False), x.tanh().dense(1, name="w", use_bias=False)
            )

        data = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
        target = np.ones((5, 1), np.float32)
        step = ax.train.compile_step(model(), "mean_squared_error", ax.optimizers.sgd(1.0))
        ts = step.init(data)
        kernel = ts.model_state.data["w"]["kernel"].astype(np.float64)
        ts, _ = step(ts, data, target)

        def loss(k):
            return np.mean((data @ k + np.tanh(data) @ k - target) ** 2)

        eps = 1e-6
        grad = np.zeros_like(kernel)
        for i in np.ndindex(kernel.shape):
            d = np.zeros_like(kernel)
            d[i] = eps
            grad[i] = (loss(kernel + d) - loss(kernel - d)) / (2 * eps)
        np.testing.assert_allclose(ts.model_state.data["w"]["kernel"], kernel - grad, rtol=1e-4)

    def test_bad_explicit_names(self):
        for bad in ("", 3):
            with pytest.raises(GraphError, match="name must be a non-empty string"):
                ax.dense(_x(), 3, name=bad)

    def test_activation_option_adds_a_separate_node(self):
        y = _x().dense(8, activation="relu")
        assert ax.get_op_counts(y) == {"input": 1, "dense": 1, "relu": 1}
        assert assign_names(y)[y.output] == "relu_0"
        init, _ = ax.build(y)
        state = init(ax.template((1, 4)))
        assert set(state.data) == {"dense_0"}

    def test_unknown_activation_is_an_option_error(self):
        with pytest.raises(OptionError, match="unknown activation 'rellu'"):
            _x().dense(8, activation="rellu")


class TestDescribe:
    def test_print_shows_inputs_outputs_and_node_count(self):
        y = _x().dense(8, activation="relu").dense(2)
        text = repr(y)
        assert text.startswith("#Axon<")
        assert 'inputs: %{"x" => {nil, 4}}' in text
        assert 'outputs: "dense_1"' in text
        assert "nodes: 4" in text
        assert str(y) == text

    def test_print_of_a_multi_input_container_model(self):
        a, b = ax.input("a", (None, 3)), ax.input("b")
        out = ax.container((a.dense(2), b))
        text = repr(out)
        assert '"a" => {nil, 3}' in text and '"b" => ?' in text
        assert 'outputs: "container_0"' in text and "nodes: 4" in text

    def test_print_survives_a_duplicate_name(self):
        y = _x().dense(3, name="d").dense(3, name="d")
        assert "nodes: 3" in repr(y)


class TestGraphChecks:
    def test_inputs_must_be_graphs(self):
        with pytest.raises(GraphError) as err:
            ax.dense(np.zeros((2, 4)), 3)
        assert "must be an Axon graph" in str(err.value) and "ndarray" in str(err.value)

    def test_arity_is_checked(self):
        x = _x()
        with pytest.raises(GraphError, match="expected 1 input"):
            make_node("relu", [x, x])

    def test_a_container_graph_is_not_a_layer_input(self):
        x = _x()
        y = x.relu()
        both = Axon((x.output, y.output), merge_nodes(x, y))
        with pytest.raises(GraphError, match="input 0 is a container graph"):
            both.dense(3)
        with pytest.raises(GraphError, match="container"):
            both.node  # noqa: B018

    def test_topo_order_visits_inputs_first(self):
        x = _x()
        y = ax.add(x.dense(4), x.relu()).dense(2)
        order = topo_order(y.nodes, y.output)
        assert sorted(order) == sorted(y.nodes)
        pos = {nid: i for i, nid in enumerate(order)}
        for nid in order:
            for i in y.nodes[nid].inputs:
                assert pos[i] < pos[nid]
        assert order[-1] == y.output

    def test_unreachable_nodes_are_left_out(self):
        x = _x()
        y = x.dense(2)
        nodes = merge_nodes(y, x.relu())
        assert topo_order(nodes, y.output) == [x.output, y.output]

    def test_a_cycle_is_a_graph_error(self):
        x = _x()
        a = x.relu()
        b = a.tanh()
        nodes = dict(b.nodes)
        nodes[a.output] = a.node.replace(inputs=(b.output,))
        with pytest.raises(GraphError, match="cycle"):
            topo_order(nodes, b.output)

    def test_a_self_loop_is_a_graph_error(self):
        a = _x().relu()
        nodes = dict(a.nodes)
        nodes[a.output] = a.node.replace(inputs=(a.output,))
        with pytest.raises(GraphError, match="cycle"):
            topo_order(nodes, a.output)

    def test_a_dangling_input_is_a_graph_error(self):
        a = _x().relu()
        nodes = {a.output: a.node}
        with pytest.raises(GraphError, match="not in the graph"):
            topo_order(nodes, a.output)

    def test_node_repr(self):
        node = _x().dense(2, name="proj").node
        assert repr(node) == f"Node({node.id}, dense name='proj', inputs={list(node.inputs)})"
        assert isinstance(node, Node) and node.kind == "dense"


class TestTrees:
    def test_tree_leaves_in_order(self):
        tree = {"a": (1, [2, 3]), "b": 4}
        assert tree_leaves(tree) == [1, 2, 3, 4]
        assert tree_leaves(5) == [5]
        assert tree_leaves(()) == []

    def test_tree_map_keeps_structure(self):
        tree = {"a": (1, [2, 3]), "b": 4}
        assert tree_map(lambda v: v * 10, tree) == {"a": (10, [20, 30]), "b": 40}
        assert isinstance(tree_map(str, (1,)), tuple)
        assert isinstance(tree_map(str, [1]), list)


def test_the_ir_imports_alone():
    """The IR is the bottom of the house: importing it loads no module above it."""
    code = (
        "import sys, axonc.ir; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'axonc')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["axonc", "axonc.errors", "axonc.ir", "axonc.registry"]


def test_the_package_publishes_build_the_function_even_after_its_module_is_imported():
    code = "import axonc.build, axonc as ax; print(callable(ax.build), ax.build.__module__)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "axonc.build"], out.stderr
