"""ONNX lowering of the pooling, shape and combinator families.

Beyond the opset-17 parity sweep (test_parity.py): every declared case of these
ops again at the newest opset, every real-Axon golden case that uses them run
through onnxruntime (golden params, golden inputs, golden outputs), and the
lowering choices that matter for exactness (no ONNX Resize, the dilated average
pool below opset 19, dynamic splits, Nx dtype merging).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import axonc as ax
from axonc.errors import ShapeError
from axonc.ir import Axon
from axonc.ops.shape import nearest_indices, resize_weights
from axonc.registry import OPS, Op, get_op
from axonc.to_onnx.export import max_opset, to_onnx
from axonc.to_onnx.lower import unsupported_ops
from tests import golden, onnx_run, op_cases
from tests.test_conformance import CASES

FAMILIES = ("pooling", "shape", "combinators")
OUR_OPS = {name for name, op in OPS.items() if op.family in FAMILIES}
STRUCTURAL = {"input", "container", "elem"}


def _as_lists(tree):
    """The reference's tuples as lists, the container form golden.assert_tree_close walks."""
    if isinstance(tree, (tuple, list)):
        return [_as_lists(t) for t in tree]
    if isinstance(tree, dict):
        return {k: _as_lists(v) for k, v in tree.items()}
    return tree


def _ops(model: Axon) -> set[str]:
    found: set[str] = set()

    def walk(g: Axon) -> None:
        for node in g.nodes.values():
            found.add(node.op)
            for body in node.subgraphs.values():
                walk(body)

    walk(model)
    return found


def _node_types(onnx_model) -> list[str]:
    return [n.op_type for n in onnx_model.graph.node]


def _export_and_compare(model: Axon, feeds: dict, opset: int, mode: str = "inference"):
    init_fn, predict_fn = ax.build(model, mode=mode, compiler="reference")
    state = init_fn({k: ax.template(v.shape, v.dtype) for k, v in feeds.items()})
    onnx_model = to_onnx(model, state, mode=mode, opset=opset)
    batch = next(iter(feeds.values())).shape[0]
    prediction, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), feeds, state.data, batch)
    expected = predict_fn(state, feeds)
    golden.assert_tree_close(prediction, _as_lists(expected), rtol=1e-5, atol=1e-6)
    return onnx_model


# ---------------------------------------------------------------------------
# every declared case at the newest opset

NEWEST = [
    pytest.param(op, case, id=f"{op.name}-{case.name}")
    for op in OPS.values()
    if op.name in OUR_OPS
    for case in op.cases
]


@pytest.mark.parametrize(("op", "case"), NEWEST)
def test_case_matches_reference_at_newest_opset(op, case):
    model = op_cases.model(case)
    init_fn, predict_fn = ax.build(model, mode="inference", compiler="reference")
    state = init_fn(op_cases.templates(case, 1))
    onnx_model = to_onnx(model, state, opset=max_opset())
    assert onnx_model.opset_import[0].version == max_opset()
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3):
        feeds = op_cases.feeds(case, batch, seed=batch + 100)
        prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        expected = predict_fn(state, feeds)
        golden.assert_tree_close(prediction, _as_lists(expected), rtol=1e-5, atol=1e-6)


def test_newest_opset_sweep_covers_every_op_of_the_families():
    assert {p.values[0].name for p in NEWEST} == OUR_OPS


# ---------------------------------------------------------------------------
# real-Axon golden cases through onnxruntime


def _golden_cases() -> list[str]:
    """Golden cases that use one of these ops and whose every op has a lowering."""
    names = []
    for name, build in sorted(CASES.items()):
        model = build()
        if _ops(model) & OUR_OPS and not unsupported_ops(model):
            names.append(name)
    return names


GOLDEN = _golden_cases()
# the golden files named after these ops (and only them): they must never drop out
OWN_PREFIXES = (
    "adaptive_",
    "add",
    "avg_pool",
    "blur_pool",
    "concatenate",
    "flatten",
    "global_",
    "lp_pool",
    "max_pool",
    "multiply",
    "reshape",
    "resize_",
    "split_",
    "subtract",
    "transpose",
)


