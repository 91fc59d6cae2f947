"""Shape inference: dynamic dims propagate, mismatches are ShapeErrors naming the layers."""

from __future__ import annotations

import warnings

import pytest

import axonc as ax
from axonc.dtypes import TensorType
from axonc.errors import ShapeError, ShapeHintWarning
from axonc.ir import assign_names
from axonc.shape_inference import (
    NONE,
    declared_type,
    infer_types,
    input_type,
    leaves_known,
    output_types,
)


def _out_type(model, **input_types):
    types = infer_types(model, input_types)
    return output_types(model, types)


class TestPropagation:
    def test_declared_dynamic_dims_propagate(self):
        x = ax.input("x", (None, None, 4))
        y = x.dense(3).relu()
        assert declared_type(y, y.output) == TensorType((None, None, 3))

    def test_template_fills_dynamic_dims(self):
        x = ax.input("x", (None, None, 4))
        y = x.dense(3)
        assert _out_type(y, x=TensorType((2, 5, 4))) == TensorType((2, 5, 3))
        assert ax.get_output_shape(y, ax.template((2, 5, 4))) == (2, 5, 3)

    def test_a_template_with_dynamic_dims_keeps_them(self):
        y = ax.input("x", (None, 4)).dense(3)
        assert ax.get_output_shape(y, ax.template((None, 4))) == (None, 3)

    def test_template_dtype_flows_through(self):
        y = ax.input("x", (None, 4)).relu()
        assert _out_type(y, x=TensorType((1, 4), "f64")).dtype == "f64"

    def test_every_node_gets_a_type(self):
        x = ax.input("x", (None, 6))
        y = ax.add(x.dense(6), x).dense(2)
        types = infer_types(y, {"x": TensorType((3, 6))})
        assert set(types) == set(y.nodes)
        assert all(isinstance(t, TensorType) for t in types.values())

    def test_input_without_shape_is_unknown_until_a_template_comes(self):
        y = ax.input("x").dense(3)
        assert declared_type(y, y.output) is None
        assert _out_type(y, x=TensorType((2, 7))) == TensorType((2, 3))
        init, _ = ax.build(y)
        state = init(ax.template((2, 7)))
        assert state.data["dense_0"]["kernel"].shape == (7, 3)

    def test_container_output_types(self):
        x = ax.input("x", (None, 4))
        y = ax.container({"a": x.dense(2), "b": (x, x.dense(5))})
        t = _out_type(y, x=TensorType((3, 4)))
        assert t == {"a": TensorType((3, 2)), "b": (TensorType((3, 4)), TensorType((3, 5)))}
        assert leaves_known(t)
        assert not leaves_known({"a": None})


class TestMismatchAtConstruction:
    def test_dense_on_a_rank_1_input(self):
        v = ax.input("v", (None,))
        with pytest.raises(ShapeError) as err:
            v.dense(3)
        msg = str(err.value)
        assert "dense" in msg
        assert "rank >= 2" in msg  # what was expected
        assert "(None,)" in msg  # what came
        assert "'v'" in msg  # the input layer

    def test_the_error_names_an_explicitly_named_layer(self):
        v = ax.input("v", (None,))
        with pytest.raises(ShapeError, match="layer 'proj' \\(dense\\)"):
            v.dense(3, name="proj")

    def test_add_of_incompatible_shapes_names_both_inputs(self):
        a = ax.input("a", (None, 4))
        b = ax.input("b", (None, 5)).relu(name="act")
        with pytest.raises(ShapeError) as err:
            ax.add(a, b)
        msg = str(err.value)
        assert msg.startswith("add layer")
        assert "(None, 4)" in msg and "(None, 5)" in msg
        assert "layer 'a' (input)" in msg and "layer 'act' (relu)" in msg

    def test_add_with_dynamic_dims_is_accepted(self):
        a = ax.input("a", (None, 4))
        b = ax.input("b", (None, None))
        s = ax.add(a, b)
        assert declared_type(s, s.output) == TensorType((None, 4))

    def test_mismatch_deep_in_a_chain_is_reported_where_it_is_added(self):
        x = ax.input("x", (None, 4))
        h = x.dense(8).relu()
        with pytest.raises(ShapeError):
            ax.add(h, x)


