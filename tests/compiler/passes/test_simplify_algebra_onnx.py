"""simplify_algebra_onnx (exact identities) and reassociate_updates_onnx (train mode)."""

import numpy as np
import onnx
from onnx import helper

import axonc as ax
from tests.pass_numerics import check_onnx_passes, onnx_model, op_types

SIMPLIFY = ["simplify_algebra_onnx", "fold_constants_onnx", "dead_value_elimination_onnx"]
REASSOCIATE = ["reassociate_updates_onnx", "dead_value_elimination_onnx"]
RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 4)).astype(np.float32)
ONE, ZERO = np.float32(1.0), np.float32(0.0)


def node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], **attrs)


def test_multiplying_by_one_and_adding_zero_are_removed():
    model = onnx_model(
        [
            node("Mul", ["x", "one"], "a"),
            node("Mul", ["one", "a"], "b"),
            node("Add", ["b", "zero"], "c"),
            node("Add", ["zero", "c"], "d"),
            node("Sub", ["d", "zero"], "e"),
            node("Div", ["e", "one"], "f"),
            node("Relu", ["f"], "y"),
        ],
        [("x", ["batch", 4])],
        [("y", ["batch", 4])],
        {"one": ONE, "zero": ZERO},
    )
    new, changed = check_onnx_passes(model, SIMPLIFY, {"x": X})
    assert changed
    assert op_types(new) == ["Relu"]
    assert list(new.graph.node[0].input) == ["x"]


def test_an_identity_constant_that_widens_the_shape_stays():
    model = onnx_model(
        [node("Add", ["x", "zeros"], "y")],
        [("x", [3, 1])],
        [("y", [3, 4])],
        {"zeros": np.zeros((3, 4), np.float32)},
    )
    _, changed = check_onnx_passes(model, SIMPLIFY, {"x": X[:, :1]})
    assert not changed


def test_zero_minus_x_and_one_over_x_are_not_identities():
    model = onnx_model(
        [node("Sub", ["zero", "x"], "a"), node("Div", ["one", "a"], "y")],
        [("x", [3, 4])],
        [("y", [3, 4])],
        {"one": ONE, "zero": ZERO},
    )
    new, changed = check_onnx_passes(model, SIMPLIFY, {"x": X})
    assert not changed
    assert op_types(new) == ["Sub", "Div"]


def test_a_where_of_one_and_zero_becomes_a_cast():
    model = onnx_model(
        [
            node("Greater", ["x", "zero"], "c"),
            node("Where", ["c", "one", "zero"], "m"),
            node("Mul", ["x", "m"], "y"),
        ],
        [("x", ["batch", 4])],
        [("y", ["batch", 4])],
        {"one": ONE, "zero": ZERO},
    )
    new, changed = check_onnx_passes(model, SIMPLIFY, {"x": X})
    assert changed
    assert op_types(new) == ["Greater", "Cast", "Mul"]


def test_a_where_that_widens_or_picks_other_values_stays():
    model = onnx_model(
        [
            node("Greater", ["x", "zero"], "c"),
            node("Where", ["c", "ones", "zero"], "m"),
            node("Where", ["c", "zero", "one"], "n"),
            node("Add", ["m", "n"], "y"),
        ],
        [("x", [3, 1])],
        [("y", [3, 4])],
        {"one": ONE, "zero": ZERO, "ones": np.ones((3, 4), np.float32)},
    )
    new, _ = check_onnx_passes(model, SIMPLIFY, {"x": X[:, :1]})
    assert op_types(new) == ["Greater", "Where", "Where", "Add"]


def test_double_negation_is_removed():
    model = onnx_model(
        [node("Neg", ["x"], "a"), node("Neg", ["a"], "b"), node("Relu", ["b"], "y")],
        [("x", [3, 4])],
        [("y", [3, 4])],
    )
    new, _ = check_onnx_passes(model, SIMPLIFY, {"x": X})
    assert op_types(new) == ["Relu"]


def test_the_shape_of_a_static_value_folds_with_what_it_feeds():
    model = onnx_model(
        [
            node("Shape", ["x"], "s"),
            helper.make_node(
                "ConstantOfShape", ["s"], ["ones"], value=helper.make_tensor("v", 1, [1], [1.0])
            ),
            node("Mul", ["x", "ones"], "y"),
        ],
        [("x", [3, 4])],
        [("y", [3, 4])],
    )
    new, _ = check_onnx_passes(model, SIMPLIFY, {"x": X})
    # Shape and ConstantOfShape are now one initializer; the Mul stays: it makes the
    # graph output y, which cannot be renamed to the input x
    assert op_types(new) == ["Mul"]
    assert [t.name for t in new.graph.initializer] == ["ones"]


