"""Deferred shapes and dtypes: graphs resolved when a template or data arrives (Axon 0.8.1).

`ax.input(name)` needs neither shape nor dtype; shape functions, traced layers,
dtype rules and the compiled train step are resolved per input signature, and a
declared shape is a hint the data may contradict (one ShapeHintWarning).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.build import resolve, template_types
from axonc.errors import GraphError, OptionError, ShapeError, ShapeHintWarning, StateError
from axonc.to_onnx.export import to_onnx

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 3)).astype(np.float32)
Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
BATCHES = [(X[i : i + 16], Y[i : i + 16]) for i in range(0, 48, 16)]


def _mlp(x: ax.Axon) -> ax.Axon:
    return x.dense(8, activation="tanh").dense(1)


def _leaves(tree, prefix=()):
    for k, v in sorted(tree.items()):
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), np.asarray(v)


def _assert_same_state(a, b):
    la, lb = dict(_leaves(a.data)), dict(_leaves(b.data))
    assert la.keys() == lb.keys()
    for path in la:
        np.testing.assert_array_equal(la[path], lb[path], err_msg="/".join(path))


class TestTraining:
    def test_a_shapeless_mlp_trains_with_the_loop_as_the_declared_one_does(self):
        def run(x):
            loop = ax.Loop.trainer(_mlp(x), "mean_squared_error", ax.optimizers.sgd(0.05), log=0)
            return loop.run(BATCHES, epochs=3, progress=False)

        shapeless = run(ax.input("data"))
        declared = run(ax.input("data", (None, 3), dtype="f32"))
        assert shapeless.data["dense_0"]["kernel"].shape == (3, 8)
        _assert_same_state(shapeless, declared)

    def test_a_shapeless_mlp_trains_with_compile_step_and_its_loss_falls(self):
        def train(x):
            step = ax.train.compile_step(_mlp(x), "mean_squared_error", ax.optimizers.sgd(0.05))
            ts = step.init(X[:1])
            losses = []
            for _ in range(30):
                ts, out = step(ts, X, Y)
                losses.append(float(out["loss"]))
            return ts.model_state, losses

        state, losses = train(ax.input("data"))
        declared, declared_losses = train(ax.input("data", (None, 3)))
        assert losses[-1] < 0.5 * losses[0]
        np.testing.assert_array_equal(losses, declared_losses)
        _assert_same_state(state, declared)
        # the first loss is the mean squared error of the initial model, computed in numpy
        init_state = ax.build(_mlp(ax.input("data")), mode="train")[0](X[:1])
        p = init_state.data
        h = np.tanh(X @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
        pred = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
        np.testing.assert_allclose(losses[0], np.mean((pred - Y) ** 2), rtol=1e-5)


class TestDtypes:
    def test_integer_ids_reach_embedding_through_a_shapeless_input(self):
        model = ax.input("ids").embedding(10, 4)
        init, predict = ax.build(model)
        state = init(np.zeros((1, 5), np.int32))
        ids = np.array([[1, 2, 3, 9, 0]], np.int64)
        table = state.data["embedding_0"]["kernel"]
        np.testing.assert_array_equal(predict(state, ids), table[ids])
        ref = ax.build(model, compiler="reference")[1]
        np.testing.assert_array_equal(ref(state, ids.astype(np.int32)), table[ids])

    def test_embedding_ids_train_through_a_shapeless_input(self):
        model = ax.input("ids").embedding(6, 2).flatten().dense(1)
        ids = RNG.integers(0, 6, size=(16, 3)).astype(np.int32)
        target = RNG.normal(size=(16, 1)).astype(np.float32)
        loop = ax.Loop.trainer(model, "mean_squared_error", ax.optimizers.adam(0.05), log=0)
        state = loop.run([(ids, target)], epochs=2, progress=False)
        assert state.data["embedding_0"]["kernel"].shape == (6, 2)

    def test_float64_data_for_an_input_without_a_dtype_runs_as_f32(self):
        init, predict = ax.build(_mlp(ax.input("x")))
        state = init(np.zeros((1, 3)))  # f64 template
        assert state.data["dense_0"]["kernel"].dtype == np.float32
        assert predict(state, X.astype(np.float64)).dtype == np.float32


class TestShapeFunctions:
    def test_a_param_shape_function_runs_on_a_shapeless_input(self):
        x = ax.input("x")
        model = ax.layer(lambda t, a, **_: t * a, [x, ax.param("alpha", lambda _: ())])
        init, predict = ax.build(model)
        state = init(ax.template((2, 3)))
        alpha = state.data["custom_0"]["alpha"]
        assert alpha.shape == ()
        np.testing.assert_allclose(predict(state, X), X * alpha, rtol=1e-6)

    def test_a_shape_function_of_the_last_dim_follows_the_data(self):
        x = ax.input("x")
        model = ax.layer(
            lambda t, w, **_: t * w, [x, ax.param("w", lambda s: (s[-1],), initializer="ones")]
        )
        init, predict = ax.build(model)
        state = init(np.zeros((1, 5), np.float32))
        assert state.data["custom_0"]["w"].shape == (5,)
        x5 = RNG.normal(size=(2, 5)).astype(np.float32)
        np.testing.assert_array_equal(predict(state, x5), x5)

    def test_nx_reading_the_shape_is_traced_when_the_data_arrives(self):
        x = ax.input("x")
        model = ax.nx(x, lambda t: t.reshape((-1, t.shape[1] * t.shape[2])))
        _, predict = ax.build(model)
        data = RNG.normal(size=(4, 2, 3)).astype(np.float32)
        np.testing.assert_array_equal(predict({}, data), data.reshape(4, 6))


class TestHints:
    def test_data_contradicting_the_declared_shape_warns_once_and_runs(self):
        # Axon's image-denoising example declares {nil, 1, 28, 28} and feeds {32, 28, 28, 1}
        x = ax.input("image", (None, 1, 28, 28))
        model = x.conv(2, kernel_size=3, padding="same").flatten().dense(1)
        images = RNG.normal(size=(32, 28, 28, 1)).astype(np.float32)
        target = RNG.normal(size=(32, 1)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            init, predict = ax.build(model)
            state = init(images)
            assert predict(state, images).shape == (32, 1)
            assert predict(state, images[:5]).shape == (5, 1)
            loop = ax.Loop.trainer(model, "mean_squared_error", "sgd", log=0)
            loop.run([(images, target)], progress=False)
        hints = [w for w in caught if issubclass(w.category, ShapeHintWarning)]
        assert len(hints) == 1
        assert "input 'image' is declared with shape (None, 1, 28, 28) but got (32, 28, 28, 1)" in (
            str(hints[0].message)
        )
        assert state.data["conv_0"]["kernel"].shape == (3, 3, 1, 2)

    def test_data_that_fits_the_declaration_gives_no_warning(self):
        init, predict = ax.build(_mlp(ax.input("x", (None, 3))))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            predict(init(X[:1]), X)

    def test_a_mismatch_between_declared_shapes_is_still_reported_at_construction(self):
        a, b = ax.input("a", (None, 3)), ax.input("b", (None, 4))
        with pytest.raises(ShapeError) as err:
            ax.add(a, b)
        assert "'a'" in str(err.value) and "'b'" in str(err.value)

    def test_a_mismatch_between_shapeless_inputs_is_reported_when_data_arrives(self):
        model = ax.add(ax.input("a"), ax.input("b"))
        init, _ = ax.build(model)
        with pytest.raises(ShapeError) as err:
            init({"a": ax.template((1, 3)), "b": ax.template((1, 4))})
        assert "layer 'add_0'" in str(err.value)
        assert "'a'" in str(err.value) and "'b'" in str(err.value)


class TestExport:
    def test_a_shapeless_export_without_a_template_says_to_give_one(self, tmp_path):
        model = _mlp(ax.input("x"))
        state = ax.build(model)[0](ax.template((1, 3)))
        with pytest.raises(OptionError, match="input 'x' has no declared shape") as err:
            ax.export_onnx(model, state, tmp_path / "m.onnx")
        assert "template" in str(err.value)

    def test_a_shapeless_export_with_a_template_has_a_dynamic_batch(self, tmp_path):
        model = _mlp(ax.input("x"))
        state = ax.build(model)[0](ax.template((1, 3)))
        proto = ax.export_onnx(model, state, tmp_path / "m.onnx", template=ax.template((1, 3)))
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and dims[1].dim_value == 3
        onnx.checker.check_model(proto)

    def test_an_export_uses_the_declaration_not_the_state(self):
        model = _mlp(ax.input("x", (None, 3)))
        proto = to_onnx(model, ax.build(model)[0](ax.template((1, 3))))
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and dims[1].dim_value == 3

    def test_saving_a_layer_still_waiting_for_shapes_needs_a_template(self, tmp_path):
        x = ax.input("x")
        model = ax.layer(lambda t, w, **_: t * w, [x, ax.param("w", lambda s: (s[-1],))])
        state = ax.build(model)[0](ax.template((1, 3)))
        with pytest.raises(GraphError, match=r"give ax\.save a template"):
            ax.save(model, state, tmp_path / "m.axon")
        ax.save(model, state, tmp_path / "m.axon", template=ax.template((1, 3)))
        loaded, loaded_state = ax.load(tmp_path / "m.axon")
        np.testing.assert_array_equal(
            ax.build(loaded)[1](loaded_state, X), ax.build(model)[1](state, X)
        )


class TestCache:
    def test_one_resolution_per_input_signature(self):
        model = _mlp(ax.input("x"))
        a = resolve(model, template_types(model, ax.template((4, 3))))
        assert resolve(model, template_types(model, ax.template((9, 3)))) is a  # batch is dynamic
        b = resolve(model, template_types(model, ax.template((4, 5))))
        assert b is not a
        assert ax.get_inputs(a) == {"x": (None, 3)} and ax.get_inputs(b) == {"x": (None, 5)}

    def test_a_custom_layer_is_traced_once_per_signature(self):
        calls = []

        def fn(t, **_):
            calls.append(t.shape)
            return anp.tanh(t)

        model = ax.layer(fn, [ax.input("x")])
        assert calls == []  # nothing to trace with before the shapes are known
        init, predict = ax.build(model)
        state = init(ax.template((1, 3)))
        for batch in (1, 2, 7):
            predict(state, np.zeros((batch, 3), np.float32))
        assert calls == [(None, 3), (None, 3)]  # one trace per mode, for the one signature
        predict(state, np.zeros((2, 4), np.float32))
        assert calls[2:] == [(None, 4), (None, 4)]
        assert predict.compiled.compiled_signatures == 2

    def test_the_train_step_is_built_once_per_signature(self):
        model = _mlp(ax.input("x"))
        step = ax.train.compile_step(model, "mean_squared_error", ax.optimizers.sgd(0.01))
        ts = step.init(X[:1])
        for batch in (4, 8, 4):
            ts, _ = step(ts, X[:batch], Y[:batch])
        assert len(step._graphs) == 1
        wide = RNG.normal(size=(4, 5)).astype(np.float32)
        with pytest.raises(StateError, match="dense_0/kernel"):
            step(ts, wide, Y[:4])  # another signature, which the state does not fit
