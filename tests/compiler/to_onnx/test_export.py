"""ax.export_onnx: files, opsets, metadata, unsupported ops and large-model external data."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import axonc as ax
import axonrt
from axonc.errors import OptionError, UnsupportedOpsError
from axonc.registry import OPS, Op, register
from axonc.to_onnx import export


def _model(x=None):
    x = ax.input("x", (None, 4)) if x is None else x
    return x.dense(8, activation="relu").dense(3).softmax()


def _state(model):
    return ax.build(model, compiler="reference")[0](ax.template((1, 4)))


def test_export_writes_a_file_axonrt_runs(tmp_path):
    model = _model()
    state = _state(model)
    path = tmp_path / "m.onnx"
    ax.export_onnx(model, state, path)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    expected = ax.build(model, compiler="reference")[1](state, x)
    np.testing.assert_allclose(axonrt.load(path)(x), expected, rtol=1e-5, atol=1e-6)


def test_every_opset_from_17_to_the_newest_exports_and_runs():
    model, x = _model(), np.ones((2, 4), np.float32)
    state = _state(model)
    expected = ax.build(model, compiler="reference")[1](state, x)
    for opset in range(export.MIN_OPSET, export.max_opset() + 1):
        m = export.to_onnx(model, state, opset=opset)
        assert m.opset_import[0].version == opset
        assert m.ir_version == onnx.helper.find_min_ir_version_for(list(m.opset_import))
        got = axonrt.load(m.SerializeToString())(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", [16, export.max_opset() + 1, "17"])
def test_an_unsupported_opset_names_the_valid_range(opset):
    model = _model()
    with pytest.raises(
        OptionError, match=f"choose {export.MIN_OPSET} to {export.max_opset()}|integer"
    ):
        export.to_onnx(model, _state(model), opset=opset)


def test_batch_is_symbolic_and_metadata_records_outputs_and_source():
    x = ax.input("x", (None, 4))
    model = ax.container({"a": _model(x), "b": x.tanh()})
    m = export.to_onnx(model, _state(model))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["axonc.outputs"]) == {"dict": {"a": "output_0", "b": "output_1"}}
    source, _ = ax.serialize.from_bytes(__import__("base64").b64decode(meta["axonc.source"]))
    assert ax.get_op_counts(source)["dense"] == 2


def test_node_names_start_with_their_layer_names():
    m = export.to_onnx(_model(), _state(_model()), opt_level=0)
    layers = {"dense_0", "relu_0", "dense_1", "softmax_0"}
    named = {n.name.split("/")[0].split("#")[0] for n in m.graph.node if n.op_type != "Identity"}
    assert named <= layers and named


def test_ops_without_a_lowering_are_all_named_at_once():
    names = []
    for suffix in ("a", "b"):

        class Bare(Op):
            name = f"test_bare_{suffix}"
            family = "test"

            def infer(self, types, opts, node):
                return types[0]

        register(Bare)
        names.append(Bare.name)
    try:
        from axonc.shape_inference import make_node

        x = ax.input("x", (None, 2))
        model = make_node(names[1], [make_node(names[0], [x])])
        with pytest.raises(UnsupportedOpsError, match="2 layer") as info:
            export.to_onnx(model, {})
        assert [op for _, op, _ in info.value.problems] == names
        assert all(f"({name})" in str(info.value) for name in names)
    finally:
        for name in names:
            del OPS[name]


def test_models_beyond_the_protobuf_limit_keep_tensors_in_a_side_file(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "EXTERNAL_DATA_THRESHOLD", 1024)
    model = _model()
    state = _state(model)
    path = tmp_path / "big.onnx"
    ax.export_onnx(model, state, path)
    assert (tmp_path / "big.onnx.data").exists()
    x = np.ones((2, 4), np.float32)
    expected = ax.build(model, compiler="reference")[1](state, x)
    np.testing.assert_allclose(axonrt.load(path)(x), expected, rtol=1e-5, atol=1e-6)