def test_golden_selection_holds_every_case_named_after_these_ops():
    own = {n for n in CASES if n.startswith(OWN_PREFIXES)}
    assert len(own) >= 40
    assert own <= set(GOLDEN)
    assert all(_ops(CASES[n]()) - STRUCTURAL <= OUR_OPS for n in own)


@pytest.mark.parametrize("opset", [17, max_opset()], ids=["opset17", "newest"])
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_case_matches_axon_on_onnxruntime(name, opset):
    case = golden.load(name)
    model = CASES[name]()
    inputs = golden.inputs(case)
    mode = case["mode"]
    init_fn, _ = ax.build(model, mode=mode, compiler="reference")
    state = init_fn(
        {k: ax.template(v.shape, v.dtype) for k, v in inputs.items()}, golden.tree(case["params"])
    )
    onnx_model = to_onnx(model, state, mode=mode, opset=opset)
    batch = next(iter(inputs.values())).shape[0]
    prediction, new_state = onnx_run.run(
        onnx_model, onnx_run.session(onnx_model), inputs, state.data, batch
    )
    golden.assert_tree_close(prediction, golden.tree(case["outputs"]), rtol=1e-5, atol=1e-6)
    if mode == "train":
        golden.assert_tree_close(new_state, golden.tree(case["state"]), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# lowering choices


def test_resize_uses_precomputed_tables_not_onnx_resize():
    x = ax.input("x", shape=(None, 6, 6, 2))
    onnx_model = _export_and_compare(
        x.resize((4, 3), method="bilinear"),
        {"x": np.random.default_rng(0).normal(size=(3, 6, 6, 2)).astype(np.float32)},
        opset=17,
    )
    types = _node_types(onnx_model)
    assert "Resize" not in types
    assert types.count("MatMul") == 2
    tables = {
        tuple(i.dims): np.frombuffer(i.raw_data, np.float32).reshape(tuple(i.dims))
        for i in onnx_model.graph.initializer
        if len(i.dims) == 2
    }
    # independent check of the stored table: antialiased bilinear 6 -> 4, borders renormalised
    scale = 6 / 4
    centres = (np.arange(4) + 0.5) * scale - 0.5
    raw = np.clip(1 - np.abs(np.arange(6)[:, None] - centres[None, :]) / scale, 0, None)
    np.testing.assert_allclose(tables[(6, 4)], raw / raw.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(tables[(6, 4)], resize_weights(6, 4, "bilinear", True), rtol=1e-6)


def test_nearest_resize_is_a_gather_of_precomputed_indices():
    x = ax.input("x", shape=(None, 2, 3, 5), dtype="s32")
    feeds = {"x": np.arange(2 * 2 * 3 * 5, dtype=np.int32).reshape(2, 2, 3, 5)}
    onnx_model = _export_and_compare(x.resize((7, 2), channels="first"), feeds, opset=17)
    assert _node_types(onnx_model).count("Gather") == 2
    assert list(nearest_indices(3, 7)) == [0, 0, 1, 1, 1, 2, 2]


def test_resize_with_dynamic_spatial_dims_is_refused_with_a_shape_error():
    model = ax.input("x", shape=(None, None, 4, 2)).resize((3, 3), method="bilinear")
    init_fn, _ = ax.build(model, compiler="reference")
    state = init_fn(ax.template((1, 5, 4, 2), "f32"))
    with pytest.raises(ShapeError, match="static size for spatial axis 1"):
        to_onnx(model, state)


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_integer_resize_computes_in_f64_and_truncates_like_the_reference(method):
    x = ax.input("x", shape=(None, 3, 4, 1), dtype="s32")
    feeds = {"x": np.random.default_rng(1).integers(-50, 50, size=(2, 3, 4, 1)).astype(np.int32)}
    _export_and_compare(x.resize((5, 3), method=method), feeds, opset=17)


@pytest.mark.parametrize("opset", [17, max_opset()])
def test_dilated_avg_pool_uses_conv_below_opset_19_and_average_pool_after(opset):
    model = ax.input("x", shape=(None, 7, 6, 3)).avg_pool(
        kernel_size=(2, 3), strides=1, dilations=(2, 1), padding="same"
    )
    feeds = {"x": np.random.default_rng(2).normal(size=(5, 7, 6, 3)).astype(np.float32)}
    types = _node_types(_export_and_compare(model, feeds, opset))
    assert ("Conv" in types) == (opset < 19)
    assert ("AveragePool" in types) == (opset >= 19)


def test_window_pools_are_channels_first_onnx_pools_between_transposes():
    x = ax.input("x", shape=(None, 6, 6, 2))
    feeds = {"x": np.random.default_rng(3).normal(size=(2, 6, 6, 2)).astype(np.float32)}
    types = _node_types(_export_and_compare(x.max_pool(kernel_size=3, padding="same"), feeds, 17))
    assert types.count("Transpose") == 2 and "MaxPool" in types and "Pad" not in types


# Windows lying wholly in padding: the reference gives -inf (Nx pads max pooling with
# -inf), which the declared-case sweep cannot hold (it asserts finite outputs).
WHOLLY_PADDED = {
    # pads (2, 2) are not smaller than the window: an explicit -inf Pad; the middle window
    # reads positions -1 and 2 of a length-2 input
    "pads_not_smaller_than_window": (
        dict(kernel_size=2, strides=1, dilations=3, padding=[(2, 2)]),
        (None, 2, 3),
        (slice(None), 1, slice(None)),
    ),
    # pads (1, 1) smaller than the window, but the dilated window reads positions -1 and 2
    # of a length-2 axis: MaxPool's own padding, whose -inf onnxruntime does not give
    # (with pads smaller than the window, such a window is the only one along its axis)
    "dilated_window_in_small_padding": (
        dict(kernel_size=2, strides=1, dilations=(1, 3), padding=[(0, 0), (1, 1)]),
        (None, 3, 2, 2),
        (slice(None), slice(None), 0, slice(None)),
    ),
}


@pytest.mark.parametrize("opset", [17, max_opset()], ids=["opset17", "newest"])
@pytest.mark.parametrize("case", sorted(WHOLLY_PADDED))
def test_max_pool_window_wholly_in_padding_is_minus_infinity_as_the_reference(case, opset):
    opts, shape, padded_only = WHOLLY_PADDED[case]
    model = ax.input("x", shape=shape).max_pool(**opts)
    feeds = {"x": np.random.default_rng(6).normal(size=(3, *shape[1:])).astype(np.float32)}
    onnx_model = _export_and_compare(model, feeds, opset)
    out, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), feeds, {}, 3)
    assert np.all(out[padded_only] == -np.inf)
    finite = np.ones(out.shape, bool)
    finite[padded_only] = False
    assert np.isfinite(out[finite]).all()


