"""The op registry: lookup, option normalisation and the reusable option checks."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.errors import GraphError, OptionError, UnknownOpError
from axonc.registry import (
    LAYERS,
    OPS,
    REQUIRED,
    Op,
    Option,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_int_or_tuple,
    check_optional,
    get_op,
    layer_api,
    register,
)
from axonc.shape_inference import make_node


def _x():
    return ax.input("x", (None, 4))


class TestLookup:
    def test_get_op_returns_the_registered_instance(self):
        assert get_op("dense") is OPS["dense"]
        assert get_op("dense").name == "dense"

    def test_every_registered_op_is_keyed_by_its_name(self):
        for key, op in OPS.items():
            assert isinstance(op, Op)
            assert op.name == key

    def test_unknown_op_suggests_close_names(self):
        with pytest.raises(UnknownOpError) as err:
            get_op("dens")
        msg = str(err.value)
        assert "unknown op 'dens'" in msg
        assert "did you mean" in msg and "dense" in msg

    def test_unknown_op_without_near_miss_has_no_suggestion(self):
        with pytest.raises(UnknownOpError) as err:
            get_op("qqqqqqqqqqqq")
        assert "did you mean" not in str(err.value)

    def test_unknown_op_is_a_graph_error(self):
        with pytest.raises(GraphError):
            make_node("relux", [_x()])

    def test_registering_a_name_twice_is_refused(self):
        class Again(Op):
            name = "dense"

        with pytest.raises(TypeError, match="registered twice"):
            register(Again)
        assert type(OPS["dense"]).__name__ == "Dense"

    def test_an_op_needs_a_name(self):
        class Nameless(Op):
            pass

        with pytest.raises(TypeError, match="no op name"):
            register(Nameless)

    def test_layer_constructor_defined_twice_is_refused(self):
        before = LAYERS["dense"]
        with pytest.raises(TypeError, match="defined twice"):
            layer_api(lambda x: x, name="dense")
        assert LAYERS["dense"] is before

    def test_layer_constructors_are_exported_on_the_package(self):
        for key, fn in LAYERS.items():
            assert getattr(ax, key) is fn


class TestOptions:
    def test_defaults_are_filled_in(self):
        opts = get_op("dense").normalize_options({"units": 3}, "dense layer")
        assert opts["units"] == 3
        assert opts["use_bias"] is True
        assert set(opts) == set(get_op("dense").options)

    def test_unknown_option_lists_the_valid_ones(self):
        with pytest.raises(OptionError) as err:
            ax.dense(_x(), 3, kernal_initializer="zeros")
        msg = str(err.value)
        assert "kernal_initializer" in msg
        assert "valid options are bias_initializer, kernel_initializer, units, use_bias" in msg
        assert msg.startswith("dense layer")

    def test_unknown_option_names_an_explicitly_named_layer(self):
        with pytest.raises(OptionError, match="dense layer 'proj'"):
            ax.dense(_x(), 3, name="proj", bogus=1)

    def test_required_option_missing(self):
        with pytest.raises(OptionError, match="dense layer: option 'units' is required"):
            make_node("dense", [_x()], {})

    def test_a_failing_check_becomes_an_option_error_naming_layer_and_option(self):
        with pytest.raises(OptionError) as err:
            ax.dense(_x(), 0)
        assert "option 'units'" in str(err.value)
        assert "expected an integer >= 1, got 0" in str(err.value)
        with pytest.raises(OptionError, match="option 'use_bias': expected true or false"):
            ax.dense(_x(), 2, use_bias="yes")

    def test_options_are_normalised_by_their_check(self):
        op = get_op("dense")
        opts = op.normalize_options({"units": np.int64(5)}, "dense layer")
        assert type(opts["units"]) is int

    def test_option_without_check_keeps_value(self):
        class Local(Op):
            name = "local_test_only"
            options = {"a": Option(7), "b": Option()}

        op = Local()
        assert op.normalize_options({"b": "v"}, "l") == {"a": 7, "b": "v"}
        assert Local.options["b"].default is REQUIRED
        assert "local_test_only" not in OPS

    def test_check_options_hook_sees_every_option(self):
        seen = {}

        class Cross(Op):
            name = "cross_test_only"
            options = {"lo": Option(0, check_int()), "hi": Option(1, check_int())}

            def check_options(self, opts, layer):
                seen.update(opts)
                if opts["lo"] > opts["hi"]:
                    raise OptionError(f"{layer}: lo must be <= hi")
                return opts

        Cross().normalize_options({"hi": 5}, "c")
        assert seen == {"lo": 0, "hi": 5}
        with pytest.raises(OptionError, match="c: lo must be <= hi"):
            Cross().normalize_options({"lo": 9}, "c")


class TestChecks:
    def test_check_int(self):
        check = check_int(1)
        assert check(3) == 3
        assert type(check(np.int32(4))) is int
        for bad in (True, 2.0, "3", None):
            with pytest.raises(TypeError, match="expected an integer"):
                check(bad)
        with pytest.raises(ValueError, match=">= 1, got 0"):
            check(0)
        assert check_int()(-5) == -5

    def test_check_float(self):
        assert check_float()(1) == 1.0 and type(check_float()(1)) is float
        assert check_float()(np.float32(0.5)) == 0.5
        with pytest.raises(TypeError, match="expected a number"):
            check_float()(False)
        with pytest.raises(ValueError, match=">= 0"):
            check_float(lo=0.0)(-0.1)
        assert check_float(hi=1.0)(1.0) == 1.0
        with pytest.raises(ValueError, match=r"<= 1\.0, got 1\.5"):
            check_float(hi=1.0)(1.5)
        with pytest.raises(ValueError, match=r"< 1\.0, got 1\.0"):
            check_float(hi=1.0, hi_open=True)(1.0)

    def test_check_bool(self):
        assert check_bool(False) is False
        for bad in (0, 1, "true", None):
            with pytest.raises(TypeError, match="expected true or false"):
                check_bool(bad)

    def test_check_choice(self):
        check = check_choice("same", "valid")
        assert check("same") == "same"
        with pytest.raises(ValueError) as err:
            check("full")
        assert "'same', 'valid'" in str(err.value) and "'full'" in str(err.value)

    def test_check_optional(self):
        check = check_optional(check_int(0))
        assert check(None) is None
        assert check(2) == 2
        with pytest.raises(ValueError):
            check(-1)

    def test_check_int_or_tuple(self):
        check = check_int_or_tuple()
        assert check(2) == 2
        assert check([1, 2]) == (1, 2)
        assert check((3,)) == (3,)
        with pytest.raises(ValueError, match="non-empty"):
            check([])
        with pytest.raises(ValueError, match=">= 1"):
            check((1, 0))
        with pytest.raises(TypeError):
            check((1, 2.5))