class TestMismatchAtBuild:
    def test_a_template_of_another_shape_is_followed_with_one_warning(self):
        y = ax.input("x", (None, 4)).dense(3)
        with pytest.warns(
            ShapeHintWarning, match=r"declared with shape \(None, 4\) but got \(2, 5\)"
        ):
            assert ax.get_output_shape(y, ax.template((2, 5))) == (2, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per input: no second warning
            assert ax.get_output_shape(y, ax.template((7, 5))) == (7, 3)

    def test_a_template_of_another_rank_is_followed(self):
        y = ax.input("x", (None, 4)).dense(3)
        with pytest.warns(ShapeHintWarning, match=r"but got \(2, 4, 1\)"):
            assert ax.get_output_shape(y, ax.template((2, 4, 1))) == (2, 4, 3)

    def test_rule_failure_under_a_template_names_the_generated_layer(self):
        y = ax.input("x").dense(3)  # shape unknown until the template
        with pytest.raises(ShapeError) as err:
            ax.get_output_shape(y, ax.template((7,)))
        assert "rank >= 2" in str(err.value)
        # With names assigned, the error says which layer by its generated name.
        names = assign_names(y)
        with pytest.raises(ShapeError, match="layer 'dense_0' \\(dense\\)"):
            infer_types(y, {"x": TensorType((7,))}, names)

    def test_input_type_rejects_a_non_template(self):
        node = ax.input("x", (None, 4)).node
        with pytest.raises(ShapeError, match="expected a template or array, got list"):
            input_type(node, [1, 2])


class TestNone:
    def test_none_is_a_falsy_singleton(self):
        assert type(NONE)() is NONE
        assert not NONE
        assert repr(NONE) == "ax.NONE"
        assert ax.NONE is NONE

    def test_missing_optional_input_types_as_none_and_nullifies_consumers(self):
        x = ax.input("x", (None, 4))
        m = ax.input("m", (None, 4), optional=True)
        s = ax.add(x, m).dense(2)
        types = infer_types(s, {"x": TensorType((1, 4))})
        assert types[m.output] is NONE
        assert types[s.output] is NONE
        assert types[x.output] == TensorType((1, 4))

    def test_given_optional_input_is_typed(self):
        m = ax.input("m", (None, 4), optional=True)
        y = m.dense(2)
        assert _out_type(y, m=TensorType((3, 4))) == TensorType((3, 2))

    def test_or_else_and_optional_accept_none(self):
        x = ax.input("x", (None, 4))
        m = ax.input("m", (None, 4), optional=True)
        out = ax.container((ax.or_else(m, x), ax.optional(m), m.relu()))
        t = output_types(out, infer_types(out, {"x": TensorType((2, 4))}))
        assert t == (TensorType((2, 4)), NONE, NONE)

    def test_or_else_checks_both_shapes(self):
        m = ax.input("m", (None, 4), optional=True)
        with pytest.raises(ShapeError, match="both inputs must have one shape"):
            ax.or_else(m, ax.input("x", (None, 5)))


class TestContainerInputs:
    def test_a_container_into_a_tensor_op_is_a_shape_error_with_a_hint(self):
        x = ax.input("x", (None, 3))
        with pytest.raises(ShapeError) as err:
            ax.container((x, x)).relu()
        msg = str(err.value)
        assert msg.startswith("relu layer: ")
        assert "(inputs: container layer -> (f32[?, 3], f32[?, 3]))" in msg
        assert "expects a tensor input, got a container (f32[?, 3], f32[?, 3])" in msg
        assert "ax.nx(x, lambda t: t[0])" in msg

    def test_a_container_among_several_inputs_is_caught(self):
        x = ax.input("x", (None, 3))
        with pytest.raises(ShapeError, match="expects a tensor input, got a container"):
            ax.add(x, ax.container({"a": x}))

    def test_the_check_also_runs_under_a_template(self):
        x = ax.input("x")
        model = ax.container([x]).dense(2)
        with pytest.raises(ShapeError, match=r"dense.*expects a tensor input"):
            infer_types(model, {"x": TensorType((1, 3))})

    def test_ops_that_take_containers_still_do(self):
        x = ax.input("x", (None, 3))
        pair = ax.container((x, x.relu()))
        out = ax.nx(pair, lambda t: t[0] - t[1])
        assert declared_type(out, out.output) == TensorType((None, 3))
        passed = ax.optional(pair)
        assert declared_type(passed, passed.output) == (TensorType((None, 3)),) * 2
        first = ax.nx(ax.or_else(pair, pair), lambda t: t[0])
        assert _out_type(first, x=TensorType((2, 3))) == TensorType((2, 3))

    def test_the_ops_declaring_container_inputs(self):
        from axonc.registry import OPS

        takes = {name for name, op in OPS.items() if op.container_inputs}
        assert takes == {
            "elem",
            "container",
            "nx",
            "custom",
            "block",
            "namespace",
            "optional",
            "or_else",
            "cond",
            "stack_columns",
            "scoped_body",
        }
