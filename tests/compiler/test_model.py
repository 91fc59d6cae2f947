"""Model functions: inspection, options, parameters, traversal, freeze, hooks, tracing."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.dtypes import TensorType
from axonc.errors import GraphError, OptionError
from axonc.ir import assign_names
from axonc.registry import ParamSpec

RNG = np.random.default_rng(1)


def _x():
    return ax.input("x", (None, 4))


def _data(n=3):
    return RNG.standard_normal((n, 4)).astype(np.float32)


class TestInspection:
    def test_get_output_shape(self):
        y = _x().dense(8).relu().dense(3)
        assert ax.get_output_shape(y, ax.template((5, 4))) == (5, 3)
        assert ax.get_output_shape(y, np.zeros((2, 4), np.float32)) == (2, 3)

    def test_get_output_shape_of_a_container(self):
        x = _x()
        y = ax.container({"logits": x.dense(3), "pair": (x, x.dense(1))})
        assert ax.get_output_shape(y, ax.template((2, 4))) == {
            "logits": (2, 3),
            "pair": ((2, 4), (2, 1)),
        }

    def test_get_output_shape_of_tuple_returning_layers(self):
        seq = ax.input("s", (None, 6, 3))
        out, (h, c) = ax.lstm(seq, 5)
        both = ax.container((out, h, c))
        assert ax.get_output_shape(both, ax.template((2, 6, 3))) == ((2, 6, 5), (2, 5), (2, 5))

    def test_get_inputs(self):
        a, b = ax.input("image", (None, 8, 8, 1)), ax.input("meta")
        y = ax.container((a.flatten(), b))
        assert ax.get_inputs(y) == {"image": (None, 8, 8, 1), "meta": None}
        assert list(ax.get_inputs(y)) == ["image", "meta"]

    def test_get_op_counts(self):
        x = _x()
        y = ax.add(x.dense(4, activation="relu"), x.dense(4)).relu().dense(1)
        assert ax.get_op_counts(y) == {"input": 1, "dense": 3, "relu": 2, "add": 1}


class TestOptions:
    def test_get_options_of_the_output_layer(self):
        opts = ax.get_options(_x().dense(7, use_bias=False))
        assert opts["units"] == 7 and opts["use_bias"] is False
        assert opts["kernel_initializer"]["name"] == "glorot_uniform"

    def test_set_options_returns_a_new_graph(self):
        y = _x().dense(7)
        z = ax.set_options(y, units=2, use_bias=False)
        assert ax.get_options(y)["units"] == 7
        assert ax.get_options(z)["units"] == 2
        state = ax.build(z)[0](ax.template((1, 4)))
        assert state.data["dense_0"]["kernel"].shape == (4, 2)
        assert "bias" not in state.data["dense_0"]

    def test_set_options_validates(self):
        y = _x().dense(7)
        with pytest.raises(OptionError, match="option 'units': expected an integer >= 1"):
            ax.set_options(y, units=-1)
        with pytest.raises(OptionError, match="unknown option\\(s\\) unitz"):
            ax.set_options(y, unitz=3)
        with pytest.raises(OptionError, match="option 'rate'"):
            ax.set_options(_x().dropout(), rate=1.5)


class TestParameters:
    def test_get_parameters_lists_the_layer_specs(self):
        specs = ax.get_parameters(_x().dense(3))
        assert [s.path for s in specs] == [("kernel",), ("bias",)]
        assert [s.shape for s in specs] == [(4, 3), (3,)]
        assert all(isinstance(s, ParamSpec) and s.kind == "parameter" for s in specs)
        assert [s.path for s in ax.get_parameters(_x().dense(3, use_bias=False))] == [("kernel",)]

    def test_get_parameters_needs_known_input_shapes(self):
        with pytest.raises(GraphError, match="input shapes are unknown"):
            ax.get_parameters(ax.input("x").dense(3))

    def test_set_parameters_changes_the_initialiser(self):
        y = ax.set_parameters(
            _x().dense(3), {"kernel": "ones", "bias": {"name": "full", "value": 2.0}}
        )
        state = ax.build(y)[0](ax.template((1, 4)))
        np.testing.assert_array_equal(state.data["dense_0"]["kernel"], np.ones((4, 3)))
        np.testing.assert_array_equal(state.data["dense_0"]["bias"], np.full(3, 2.0))
        assert ax.get_parameters(y)[0].initializer == {"name": "ones"}

    def test_set_parameters_rejects_unknown_parameters(self):
        with pytest.raises(OptionError) as err:
            ax.set_parameters(_x().dense(3), {"gamma": "ones"})
        assert "gamma_initializer" in str(err.value)
        assert "kernel_initializer, bias_initializer" in str(err.value)

    def test_set_parameters_rejects_unknown_initialisers_as_option_errors(self):
        with pytest.raises(OptionError, match="unknown initializer 'onez'"):
            ax.set_parameters(_x().dense(3), {"kernel": "onez"})


class TestTraversal:
    def test_map_nodes_replaces_every_relu_by_tanh(self):
        x = _x()
        y = x.dense(5, activation="relu").dense(2).relu()
        z = ax.map_nodes(y, lambda n: n.replace(op="tanh") if n.op == "relu" else n)
        assert ax.get_op_counts(z) == {"input": 1, "dense": 2, "tanh": 2}
        assert ax.get_op_counts(y)["relu"] == 2
        assert sorted(assign_names(z).values()) == ["dense_0", "dense_1", "tanh_0", "tanh_1", "x"]
        init, predict = ax.build(z)
        state = init(ax.template((1, 4)))
        d = _data()
        p0, p1 = state.data["dense_0"], state.data["dense_1"]
        h = np.tanh(d.astype(np.float64) @ p0["kernel"] + p0["bias"])
        want = np.tanh(h @ p1["kernel"] + p1["bias"])
        np.testing.assert_allclose(predict(state, d), want, atol=1e-6)

    def test_map_nodes_must_keep_node_ids(self):
        y = _x().relu()
        with pytest.raises(GraphError, match="same id"):
            ax.map_nodes(y, lambda n: n.replace(id=n.id + 10_000))
        with pytest.raises(GraphError, match="same id"):
            ax.map_nodes(y, lambda n: "relu")

    def test_reduce_nodes_counts_nodes(self):
        y = _x().dense(3, activation="relu").dense(1)
        assert ax.reduce_nodes(y, 0, lambda node, acc: acc + 1) == len(y.nodes) == 4
        kinds = ax.reduce_nodes(y, [], lambda node, acc: [*acc, node.kind])
        assert kinds == ["input", "dense", "relu", "dense"]

    def test_trace_forward_records_every_node_in_execution_order(self):
        x = _x()
        y = x.dense(3, name="proj").relu()
        records = ax.trace_forward(y, ax.template((2, 4)), mode="train")
        assert [r["name"] for r in records] == ["x", "proj", "relu_0"]
        assert [r["op"] for r in records] == ["input", "dense", "relu"]
        assert records[1]["inputs"] == ["x"] and records[2]["inputs"] == ["proj"]
        assert records[1]["output"] == TensorType((2, 3))
        assert records[1]["options"]["units"] == 3
        assert all(r["mode"] == "train" for r in records)


class TestFreeze:
    def test_freeze_marks_every_parameter_frozen(self):
        y = ax.freeze(_x().dense(3).dense(2))
        state = ax.build(y)[0](ax.template((1, 4)))
        assert state.frozen == set(state.parameters)
        assert state.trainable_parameters() == {}

    def test_freeze_with_a_predicate(self):
        y = ax.freeze(_x().dense(3).dense(2, name="head"), lambda n: n.name != "head")
        state = ax.build(y)[0](ax.template((1, 4)))
        assert state.frozen == {("dense_0", "kernel"), ("dense_0", "bias")}
        assert set(state.trainable_parameters()) == {"head"}

    def test_freezing_a_base_keeps_later_layers_trainable(self):
        base = ax.freeze(_x().dense(3))
        y = base.dense(2)
        state = ax.build(y)[0](ax.template((1, 4)))
        assert state.frozen == {("dense_0", "kernel"), ("dense_0", "bias")}
        assert set(state.trainable_parameters()) == {"dense_1"}

    def test_freeze_keeps_frozen_paths_given_in_initial(self):
        init, _ = ax.build(_x().dense(3).dense(2))
        first = init(ax.template((1, 4))).freeze(lambda path: path[0] == "dense_1")
        again = init(ax.template((1, 4)), first)
        assert again.frozen == {("dense_1", "kernel"), ("dense_1", "bias")}


class TestHooks:
    def _run(self, model, mode, data):
        init, predict = ax.build(model, mode)
        state = init(ax.template((1, 4)))
        predict(state, data)
        return state

    def test_hook_receives_the_layer_output(self):
        seen = []
        y = ax.attach_hook(_x().dense(3), seen.append)
        data = _data()
        state = self._run(y.relu(), "inference", data)
        p = state.data["dense_0"]
        (got,) = seen
        np.testing.assert_allclose(
            got, data.astype(np.float64) @ p["kernel"] + p["bias"], atol=1e-6
        )

    def test_hooks_run_in_their_modes_and_in_attachment_order(self):
        calls = []
        y = _x().dense(3)
        y = ax.attach_hook(y, lambda v: calls.append("both"))
        y = ax.attach_hook(y, lambda v: calls.append("train"), mode="train")
        y = ax.attach_hook(y, lambda v: calls.append("inference"), mode="inference")
        y = ax.attach_hook(y, lambda v: calls.append("both-2"), mode="both")
        self._run(y, "inference", _data())
        assert calls == ["both", "inference", "both-2"]
        calls.clear()
        self._run(y, "train", _data())
        assert calls == ["both", "train", "both-2"]

    def test_attach_hook_returns_a_new_graph(self):
        calls = []
        y = _x().relu()
        hooked = ax.attach_hook(y, calls.append)
        self._run(y, "inference", _data())
        assert calls == []
        self._run(hooked, "inference", _data())
        assert len(calls) == 1

    def test_bad_hook_arguments(self):
        y = _x().relu()
        with pytest.raises(OptionError, match="mode must be 'both', 'inference' or 'train'"):
            ax.attach_hook(y, print, mode="eval")
        with pytest.raises(OptionError, match="on must be one of initialize, pre_forward"):
            ax.attach_hook(y, print, on="after")


def test_trace_init_lists_what_init_creates():
    model = ax.input("x", (None, 8)).dense(4).batch_norm().dropout(seed=1)
    template = ax.template((2, 8))
    plan = ax.trace_init(model, template, mode="train")
    state = ax.build(model, mode="train")[0](template)
    assert {k: tuple(v.shape) for k, v in plan.items()} == {
        k: v.shape for k, v in state.flatten().items()
    }
    assert plan["batch_norm_0/mean"].kind == "state"
    assert plan["dense_0/kernel"].kind == "parameter"
    assert "dropout_0/key" not in ax.trace_init(model, template)
