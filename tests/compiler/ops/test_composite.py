"""Composite layers: cond, bidirectional, block, namespace, optional / or_else.

Block sharing, a plain namespace and the optional/or_else basics are tested in
tests/compiler/test_build.py; the cond goldens in tests/test_conformance.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.dtypes import TensorType
from axonc.errors import GraphError, ShapeError
from axonc.serialize import from_bytes, to_bytes
from axonc.shape_inference import declared_type

RNG = np.random.default_rng(5)
MODES = ("inference", "train")


def _predict(model, state, inputs, mode):
    out = ax.build(model, mode)[1](state, inputs)
    return out["prediction"] if mode == "train" else out


def _leaf_paths(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaf_paths(v, (*prefix, k))
        else:
            yield (*prefix, k)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# ---------------------------------------------------------------------------
# cond


class TestCond:
    def _model(self):
        x = ax.input("x", (None, 3))
        return ax.cond(x, lambda t: anp.sum(t) > 0, x.relu(), x.tanh())

    @pytest.mark.parametrize("mode", MODES)
    def test_a_positive_sum_takes_the_true_branch(self, mode):
        x = np.array([[-1.0, 2.0, 3.0], [0.5, -0.25, 1.0]], np.float32)
        assert x.sum() > 0
        out = _predict(self._model(), {}, x, mode)
        np.testing.assert_array_equal(out, np.maximum(x, 0.0))

    @pytest.mark.parametrize("mode", MODES)
    def test_a_negative_sum_takes_the_false_branch(self, mode):
        x = np.array([[1.0, -2.0, -3.0], [0.5, -0.25, 1.0]], np.float32)
        assert x.sum() < 0
        out = _predict(self._model(), {}, x, mode)
        np.testing.assert_allclose(out, np.tanh(x.astype(np.float64)), rtol=1e-6)

    def test_the_predicate_sees_the_parent_not_the_branches(self):
        x = ax.input("x", (None, 2))
        neg = ax.nx(x, lambda t: -t)
        up, down = ax.nx(x, lambda t: t + 10.0), ax.nx(x, lambda t: t - 10.0)
        model = ax.cond(neg, lambda t: anp.max(t) > 0, up, down)
        data = np.array([[1.0, 2.0]], np.float32)  # -x has max -1 -> false
        np.testing.assert_array_equal(_predict(model, {}, data, "inference"), data - 10.0)
        data = np.array([[1.0, -2.0]], np.float32)  # -x has max 2 -> true
        np.testing.assert_array_equal(_predict(model, {}, data, "inference"), data + 10.0)

    def test_a_non_scalar_predicate_is_a_shape_error(self):
        x = ax.input("x", (None, 3))
        with pytest.raises(ShapeError, match="must return a scalar"):
            ax.cond(x, lambda t: t > 0, x.relu(), x.tanh())

    def test_branches_of_different_shapes_are_a_shape_error(self):
        x = ax.input("x", (None, 3))
        narrow = ax.nx(x, lambda t: t[:, :2])
        with pytest.raises(ShapeError, match="both branches must have one shape"):
            ax.cond(x, lambda t: anp.sum(t) > 0, x.relu(), narrow)

    def test_branches_of_different_dtypes_are_a_shape_error(self):
        x = ax.input("x", (None, 3))
        ints = ax.nx(x, lambda t: t.astype(np.int32))
        with pytest.raises(ShapeError, match="both branches"):
            ax.cond(x, lambda t: anp.sum(t) > 0, x, ints)

    def test_container_branches_of_one_structure(self):
        x = ax.input("x", (None, 3))
        on_true = ax.container({"a": x.relu(), "b": x})
        on_false = ax.container({"a": x.tanh(), "b": x.relu()})
        model = ax.cond(x, lambda t: anp.sum(t) > 0, on_true, on_false)
        data = np.array([[-1.0, 0.5, -2.0]], np.float32)
        out = _predict(model, {}, data, "inference")
        np.testing.assert_allclose(out["a"], np.tanh(data.astype(np.float64)), rtol=1e-6)
        np.testing.assert_array_equal(out["b"], np.maximum(data, 0))

    def test_container_branches_of_different_structures_are_a_shape_error(self):
        x = ax.input("x", (None, 3))
        with pytest.raises(ShapeError, match="both branches"):
            ax.cond(x, lambda t: anp.sum(t) > 0, ax.container((x, x)), ax.container([x, x]))
        with pytest.raises(ShapeError, match="both branches"):
            ax.cond(x, lambda t: anp.sum(t) > 0, ax.container({"a": x}), ax.container({"b": x}))

    def test_a_non_function_condition_is_rejected(self):
        x = ax.input("x", (None, 3))
        with pytest.raises(GraphError, match="condition function"):
            ax.cond(x, 1.0, x, x)

    def test_cond_survives_save_and_load(self):
        model = self._model()
        loaded, _ = from_bytes(to_bytes(model, {}))
        for x in ([[1.0, 2.0, -0.5]], [[-1.0, -2.0, 0.5]]):
            data = np.array(x, np.float32)
            np.testing.assert_array_equal(
                _predict(loaded, {}, data, "inference"), _predict(model, {}, data, "inference")
            )


# ---------------------------------------------------------------------------
# bidirectional


def _numpy_lstm(p, x):
    """Axon's LSTM from a zero state, written out per time step (float64): (seq, (c, h))."""
    k, r, b = p["input_kernel"], p["hidden_kernel"], p["bias"]
    batch, steps, _ = x.shape
    units = k["wii"].shape[1]
    c = np.zeros((batch, units))
    h = np.zeros((batch, units))
    seq = []
    for t in range(steps):
        xt = x[:, t, :]
        i = _sigmoid(xt @ k["wii"] + b["bi"] + h @ r["whi"])
        f = _sigmoid(xt @ k["wif"] + b["bf"] + h @ r["whf"])
        g = np.tanh(xt @ k["wig"] + b["bg"] + h @ r["whg"])
        o = _sigmoid(xt @ k["wio"] + b["bo"] + h @ r["who"])
        c = f * c + i * g
        h = o * np.tanh(c)
        seq.append(h)
    return np.stack(seq, axis=1), (c, h)