@pytest.mark.parametrize(
    ("dtype", "np_dtype", "onnx_type"),
    [("s8", np.int8, TensorProto.INT8), ("u8", np.uint8, TensorProto.UINT8)],
)
def test_dilated_small_integer_max_pool_runs_in_f32_for_its_padding(dtype, np_dtype, onnx_type):
    model = ax.input("x", shape=(None, 8, 2), dtype=dtype).max_pool(
        kernel_size=2, strides=1, dilations=3, padding="same"
    )
    feeds = {"x": np.random.default_rng(7).integers(0, 100, size=(2, 8, 2)).astype(np_dtype)}
    onnx_model = _export_and_compare(model, feeds, 17)
    assert onnx_model.graph.output[0].type.tensor_type.elem_type == onnx_type


@pytest.mark.parametrize("layer", ["avg_pool", "lp_pool", "max_pool", "global_avg_pool"])
def test_integer_pools_follow_nx_dtypes(layer):
    x = ax.input("x", shape=(None, 4, 4, 2), dtype="s32")
    model = getattr(x, layer)() if layer.startswith("global") else getattr(x, layer)(kernel_size=2)
    feeds = {"x": np.random.default_rng(4).integers(0, 9, size=(3, 4, 4, 2)).astype(np.int32)}
    onnx_model = _export_and_compare(model, feeds, 17)
    expected = TensorProto.INT32 if layer == "max_pool" else TensorProto.FLOAT
    assert onnx_model.graph.output[0].type.tensor_type.elem_type == expected


