"""ax.build: templates, init_fn (given values kept, the rest seeded), predict_fn and its checks."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

import axonc as ax
from axonc.errors import InputError, ShapeError, ShapeHintWarning, StateError

RNG = np.random.default_rng(0)


def _mlp():
    return ax.input("x", (None, 4)).dense(8, activation="relu").dense(2)


def _numpy_mlp(data, x):
    """The MLP written out: relu(x @ k0 + b0) @ k1 + b1, in float64."""
    d0, d1 = data["dense_0"], data["dense_1"]
    h = np.maximum(x.astype(np.float64) @ d0["kernel"] + d0["bias"], 0.0)
    return h @ d1["kernel"] + d1["bias"]


def _x(n=3, f=4):
    return RNG.standard_normal((n, f)).astype(np.float32)


def _leaves(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


class TestTemplates:
    @pytest.mark.parametrize(
        "template",
        [
            ax.template((1, 4), "f32"),
            np.zeros((5, 4), np.float32),
            {"x": ax.template((2, 4))},
            {"x": np.zeros((2, 4), np.float32)},
        ],
        ids=["template", "array", "dict_template", "dict_array"],
    )
    def test_every_template_form_gives_the_same_structure(self, template):
        init, _ = ax.build(_mlp())
        state = init(template)
        shapes = {path: v.shape for path, v in _leaves(state.data)}
        assert shapes == {
            ("dense_0", "kernel"): (4, 8),
            ("dense_0", "bias"): (8,),
            ("dense_1", "kernel"): (8, 2),
            ("dense_1", "bias"): (2,),
        }
        assert all(v.dtype == np.float32 for _, v in _leaves(state.data))

    def test_multi_input_model_needs_a_dict(self):
        a, b = ax.input("a", (None, 3)), ax.input("b", (None, 3))
        init, _ = ax.build(ax.add(a, b).dense(2))
        with pytest.raises(InputError) as err:
            init(ax.template((1, 3)))
        assert "'a'" in str(err.value) and "'b'" in str(err.value)
        assert "dict" in str(err.value)
        state = init({"a": ax.template((1, 3)), "b": ax.template((1, 3))})
        assert state.data["dense_0"]["kernel"].shape == (3, 2)

    def test_single_template_goes_to_the_only_required_input(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        init, _ = ax.build(ax.or_else(m, x).dense(2))
        state = init(ax.template((1, 3)))
        assert state.data["dense_0"]["kernel"].shape == (3, 2)

    def test_unknown_template_name(self):
        init, _ = ax.build(_mlp())
        with pytest.raises(InputError) as err:
            init({"image": ax.template((1, 4))})
        assert "unknown input(s) 'image'" in str(err.value)
        assert "'x'" in str(err.value)

    def test_a_template_contradicting_the_declared_shape_warns_and_is_followed(self):
        init, _ = ax.build(_mlp())
        with pytest.warns(
            ShapeHintWarning, match=r"declared with shape \(None, 4\) but got \(1, 5\)"
        ):
            state = init(ax.template((1, 5)))
        assert state.data["dense_0"]["kernel"].shape == (5, 8)


class TestInit:
    def test_initialisation_is_deterministic_from_the_seed(self):
        a = ax.build(_mlp(), seed=3)[0](ax.template((1, 4)))
        b = ax.build(_mlp(), seed=3)[0](ax.template((1, 4)))
        c = ax.build(_mlp(), seed=4)[0](ax.template((1, 4)))
        for (pa, va), (pb, vb) in zip(_leaves(a.data), _leaves(b.data)):
            assert pa == pb
            np.testing.assert_array_equal(va, vb)
        assert not np.array_equal(a.data["dense_0"]["kernel"], c.data["dense_0"]["kernel"])

    def test_layers_get_their_own_draws_and_the_default_initialisers(self):
        x = ax.input("x", (None, 4))
        state = ax.build(x.dense(4).dense(4))[0](ax.template((1, 4)))
        k0, k1 = state.data["dense_0"]["kernel"], state.data["dense_1"]["kernel"]
        assert not np.array_equal(k0, k1)
        limit = np.sqrt(6.0 / (4 + 4))  # glorot_uniform
        assert np.all(np.abs(k0) <= limit) and k0.std() > 0
        np.testing.assert_array_equal(state.data["dense_0"]["bias"], np.zeros(4))

    def test_given_values_are_kept_and_the_rest_initialised(self):
        init, _ = ax.build(_mlp())
        k0 = np.arange(32, dtype=np.float32).reshape(4, 8)
        b1 = np.array([5.0, 6.0], np.float32)
        state = init(ax.template((1, 4)), {"dense_0": {"kernel": k0}, "dense_1": {"bias": b1}})
        np.testing.assert_array_equal(state.data["dense_0"]["kernel"], k0)
        np.testing.assert_array_equal(state.data["dense_1"]["bias"], b1)
        fresh = init(ax.template((1, 4)))
        np.testing.assert_array_equal(
            state.data["dense_1"]["kernel"], fresh.data["dense_1"]["kernel"]
        )
        np.testing.assert_array_equal(state.data["dense_0"]["bias"], np.zeros(8))

    def test_a_model_state_is_accepted_as_initial(self):
        init, predict = ax.build(_mlp())
        first = init(ax.template((1, 4)))
        again = init(ax.template((1, 4)), ax.ModelState.new(first.data))
        for (_, a), (_, b) in zip(_leaves(first.data), _leaves(again.data)):
            np.testing.assert_array_equal(a, b)
        x = _x()
        np.testing.assert_array_equal(predict(first, x), predict(again, x))

    def test_given_values_take_the_parameter_dtype(self):
        # Axon casts an initial value to the parameter's type (Nx.as_type).
        init, _ = ax.build(_mlp())
        k0 = np.ones((4, 8), np.float64) / 3
        state = init(ax.template((1, 4)), {"dense_0": {"kernel": k0}})
        kernel = state.data["dense_0"]["kernel"]
        assert kernel.dtype == np.float32
        np.testing.assert_array_equal(kernel, k0.astype(np.float32))

    def test_a_given_value_of_the_wrong_shape_names_the_path(self):
        init, _ = ax.build(_mlp())
        with pytest.raises(StateError) as err:
            init(ax.template((1, 4)), {"dense_1": {"kernel": np.zeros((2, 8))}})
        msg = str(err.value)
        assert "dense_1/kernel" in msg and "(2, 8)" in msg and "(8, 2)" in msg

    def test_unexpected_initial_keys_warn(self):
        # Axon 0.8.1 logs "found unexpected key in the initial parameters map" and drops it.
        init, _ = ax.build(_mlp())
        with pytest.warns(UserWarning, match="dense_9/kernel"):
            state = init(ax.template((1, 4)), {"dense_9": {"kernel": np.zeros((4, 8))}})
        assert "dense_9" not in state.data

    def test_initial_of_the_wrong_type(self):
        init, _ = ax.build(_mlp())
        with pytest.raises(StateError, match="ModelState or a nested dict"):
            init(ax.template((1, 4)), [np.zeros(3)])

    def test_recurrent_gate_maps_keep_given_leaves(self):
        seq = ax.input("s", (None, 5, 3))
        out, _ = ax.lstm(seq, 4)
        init, _ = ax.build(out)
        wii = np.full((3, 4), 0.25, np.float32)
        state = init(ax.template((1, 5, 3)), {"lstm_0": {"input_kernel": {"wii": wii}}})
        np.testing.assert_array_equal(state.data["lstm_0"]["input_kernel"]["wii"], wii)
        fresh = init(ax.template((1, 5, 3)))
        for gate in ("wif", "wig", "wio"):
            np.testing.assert_array_equal(
                state.data["lstm_0"]["input_kernel"][gate],
                fresh.data["lstm_0"]["input_kernel"][gate],
            )
        assert set(state.data["lstm_0"]) == {"input_kernel", "hidden_kernel", "bias"}
        with pytest.raises(StateError, match="lstm_0/input_kernel/wii"):
            init(ax.template((1, 5, 3)), {"lstm_0": {"input_kernel": {"wii": np.zeros((4, 4))}}})

    def test_parameters_and_state_are_classified(self):
        x = ax.input("x", (None, 3))
        init, _ = ax.build(x.dense(3).batch_norm(), "train")
        state = init(ax.template((2, 3)))
        assert state.state == {("batch_norm_0", "mean"), ("batch_norm_0", "var")}
        assert ("batch_norm_0", "gamma") in state.parameters
        np.testing.assert_array_equal(state.data["batch_norm_0"]["mean"], np.zeros(3))
        np.testing.assert_array_equal(state.data["batch_norm_0"]["var"], np.ones(3))


class TestPredict:
    def test_predict_matches_the_formula_for_array_and_dict(self):
        init, predict = ax.build(_mlp())
        state = init(ax.template((1, 4)))
        x = _x(5)
        want = _numpy_mlp(state.data, x)
        np.testing.assert_allclose(predict(state, x), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(predict(state, x), predict(state, {"x": x}))
        assert predict(state, x).dtype == np.float32
        np.testing.assert_array_equal(predict(state.data, x), predict(state, x))

    def test_ax_predict_runs_once(self):
        model = _mlp()
        state = ax.build(model)[0](ax.template((1, 4)))
        x = _x()
        reference = ax.build(model, compiler="reference")[1](state, x)
        np.testing.assert_array_equal(ax.predict(model, state, x), reference)

    def test_wrong_input_name(self):
        init, predict = ax.build(_mlp())
        state = init(ax.template((1, 4)))
        with pytest.raises(InputError) as err:
            predict(state, {"y": _x()})
        assert "unknown input(s) 'y'" in str(err.value) and "expected 'x'" in str(err.value)

    def test_missing_required_input(self):
        a, b = ax.input("a", (None, 2)), ax.input("b", (None, 2))
        init, predict = ax.build(ax.add(a, b))
        state = init({"a": ax.template((1, 2)), "b": ax.template((1, 2))})
        with pytest.raises(InputError, match="input 'b' is required but was not given"):
            predict(state, {"a": np.zeros((1, 2), np.float32)})

    def test_float_given_for_an_integer_input(self):
        ids = ax.input("ids", (None, 3), dtype="s32")
        init, predict = ax.build(ids.embedding(10, 2))
        state = init(ax.template((1, 3), "s32"))
        with pytest.raises(InputError) as err:
            predict(state, np.zeros((1, 3), np.float32))
        msg = str(err.value)
        assert "input 'ids'" in msg and "expected dtype s32" in msg and "float32" in msg
        out = predict(state, np.array([[1, 2, 9]], np.int64))
        np.testing.assert_array_equal(out[0], state.data["embedding_0"]["kernel"][[1, 2, 9]])

    def test_integers_given_for_a_float_input_are_converted(self):
        init, predict = ax.build(_mlp())
        state = init(ax.template((1, 4)))
        ints = np.array([[1, -2, 3, 0]], np.int32)
        np.testing.assert_array_equal(predict(state, ints), predict(state, ints.astype(np.float32)))

    def test_data_of_a_rank_the_layers_refuse_is_a_shape_error_naming_the_layer(self):
        init, predict = ax.build(_mlp())
        state = init(ax.template((1, 4)))
        with pytest.warns(ShapeHintWarning), pytest.raises(ShapeError) as err:
            predict(state, np.zeros((4,), np.float32))
        assert "layer 'dense_0' (dense)" in str(err.value) and "rank >= 2" in str(err.value)

    @pytest.mark.parametrize(("shape", "needed"), [((1, 5), (5, 8)), ((2, 4, 1), (1, 8))])
    def test_data_the_state_was_not_initialised_for_names_the_parameter(self, shape, needed):
        init, predict = ax.build(_mlp())
        state = init(ax.template((1, 4)))
        warns = pytest.warns(ShapeHintWarning, match=r"declared with shape \(None, 4\)")
        with warns, pytest.raises(StateError) as err:
            predict(state, np.zeros(shape, np.float32))
        msg = str(err.value)
        assert "dense_0/kernel" in msg and str(shape) in msg
        assert f"need shape {needed} but the state holds (4, 8)" in msg

    def test_missing_parameter_says_how_to_provide_it(self):
        _, predict = ax.build(_mlp())
        with pytest.raises(
            StateError, match="layer 'dense_0' \\(dense\\) has no value for 'kernel'"
        ):
            predict({}, _x())

    def test_bad_state_type(self):
        _, predict = ax.build(_mlp())
        with pytest.raises(StateError, match="got list"):
            predict([1], _x())

    def test_bad_mode_and_model(self):
        with pytest.raises(InputError, match="mode must be 'inference' or 'train', got 'eval'"):
            ax.build(_mlp(), "eval")
        with pytest.raises(InputError, match="expects an Axon graph"):
            ax.build("model")


class TestModes:
    def test_train_mode_returns_prediction_and_batch_norm_state(self):
        x = ax.input("x", (None, 3))
        init, predict = ax.build(x.batch_norm(), "train")
        state = init(ax.template((4, 3)))
        data = RNG.standard_normal((4, 3)).astype(np.float32) * 2 + 1
        out = predict(state, data)
        assert set(out) == {"prediction", "state"}
        d = data.astype(np.float64)
        mu = d.mean(axis=0)
        var = ((d - mu) ** 2).mean(axis=0)  # biased
        # Axon's batch_norm draws gamma with glorot_uniform (beta zeros).
        gamma, beta = state.data["batch_norm_0"]["gamma"], state.data["batch_norm_0"]["beta"]
        want = gamma * (d - mu) / np.sqrt(var + 1e-5) + beta
        np.testing.assert_allclose(out["prediction"], want, atol=1e-5)
        new = out["state"]["batch_norm_0"]
        assert set(out["state"]) == {"batch_norm_0"} and set(new) == {"mean", "var"}
        # Axon's momentum 0.1 is the weight of the old value (mean 0, var 1 at init).
        np.testing.assert_allclose(new["mean"], 0.9 * mu, rtol=1e-5)
        np.testing.assert_allclose(new["var"], 0.1 + 0.9 * var, rtol=1e-5)

    def test_inference_mode_uses_running_statistics(self):
        x = ax.input("x", (None, 3))
        init, predict = ax.build(x.batch_norm())
        mean, var = np.array([1.0, 2.0, 3.0], np.float32), np.array([4.0, 1.0, 0.25], np.float32)
        gamma, beta = np.array([2.0, -1.0, 0.5], np.float32), np.array([0.0, 1.0, -3.0], np.float32)
        given = {"mean": mean, "var": var, "gamma": gamma, "beta": beta}
        state = init(ax.template((1, 3)), {"batch_norm_0": given})
        data = _x(2, 3)
        want = gamma * (data - mean) / np.sqrt(var.astype(np.float64) + 1e-5) + beta
        np.testing.assert_allclose(predict(state, data), want, atol=1e-5)

    def test_inference_mode_ignores_dropout(self):
        x = ax.input("x", (None, 16))
        init, predict = ax.build(x.dropout(rate=0.5, seed=1))
        state = init(ax.template((1, 16)))
        assert state.data == {}
        data = _x(4, 16)
        np.testing.assert_array_equal(predict(state, data), data)

    def test_train_mode_applies_dropout_and_advances_its_key(self):
        x = ax.input("x", (None, 64))
        init, predict = ax.build(x.dropout(rate=0.5, seed=1), "train")
        state = init(ax.template((1, 64)))
        assert state.data["dropout_0"]["key"].dtype == np.uint32
        out = predict(state, np.ones((8, 64), np.float32))
        values = set(np.unique(out["prediction"]).tolist())
        assert values == {0.0, 2.0}
        assert not np.array_equal(out["state"]["dropout_0"]["key"], state.data["dropout_0"]["key"])


class TestOptionalInputs:
    def _model(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        return ax.container(
            {
                "sum": ax.add(x, m),
                "chosen": ax.or_else(m, x),
                "passed": ax.optional(m),
                "plain": x.relu(),
            }
        )

    def test_missing_optional_input_resolves_to_none(self):
        init, predict = ax.build(self._model())
        state = init(ax.template((1, 3)))
        x = np.array([[-1.0, 2.0, 3.0]], np.float32)
        out = predict(state, {"x": x})
        assert out["sum"] is ax.NONE
        assert out["passed"] is ax.NONE
        np.testing.assert_array_equal(out["chosen"], x)
        np.testing.assert_array_equal(out["plain"], [[0.0, 2.0, 3.0]])
        assert predict(state, {"x": x, "m": None})["sum"] is ax.NONE

    def test_given_optional_input_is_used(self):
        init, predict = ax.build(self._model())
        state = init(ax.template((1, 3)))
        x = np.array([[1.0, 2.0, 3.0]], np.float32)
        m = np.array([[10.0, 20.0, 30.0]], np.float32)
        out = predict(state, {"x": x, "m": m})
        np.testing.assert_array_equal(out["sum"], x + m)
        np.testing.assert_array_equal(out["chosen"], m)
        np.testing.assert_array_equal(out["passed"], m)

    def test_a_layer_after_a_missing_input_owns_no_parameters(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        model = ax.container((x.dense(2), m.dense(5)))
        init, predict = ax.build(model)
        assert set(init(ax.template((1, 3))).data) == {"dense_0"}
        both = init({"x": ax.template((1, 3)), "m": ax.template((1, 3))})
        assert both.data["dense_1"]["kernel"].shape == (3, 5)
        out = predict(both, {"x": _x(1, 3)})
        assert out[1] is ax.NONE and out[0].shape == (1, 2)


class TestScopes:
    def test_block_shares_one_parameter_set(self):
        x = ax.input("x", (None, 3))
        shared = ax.block(lambda h: h.dense(4).relu())
        model = ax.add(shared(x), shared(x.tanh()))
        init, predict = ax.build(model)
        state = init(ax.template((1, 3)))
        assert set(state.data) == {"block_0"}
        assert set(state.data["block_0"]) == {"dense_0"}
        p = state.data["block_0"]["dense_0"]
        assert p["kernel"].shape == (3, 4) and p["bias"].shape == (4,)
        data = _x(2, 3).astype(np.float64)

        def f(v):
            return np.maximum(v @ p["kernel"] + p["bias"], 0.0)

        np.testing.assert_allclose(predict(state, data), f(data) + f(np.tanh(data)), atol=1e-6)

    def test_two_blocks_get_two_parameter_sets(self):
        x = ax.input("x", (None, 3))
        b1 = ax.block(lambda h: h.dense(4))
        b2 = ax.block(lambda h: h.dense(4))
        state = ax.build(ax.add(b1(x), b2(x)))[0](ax.template((1, 3)))
        assert set(state.data) == {"block_0", "block_1"}

    def test_namespace_nests_parameters(self):
        x = ax.input("x", (None, 3))
        model = x.dense(2).namespace("encoder").dense(5)
        init, predict = ax.build(model)
        state = init(ax.template((1, 3)))
        assert state.data["encoder"]["dense_0"]["kernel"].shape == (3, 2)
        assert state.data["dense_0"]["kernel"].shape == (2, 5)
        data = _x(2, 3).astype(np.float64)
        inner = state.data["encoder"]["dense_0"]
        outer = state.data["dense_0"]
        want = (data @ inner["kernel"] + inner["bias"]) @ outer["kernel"] + outer["bias"]
        np.testing.assert_allclose(predict(state, data), want, atol=1e-6)


# ---- build(debug=True) ----------------------------------------------------------------------


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_debug_logs_traversal_init_predict_and_each_compilation(caplog, compiler):
    model = ax.input("x", (None, 3)).dense(2).relu()
    with caplog.at_level(logging.DEBUG, logger="axonc"):
        init_fn, predict_fn = ax.build(model, compiler=compiler, debug=True)
        state = init_fn(ax.template((1, 3)))
        predict_fn(state, np.ones((2, 3), np.float32))
        predict_fn(state, np.ones((4, 3), np.float32))  # same signature: no new session
    messages = [r.getMessage() for r in caplog.records if r.name == "axonc"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "axonc")
    assert re.fullmatch(r"axonc finished graph traversal \(3 layers\) in \d+\.\dms", messages[0])
    assert re.fullmatch(r"axonc finished init \(2 tensors\) in \d+\.\dms", messages[1])
    predicts = [m for m in messages if m.startswith("axonc finished predict")]
    compiles = [m for m in messages if "compiled a new onnxruntime session" in m]
    assert len(predicts) == 2
    assert len(compiles) == (1 if compiler == "onnxruntime" else 0)
    if compiles:
        assert "x: float32[2, 3]" in compiles[0]


def test_without_debug_build_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="axonc"):
        init_fn, predict_fn = ax.build(ax.input("x", (None, 3)).dense(2))
        predict_fn(init_fn(ax.template((1, 3))), np.ones((2, 3), np.float32))
    assert not [r for r in caplog.records if r.name == "axonc"]