def _bi_lstm(name=None):
    x = ax.input("x", (None, 5, 3))
    out = ax.bidirectional(
        x,
        lambda h: ax.lstm(h, 4, recurrent_initializer="zeros"),
        lambda f, b: anp.concatenate([f, b], axis=-1),
        name=name,
    )
    return ax.container(out)


def _expected_bi_lstm(p, x):
    """Forward on x; backward on x reversed in time, every output reversed back along axis 1."""
    x = x.astype(np.float64)
    seq_f, (c_f, h_f) = _numpy_lstm(p, x)
    seq_b, (c_b, h_b) = _numpy_lstm(p, x[:, ::-1, :])
    # Axon reverses axis 1 of every backward output: the sequence's time axis, and
    # also the units axis of the {B, U} final states (a quirk kept on purpose).
    return (
        np.concatenate([seq_f, seq_b[:, ::-1, :]], axis=-1),
        (
            np.concatenate([c_f, c_b[:, ::-1]], axis=-1),
            np.concatenate([h_f, h_b[:, ::-1]], axis=-1),
        ),
    )


class TestBidirectional:
    def test_container_result_comes_back_as_graphs_of_merged_types(self):
        x = ax.input("x", (None, 5, 3))
        out = ax.bidirectional(
            x,
            lambda h: ax.lstm(h, 4, recurrent_initializer="zeros"),
            lambda f, b: anp.concatenate([f, b], axis=-1),
        )
        seq, (c, h) = out
        assert declared_type(seq, seq.output) == TensorType((None, 5, 8))
        assert declared_type(c, c.output) == TensorType((None, 8))
        assert declared_type(h, h.output) == TensorType((None, 8))

    def test_parameters_are_one_lstm_set_nested_under_the_block(self):
        state = ax.build(_bi_lstm())[0](ax.template((1, 5, 3)))
        assert set(state.data) == {"block_0"}
        assert set(state.data["block_0"]) == {"lstm_0"}
        paths = set(_leaf_paths(state.data))
        gates = {
            "input_kernel": ("wii", "wif", "wig", "wio"),
            "hidden_kernel": ("whi", "whf", "whg", "who"),
            "bias": ("bi", "bf", "bg", "bo"),
        }
        assert paths == {
            ("block_0", "lstm_0", group, gate) for group, names in gates.items() for gate in names
        }
        p = state.data["block_0"]["lstm_0"]
        assert p["input_kernel"]["wii"].shape == (3, 4)
        assert p["hidden_kernel"]["whi"].shape == (4, 4)
        assert p["bias"]["bi"].shape == (4,)

    def test_a_name_nests_the_parameters_under_it(self):
        state = ax.build(_bi_lstm(name="bi"))[0](ax.template((1, 5, 3)))
        assert set(state.data) == {"bi"} and set(state.data["bi"]) == {"lstm_0"}

    @pytest.mark.parametrize("mode", MODES)
    def test_matches_a_numpy_lstm_run_both_ways_with_one_parameter_set(self, mode):
        model = _bi_lstm()
        state = ax.build(model, mode)[0](ax.template((1, 5, 3)))
        p = state.data["block_0"]["lstm_0"]
        x = RNG.standard_normal((2, 5, 3)).astype(np.float32)
        seq, (c, h) = _predict(model, state, x, mode)
        want_seq, (want_c, want_h) = _expected_bi_lstm(p, x)
        assert seq.dtype == np.float32 and seq.shape == (2, 5, 8)
        np.testing.assert_allclose(seq, want_seq, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
        # The last forward step and the first backward step are the final states.
        np.testing.assert_allclose(seq[:, -1, :4], h[:, :4], rtol=1e-6)
        np.testing.assert_allclose(seq[:, 0, 4:], h[:, 4:][:, ::-1], rtol=1e-6)

    def test_survives_save_and_load(self):
        model = _bi_lstm()
        state = ax.build(model)[0](ax.template((1, 5, 3)))
        loaded, loaded_state = from_bytes(to_bytes(model, state))
        assert set(_leaf_paths(loaded_state.data)) == set(_leaf_paths(state.data))
        x = RNG.standard_normal((3, 5, 3)).astype(np.float32)
        before = _predict(model, state, x, "inference")
        after = _predict(loaded, loaded_state, x, "inference")
        for a, b in zip(ax.ir.tree_leaves(before), ax.ir.tree_leaves(after)):
            np.testing.assert_array_equal(a, b)
        want_seq, _ = _expected_bi_lstm(loaded_state.data["block_0"]["lstm_0"], x)
        np.testing.assert_allclose(after[0], want_seq, rtol=1e-5, atol=1e-6)

    def test_a_single_tensor_result_is_one_graph_reversed_back_before_merging(self):
        x = ax.input("x", (None, 4, 3))
        out = ax.bidirectional(x, lambda h: h.dense(2), lambda f, b: f - 2 * b)
        assert isinstance(out, ax.Axon)
        state = ax.build(out)[0](ax.template((1, 4, 3)))
        p = state.data["block_0"]["dense_0"]
        data = RNG.standard_normal((2, 4, 3)).astype(np.float32)
        # dense acts per time step, so reversing back makes both directions agree.
        dense = data.astype(np.float64) @ p["kernel"] + p["bias"]
        np.testing.assert_allclose(_predict(out, state, data, "inference"), -dense, atol=1e-6)

    def test_the_axis_option_picks_the_reversed_axis(self):
        x = ax.input("x", (None, 2, 4))

        def running_sum(h):
            # a causal sum along axis 2, written with a lower-triangular matrix
            return ax.nx(h, lambda t: t @ np.triu(np.ones((4, 4), np.float32)))

        out = ax.bidirectional(x, running_sum, lambda f, b: anp.stack([f, b], axis=-1), axis=2)
        data = RNG.standard_normal((1, 2, 4)).astype(np.float32)
        got = _predict(out, {}, data, "inference")
        np.testing.assert_allclose(got[..., 0], np.cumsum(data, axis=2), rtol=1e-5, atol=1e-6)
        backward = np.cumsum(data[:, :, ::-1], axis=2)[:, :, ::-1]
        np.testing.assert_allclose(got[..., 1], backward, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# block


class TestBlock:
    def test_a_block_of_two_inputs(self):
        x, y = ax.input("x", (None, 3)), ax.input("y", (None, 3))
        shared = ax.block(lambda a, b: ax.add(a, b).dense(2))
        model = ax.container((shared(x, y), shared(y, y)))
        state = ax.build(model)[0]({"x": ax.template((1, 3)), "y": ax.template((1, 3))})
        p = state.data["block_0"]["dense_0"]
        xs = RNG.standard_normal((2, 3)).astype(np.float32)
        ys = RNG.standard_normal((2, 3)).astype(np.float32)
        out = _predict(model, state, {"x": xs, "y": ys}, "inference")

        def dense(v):
            return v.astype(np.float64) @ p["kernel"] + p["bias"]

        np.testing.assert_allclose(out[0], dense(xs + ys), atol=1e-6)
        np.testing.assert_allclose(out[1], dense(2 * ys), atol=1e-6)

    def test_a_block_with_a_container_output(self):
        x = ax.input("x", (None, 3))
        shared = ax.block(lambda h: {"lin": h.dense(2), "act": h.dense(2).relu()})
        out = shared(x)
        assert declared_type(out, out.output) == {
            "lin": TensorType((None, 2)),
            "act": TensorType((None, 2)),
        }
        model = ax.nx(out, lambda t: t["lin"] - t["act"])
        state = ax.build(model)[0](ax.template((1, 3)))
        assert set(state.data["block_0"]) == {"dense_0", "dense_1"}
        d0, d1 = state.data["block_0"]["dense_0"], state.data["block_0"]["dense_1"]
        data = RNG.standard_normal((3, 3)).astype(np.float64)
        want = (data @ d0["kernel"] + d0["bias"]) - np.maximum(data @ d1["kernel"] + d1["bias"], 0)
        np.testing.assert_allclose(_predict(model, state, data, "inference"), want, atol=1e-6)

    def test_state_updates_inside_a_block_nest_under_its_name(self):
        x = ax.input("x", (None, 3))
        model = ax.block(lambda h: h.batch_norm())(x)
        init, predict = ax.build(model, "train")
        state = init(ax.template((1, 3)))
        data = RNG.standard_normal((6, 3)).astype(np.float32)
        new = predict(state, data)["state"]
        assert set(_leaf_paths(new)) == {
            ("block_0", "batch_norm_0", "mean"),
            ("block_0", "batch_norm_0", "var"),
        }
        # Axon: new = momentum * old + (1 - momentum) * batch, momentum 0.1, from mean 0, var 1
        d = data.astype(np.float64)
        np.testing.assert_allclose(new["block_0"]["batch_norm_0"]["mean"], 0.9 * d.mean(0), 1e-5)
        np.testing.assert_allclose(
            new["block_0"]["batch_norm_0"]["var"], 0.1 + 0.9 * d.var(0), rtol=1e-5
        )

    def test_sharing_survives_save_and_load(self):
        x = ax.input("x", (None, 3))
        shared = ax.block(lambda h: h.dense(3).tanh())
        model = shared(shared(x))
        state = ax.build(model)[0](ax.template((1, 3)))
        loaded, loaded_state = from_bytes(to_bytes(model, state))
        assert set(_leaf_paths(loaded_state.data)) == {
            ("block_0", "dense_0", "kernel"),
            ("block_0", "dense_0", "bias"),
        }
        p = loaded_state.data["block_0"]["dense_0"]
        data = RNG.standard_normal((2, 3)).astype(np.float64)

        def f(v):
            return np.tanh(v @ p["kernel"] + p["bias"])

        np.testing.assert_allclose(
            _predict(loaded, loaded_state, data, "inference"), f(f(data)), 1e-5
        )

    def test_a_block_function_must_return_graphs(self):
        x = ax.input("x", (None, 3))
        with pytest.raises(GraphError, match="must return an Axon graph"):
            ax.block(lambda h: 3)(x)
        with pytest.raises(GraphError, match="expects a function"):
            ax.block("dense")


# ---------------------------------------------------------------------------
# namespace


class TestNamespace:
    def test_namespaces_nest(self):
        x = ax.input("x", (None, 3))
        inner = x.dense(2).namespace("inner")
        model = inner.dense(4).namespace("outer")
        state = ax.build(model)[0](ax.template((1, 3)))
        assert set(_leaf_paths(state.data)) == {
            ("outer", "inner", "dense_0", "kernel"),
            ("outer", "inner", "dense_0", "bias"),
            ("outer", "dense_0", "kernel"),
            ("outer", "dense_0", "bias"),
        }
        a, b = state.data["outer"]["inner"]["dense_0"], state.data["outer"]["dense_0"]
        data = RNG.standard_normal((2, 3)).astype(np.float64)
        want = (data @ a["kernel"] + a["bias"]) @ b["kernel"] + b["bias"]
        np.testing.assert_allclose(_predict(model, state, data, "inference"), want, atol=1e-6)

    def test_a_namespace_over_two_inputs_keeps_them_as_model_inputs(self):
        x, y = ax.input("x", (None, 2)), ax.input("y", (None, 2))
        model = ax.add(x, y).dense(1).namespace("head")
        assert set(ax.get_inputs(model)) == {"x", "y"}
        state = ax.build(model)[0]({"x": ax.template((1, 2)), "y": ax.template((1, 2))})
        p = state.data["head"]["dense_0"]
        xs, ys = np.ones((1, 2), np.float32), np.full((1, 2), 2.0, np.float32)
        out = _predict(model, state, {"x": xs, "y": ys}, "inference")
        np.testing.assert_allclose(out, (xs + ys) @ p["kernel"] + p["bias"], atol=1e-6)

    def test_a_namespace_survives_save_and_load(self):
        model = ax.input("x", (None, 3)).dense(2).namespace("enc")
        state = ax.build(model)[0](ax.template((1, 3)))
        loaded, loaded_state = from_bytes(to_bytes(model, state))
        data = RNG.standard_normal((2, 3)).astype(np.float32)
        np.testing.assert_array_equal(
            _predict(loaded, loaded_state, data, "inference"),
            _predict(model, state, data, "inference"),
        )

    def test_a_namespace_needs_a_name(self):
        x = ax.input("x", (None, 3))
        with pytest.raises(GraphError, match="non-empty string"):
            x.namespace("")


# ---------------------------------------------------------------------------
# optional / or_else (beyond tests/compiler/test_build.py)


class TestOptionalAndOrElse:
    def _model(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        return ax.or_else(m, x).dense(2)

    @pytest.mark.parametrize("mode", MODES)
    def test_layers_after_or_else_run_on_whichever_input_is_there(self, mode):
        model = self._model()
        state = ax.build(model, mode)[0]({"x": ax.template((1, 3))})
        p = state.data["dense_0"]
        xs = RNG.standard_normal((2, 3)).astype(np.float32)
        ms = RNG.standard_normal((2, 3)).astype(np.float32)
        for given, used in (({"x": xs}, xs), ({"x": xs, "m": ms}, ms)):
            out = _predict(model, state, given, mode)
            np.testing.assert_allclose(out, used @ p["kernel"] + p["bias"], atol=1e-6)

    def test_or_else_survives_save_and_load(self):
        model = self._model()
        state = ax.build(model)[0]({"x": ax.template((1, 3))})
        loaded, loaded_state = from_bytes(to_bytes(model, state))
        xs = RNG.standard_normal((2, 3)).astype(np.float32)
        for given in ({"x": xs}, {"x": xs, "m": xs + 1}):
            np.testing.assert_array_equal(
                _predict(loaded, loaded_state, given, "inference"),
                _predict(model, state, given, "inference"),
            )

    def test_or_else_of_containers_checks_them_leaf_by_leaf(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        chosen = ax.or_else(ax.container((x, m)), ax.container((x.relu(), x)))
        data = np.array([[-1.0, 2.0, -3.0]], np.float32)
        out = _predict(chosen, {}, {"x": data}, "inference")
        np.testing.assert_array_equal(out[0], data)
        assert out[1] is ax.NONE  # a container with a missing leaf is not itself missing
        wide = ax.input("w", (None, 4))
        with pytest.raises(ShapeError, match="both inputs must have one shape"):
            ax.or_else(ax.container((x, x)), ax.container((x, wide)))

    def test_or_else_of_two_missing_inputs_is_missing(self):
        a = ax.input("a", (None, 3), optional=True)
        b = ax.input("b", (None, 3), optional=True)
        x = ax.input("x", (None, 3))
        model = ax.container((ax.or_else(a, b), x))
        out = _predict(model, {}, {"x": np.zeros((1, 3), np.float32)}, "inference")
        assert out[0] is ax.NONE


class TestBidirectionalIsOneGraph:
    """Axon's bidirectional returns one graph whose output is the merged container."""

    def _model(self):
        x = ax.input("x", (None, 5, 3))
        return ax.bidirectional(
            x,
            lambda h: ax.lstm(h, 4, recurrent_initializer="zeros"),
            lambda f, b: anp.concatenate([f, b], axis=-1),
        )

    def test_one_graph_with_a_container_output_that_still_unpacks_and_indexes(self):
        out = self._model()
        assert isinstance(out, ax.Axon) and isinstance(out.output, int)
        t = declared_type(out, out.output)
        assert t == (TensorType((None, 5, 8)), (TensorType((None, 8)), TensorType((None, 8))))
        assert len(out) == 2
        seq, (_, h) = out
        assert declared_type(seq, seq.output) == TensorType((None, 5, 8))
        assert declared_type(out[0], out[0].output) == TensorType((None, 5, 8))
        assert declared_type(h, h.output) == TensorType((None, 8))
        assert isinstance(out[1], tuple) and len(out[1]) == 2

    @pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
    @pytest.mark.parametrize("mode", MODES)
    def test_build_takes_it_directly(self, compiler, mode):
        out = self._model()
        init, predict = ax.build(out, mode, compiler=compiler)
        state = init(ax.template((1, 5, 3)))
        x = RNG.standard_normal((2, 5, 3)).astype(np.float32)
        got = predict(state, x)
        seq, (c, h) = got["prediction"] if mode == "train" else got
        want_seq, (want_c, want_h) = _expected_bi_lstm(state.data["block_0"]["lstm_0"], x)
        np.testing.assert_allclose(seq, want_seq, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)

    def test_trains_with_a_loss_list_over_its_outputs(self):
        out = self._model()
        x = RNG.standard_normal((4, 5, 3)).astype(np.float32)
        y = (np.zeros((4, 5, 8), np.float32), (np.zeros((4, 8), np.float32),) * 2)
        step = ax.train.compile_step(
            out, [("mean_squared_error", 1.0)], ax.optimizers.sgd(0.1), compiler="reference"
        )
        ts = step.init(ax.template((None, 5, 3)))
        want_seq, _ = _expected_bi_lstm(ts.model_state.data["block_0"]["lstm_0"], x)
        _, result = step(ts, x, y)
        np.testing.assert_allclose(result["loss"], np.mean(want_seq**2), rtol=1e-5)

    def test_as_graph_draws_it(self):
        text = ax.display.as_graph(self._model(), ax.template((1, 5, 3)))
        assert "(:nx) {{1, 5, 8}, {{1, 8}, {1, 8}}}" in text.splitlines()[-1 - text.count("-->")]

    def test_a_random_initial_state_is_one_onnx_input_shared_by_both_directions(self):
        x = ax.input("x", (None, 5, 3))
        out = ax.bidirectional(
            x, lambda h: ax.lstm(h, 4), lambda f, b: anp.concatenate([f, b], axis=-1)
        )
        init, predict = ax.build(out)
        state = init(ax.template((1, 5, 3)))
        data = RNG.standard_normal((2, 5, 3)).astype(np.float32)
        reference = ax.build(out, compiler="reference")[1](state, data)
        got = predict(state, data)
        for a, b in zip(ax.ir.tree_leaves(got), ax.ir.tree_leaves(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
