"""Custom layers with optional inputs: `ax.layer(fn, [x, ax.optional(mask)])` (Axon.optional).

fn receives None for a missing optional input; each combination of missing inputs
is traced into its own body per mode ("inference/absent=1", ...).
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.dtypes import TensorType
from axonc.errors import GraphError, OptionError
from axonc.serialize import from_bytes, to_bytes
from axonc.shape_inference import declared_type, make_node

RNG = np.random.default_rng(23)
MODES = ("inference", "train")


def _predict(model, state, inputs, mode):
    out = ax.build(model, mode)[1](state, inputs)
    return out["prediction"] if mode == "train" else out


def _masked_multiply(mask_shape=(None, 3)):
    x = ax.input("x", (None, 3))
    mask = ax.input("mask", mask_shape, optional=True)
    return ax.layer(lambda x, m, **o: x if m is None else x * m, [x, ax.optional(mask)])


def _data(n=2):
    x = RNG.standard_normal((n, 3)).astype(np.float32)
    m = (RNG.random((n, 3)) > 0.5).astype(np.float32)
    return x, m


class TestMaskedMultiply:
    def test_one_body_per_mode_and_missing_pattern(self):
        node = _masked_multiply().node
        assert set(node.subgraphs) == {
            "inference",
            "train",
            "inference/absent=1",
            "train/absent=1",
        }
        assert node.options["optional"] == (1,)
        # the body for a missing mask takes only x: fn returned its argument unchanged
        absent = node.subgraphs["inference/absent=1"]
        assert {n.op for n in absent.nodes.values()} == {"argument"}

    @pytest.mark.parametrize("mode", MODES)
    def test_mask_given_multiplies(self, mode):
        model = _masked_multiply()
        x, m = _data()
        out = _predict(model, {}, {"x": x, "mask": m}, mode)
        np.testing.assert_array_equal(out, x * m)

    @pytest.mark.parametrize("mode", MODES)
    def test_mask_left_out_passes_x_through(self, mode):
        model = _masked_multiply()
        x, _ = _data()
        np.testing.assert_array_equal(_predict(model, {}, {"x": x}, mode), x)
        np.testing.assert_array_equal(_predict(model, {}, {"x": x, "mask": None}, mode), x)

    def test_the_output_type_does_not_depend_on_the_mask(self):
        model = _masked_multiply()
        assert declared_type(model, model.output) == TensorType((None, 3))

    def test_an_optional_input_without_a_declared_shape(self):
        model = _masked_multiply(mask_shape=None)
        x, m = _data()
        np.testing.assert_array_equal(_predict(model, {}, {"x": x, "mask": m}, "inference"), x * m)
        np.testing.assert_array_equal(_predict(model, {}, {"x": x}, "inference"), x)

    def test_survives_save_and_load(self):
        model = _masked_multiply()
        loaded, _ = from_bytes(to_bytes(model, {}))
        assert set(loaded.node.subgraphs) == set(model.node.subgraphs)
        assert loaded.node.options["optional"] == (1,)
        x, m = _data(3)
        for mode in MODES:
            np.testing.assert_array_equal(_predict(loaded, {}, {"x": x, "mask": m}, mode), x * m)
            np.testing.assert_array_equal(_predict(loaded, {}, {"x": x}, mode), x)


class TestMissingPatterns:
    def _model(self):
        x = ax.input("x", (None, 3))
        a = ax.input("a", (None, 3), optional=True)
        b = ax.input("b", (None, 3), optional=True)

        def fn(w, x, a, b, *, mode, shift):
            out = x * w + shift
            if a is not None:
                out = out + a
            if b is not None:
                out = out - 2 * b
            return out * (0.5 if mode == "train" else 1.0)

        inputs = [ax.param("w", (3,)), x, ax.optional(a), ax.optional(b)]
        return ax.layer(fn, inputs, shift=1.0)

    def test_roles_index_graph_inputs_not_params(self):
        node = self._model().node
        patterns = ("", "/absent=1", "/absent=2", "/absent=1,2")
        assert set(node.subgraphs) == {m + p for m in MODES for p in patterns}
        assert node.options["optional"] == (1, 2)

    @pytest.mark.parametrize("mode", MODES)
    def test_each_combination_runs_its_own_body(self, mode):
        model = self._model()
        state = ax.build(model, mode)[0]({"x": ax.template((1, 3))})
        w = state.data["custom_0"]["w"]
        assert w.shape == (3,)
        x, a = _data()
        b = RNG.standard_normal((2, 3)).astype(np.float32)
        scale = 0.5 if mode == "train" else 1.0
        base = x.astype(np.float64) * w + 1.0
        cases = [
            ({"x": x, "a": a, "b": b}, base + a - 2 * b),
            ({"x": x, "a": a}, base + a),
            ({"x": x, "b": b}, base - 2 * b),
            ({"x": x}, base),
        ]
        for given, want in cases:
            out = _predict(model, state, given, mode)
            np.testing.assert_allclose(out, scale * want, rtol=1e-6, atol=1e-6)


class TestNullifying:
    def test_a_missing_input_not_marked_optional_nullifies_the_layer(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        calls = []

        def fn(x, m, **o):
            calls.append(m)
            return x * m

        model = ax.container((ax.layer(fn, [x, m]), x))
        assert len(calls) == 2 and all(m is not None for m in calls)
        layer_node = model.nodes[model.node.inputs[0]]
        assert set(layer_node.subgraphs) == {"inference", "train"}
        assert layer_node.options["optional"] == ()
        data, mask = _data()
        out = _predict(model, {}, {"x": data}, "inference")
        assert out[0] is ax.NONE
        np.testing.assert_array_equal(out[1], data)
        out = _predict(model, {}, {"x": data, "m": mask}, "inference")
        np.testing.assert_array_equal(out[0], data * mask)

    def test_a_missing_input_upstream_of_an_optional_one_still_reaches_it(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        model = ax.layer(lambda x, m, **o: x if m is None else x + m, [x, ax.optional(m.relu())])
        data, mask = _data()
        np.testing.assert_array_equal(_predict(model, {}, {"x": data}, "inference"), data)
        out = _predict(model, {}, {"x": data, "m": mask - 0.5}, "inference")
        np.testing.assert_array_equal(out, data + np.maximum(mask - 0.5, 0))


class TestErrors:
    def test_a_function_that_does_not_expect_none_gets_a_hint(self):
        x = ax.input("x", (None, 3))
        m = ax.input("m", (None, 3), optional=True)
        with pytest.raises(GraphError, match=r"input\(s\) \[1\] missing.*passed as None"):
            ax.layer(lambda x, m, **o: x * m, [x, ax.optional(m)])

    def test_bodies_must_match_the_optional_inputs(self):
        model = _masked_multiply()
        node = model.node
        inputs = [ax.Axon(i, model.nodes) for i in node.inputs]
        bodies = {k: v for k, v in node.subgraphs.items() if "/" not in k}
        with pytest.raises(GraphError, match="expected traced bodies"):
            make_node("custom", inputs, dict(node.options), subgraphs=bodies)
        with pytest.raises(GraphError, match="out of range"):
            make_node("custom", inputs, {**node.options, "optional": (2,)}, subgraphs=bodies)

    def test_the_optional_option_is_checked(self):
        model = _masked_multiply()
        node = model.node
        inputs = [ax.Axon(i, model.nodes) for i in node.inputs]
        for bad in ((1, 1), (1, 0), (-1,), "1"):
            with pytest.raises(OptionError, match="optional"):
                make_node(
                    "custom", inputs, {**node.options, "optional": bad}, subgraphs=node.subgraphs
                )

    def test_too_many_optional_inputs(self):
        x = ax.input("x", (None, 3))
        opts = [ax.optional(ax.input(f"m{i}", (None, 3), optional=True)) for i in range(7)]
        with pytest.raises(OptionError, match="at most 6 optional inputs"):
            ax.layer(lambda *args, **o: args[0], [x, *opts])