def test_the_shape_of_a_dynamic_value_stays():
    model = onnx_model(
        [node("Shape", ["x"], "s"), node("Reshape", ["x", "s"], "y")],
        [("x", ["batch", 4])],
        [("y", ["batch", 4])],
    )
    new, _ = check_onnx_passes(model, ["simplify_algebra_onnx"], {"x": X})
    assert "Shape" in op_types(new)


def test_reshape_pairs_become_one_and_a_reshape_to_the_same_shape_goes():
    model = onnx_model(
        [
            node("Reshape", ["x", "flat"], "a"),
            node("Reshape", ["a", "back"], "b"),
            node("Reshape", ["b", "same"], "c"),
            node("Relu", ["c"], "y"),
        ],
        [("x", ["batch", 4])],
        [("y", ["batch", 2, 2])],
        {
            "flat": np.array([-1], np.int64),
            "back": np.array([-1, 2, 2], np.int64),
            "same": np.array([-1, 2, 2], np.int64),
        },
    )
    new, _ = check_onnx_passes(model, SIMPLIFY, {"x": X})
    assert op_types(new) == ["Reshape", "Relu"]
    assert new.graph.node[0].input[0] == "x"


def test_a_reshape_that_changes_the_shape_stays():
    model = onnx_model(
        [node("Reshape", ["x", "s"], "y")],
        [("x", ["batch", 4])],
        [("y", ["batch", 2, 2])],
        {"s": np.array([-1, 2, 2], np.int64)},
    )
    _, changed = check_onnx_passes(model, SIMPLIFY, {"x": X})
    assert not changed


def _update_model():
    """new = p + s * ((p + lr * g) - p): a learning-rate scale around an update."""
    return onnx_model(
        [
            node("Mul", ["lr", "g"], "u"),
            node("Add", ["p", "u"], "stepped"),
            node("Sub", ["stepped", "p"], "delta"),
            node("Mul", ["s", "delta"], "scaled"),
            node("Add", ["p", "scaled"], "new"),
        ],
        [("p", [3, 4]), ("g", [3, 4]), ("s", [])],
        [("new", [3, 4])],
        {"lr": np.float32(-0.01)},
    )


def _train_passes(model, names):
    from axonc.passes import PASSES, onnx_graph

    g = onnx_graph.to_nx(model, mode="train")
    for name in names:
        PASSES[name].fn(g)
    out = onnx_graph.from_nx(g)
    onnx.checker.check_model(out, full_check=True)
    return out


def test_an_isolated_update_is_not_added_and_subtracted_again():
    feeds = {
        "p": X,
        "g": RNG.normal(size=(3, 4)).astype(np.float32),
        "s": np.array(0.5, np.float32),
    }
    new, changed = check_onnx_passes(_update_model(), REASSOCIATE * 2, feeds)
    assert changed
    # one full-size Mul and the Add: s * lr is a scalar product
    assert sorted(op_types(new)) == ["Add", "Mul", "Mul"]
    full = [n for n in new.graph.node if n.op_type == "Mul" and "g" in n.input]
    assert len(full) == 1
    expected = X + 0.5 * (-0.01 * feeds["g"])
    from tests.onnx_run import session

    got = session(new).run(None, feeds)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_a_shared_inner_product_is_not_hoisted():
    model = onnx_model(
        [
            node("Mul", ["lr", "g"], "u"),
            node("Mul", ["s", "u"], "a"),
            node("Add", ["a", "u"], "y"),
        ],
        [("g", [3, 4]), ("s", [])],
        [("y", [3, 4])],
        {"lr": np.float32(2.0)},
    )
    new = _train_passes(model, REASSOCIATE)
    assert op_types(new) == ["Mul", "Mul", "Add"]


def test_the_simplified_compiled_step_agrees_with_the_reference():
    rng = np.random.default_rng(1)
    model = ax.input("x", (None, 6)).dense(8, activation="relu").dense(3).activation("softmax")
    x = rng.normal(size=(5, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 5)]
    for opt in (ax.optimizers.sgd(0.1, momentum=0.9), ax.optimizers.adam(1e-2)):
        fast = ax.train.compile_step(model, "categorical_cross_entropy", opt)
        ref = ax.train.compile_step(model, "categorical_cross_entropy", opt, compiler="reference")
        ts_fast = ts_ref = fast.init(ax.template((1, 6), "f32"))
        for _ in range(3):
            ts_fast, out_fast = fast(ts_fast, x, y)
            ts_ref, out_ref = ref(ts_ref, x, y)
        np.testing.assert_allclose(out_fast["loss"], out_ref["loss"], rtol=1e-5)
        for layer, params in ts_ref.model_state.data.items():
            for name, value in params.items():
                got = ts_fast.model_state.data[layer][name]
                np.testing.assert_allclose(got, value, rtol=1e-4, atol=1e-6)