def test_lp_pool_with_odd_norm_gives_nan_for_negative_window_sums_as_the_reference():
    model = ax.input("x", shape=(None, 4, 1)).lp_pool(kernel_size=2, norm=3)
    feeds = {"x": np.array([[[-2.0], [1.0], [1.0], [0.5]]], np.float32)}
    onnx_model = _export_and_compare(model, feeds, 17)
    out, _ = onnx_run.run(onnx_model, onnx_run.session(onnx_model), feeds, {}, 1)
    # windows [-2, 1] and [1, 0.5]: (-8 + 1) ** (1/3) is NaN, (1 + 0.125) ** (1/3) is not
    assert np.isnan(out[0, 0, 0])
    np.testing.assert_allclose(out[0, 1, 0], 1.125 ** (1 / 3), rtol=1e-6)


@pytest.mark.parametrize("opset", [17, max_opset()])
def test_equal_split_of_a_dynamic_axis_splits_at_run_time(opset):
    model = ax.container(ax.split(ax.input("x", shape=(None, None, 3)), 2, axis=1))
    init_fn, _ = ax.build(model, compiler="reference")
    state = init_fn(ax.template((1, 4, 3), "f32"))
    onnx_model = to_onnx(model, state, opset=opset)
    assert "Split" in _node_types(onnx_model)
    sess = onnx_run.session(onnx_model)
    for length in (2, 6):
        feeds = {"x": np.random.default_rng(length).normal(size=(3, length, 3)).astype(np.float32)}
        prediction, _ = onnx_run.run(onnx_model, sess, feeds, state.data, 3)
        a, b = prediction
        np.testing.assert_array_equal(a, feeds["x"][:, : length // 2])
        np.testing.assert_array_equal(b, feeds["x"][:, length // 2 :])


def test_combinators_cast_to_the_nx_merged_dtype():
    a = ax.input("a", shape=(None, 3), dtype="u8")
    b = ax.input("b", shape=(None, 3), dtype="s8")
    c = ax.input("c", shape=(None, 3), dtype="s32")
    rng = np.random.default_rng(5)
    feeds = {
        "a": rng.integers(0, 255, size=(4, 3)).astype(np.uint8),
        "b": rng.integers(-128, 127, size=(4, 3)).astype(np.int8),
        "c": rng.integers(-9, 9, size=(4, 3)).astype(np.int32),
    }
    for model, names in (
        (ax.subtract(a, b), "ab"),
        (ax.multiply([a, b, c]), "abc"),
        (ax.concatenate([a, b], axis=0), "ab"),
        (ax.stack_columns({"a": a, "b": b}), "ab"),
    ):
        onnx_model = _export_and_compare(model, {n: feeds[n] for n in names}, 17)
        assert "Cast" in _node_types(onnx_model)
    # u8 (x) s8 merges to s16: 200 - (-100) = 300 does not wrap
    feeds = {"a": np.full((1, 3), 200, np.uint8), "b": np.full((1, 3), -100, np.int8)}
    sub = to_onnx(ax.subtract(a, b), {})
    out, _ = onnx_run.run(sub, onnx_run.session(sub), feeds, {}, 1)
    np.testing.assert_array_equal(out, np.full((1, 3), 300, np.int16))


def test_reshape_with_batch_first_needs_no_shape_arithmetic():
    model = ax.input("x", shape=(None, 12)).reshape(("batch", "auto", 4))
    feeds = {"x": np.arange(24, dtype=np.float32).reshape(2, 12)}
    types = _node_types(_export_and_compare(model, feeds, 17))
    assert [t for t in types if t != "Identity"] == ["Reshape"]


def test_reshape_with_batch_elsewhere_reads_the_batch_at_run_time():
    model = ax.input("x", shape=(None, 6)).reshape((3, "batch", 2))
    init_fn, _ = ax.build(model, compiler="reference")
    onnx_model = to_onnx(model, init_fn(ax.template((1, 6), "f32")))
    assert "Shape" in _node_types(onnx_model)
    sess = onnx_run.session(onnx_model)
    for batch in (1, 5):
        x = np.arange(batch * 6, dtype=np.float32).reshape(batch, 6)
        out, _ = onnx_run.run(onnx_model, sess, {"x": x}, {}, batch)
        np.testing.assert_array_equal(out, x.reshape(3, batch, 2))


def test_every_op_of_the_families_has_a_lowering():
    assert all(type(get_op(n)).onnx is not Op.onnx for n in OUR_OPS)
