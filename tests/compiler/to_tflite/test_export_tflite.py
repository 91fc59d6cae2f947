"""The .tflite file itself: layout facts LiteRT relies on and the contract of spec/tflite.md."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

import axonc as ax
import axonrt
from axonc.errors import UnsupportedOpsError
from axonc.serialize import to_bytes
from axonc.to_tflite import builder as builder_mod
from axonc.to_tflite.export import to_tflite


def _model_t(data: bytes):
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def _op_names(data: bytes) -> list[str]:
    m = _model_t(data)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in m.subgraphs[0].operators]


def _cnn() -> ax.Axon:
    return (
        ax.input("image", shape=(None, 8, 8, 3))
        .conv(4, kernel_size=3, padding="same")
        .batch_norm()
        .relu()
        .depthwise_conv(2, kernel_size=3)
        .max_pool(kernel_size=2)
        .dropout(rate=0.5)
        .flatten()
        .dense(5, activation="relu")
        .dense(3)
        .softmax()
    )


def _export(model: ax.Axon, shape: tuple[int, ...], **options):
    init, predict = ax.build(model)
    state = init(ax.template((1, *shape), "f32"))
    return state, predict, to_tflite(model, state, **options)


def test_header_version_and_buffer_zero():
    _, _, data = _export(_cnn(), (8, 8, 3))
    assert data[4:8] == b"TFL3"
    m = _model_t(data)
    assert m.version == 3
    assert m.buffers[0].data is None


def test_every_buffer_starts_on_a_16_byte_boundary():
    _, _, data = _export(_cnn(), (8, 8, 3))
    root = schema.Model.GetRootAs(data, 0)
    base = np.frombuffer(data, np.uint8).ctypes.data
    offsets = []
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        if buf.DataLength():
            offsets.append(buf.DataAsNumpy().ctypes.data - base)
    assert offsets and all(o % 16 == 0 for o in offsets), offsets


def test_channels_last_cnn_has_no_transposes_and_folds_batch_norm_and_fuses_relu():
    state, predict, data = _export(_cnn(), (8, 8, 3))
    ops = _op_names(data)
    assert "TRANSPOSE" not in ops
    assert ops.count("CONV_2D") == 1 and ops.count("DEPTHWISE_CONV_2D") == 1
    assert not {"MUL", "ADD", "RELU"} & set(ops)  # batch norm folded, relus fused
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(axonrt.load(data)(x), predict(state, x), rtol=1e-5, atol=1e-5)


def test_dynamic_batch_is_a_shape_signature_and_names_come_from_the_ir():
    model = ax.container(
        {
            "probs": ax.input("pixels", shape=(None, 4)).dense(2, name="head").softmax(),
            "raw": ax.input("extra", shape=(None, 3)),
        }
    )
    init, predict = ax.build(model)
    state = init({"pixels": ax.template((1, 4), "f32"), "extra": ax.template((1, 3), "f32")})
    data = to_tflite(model, state)
    m = _model_t(data)
    (sig,) = m.signatureDefs
    assert sig.signatureKey == b"serving_default"
    assert sorted(t.name for t in sig.inputs) == [b"extra", b"pixels"]
    tensors = m.subgraphs[0].tensors
    for tm in sig.inputs:
        assert tensors[tm.tensorIndex].shapeSignature[0] == -1
    meta = {x.name.decode(): bytes(m.buffers[x.buffer].data).decode() for x in m.metadata}
    structure = json.loads(meta["axonc.outputs"])
    assert set(structure["dict"]) == {"probs", "raw"}
    assert meta["axonc.source_sha256"] == hashlib.sha256(to_bytes(model)).hexdigest()
    rt = axonrt.load(data)
    feeds = {"pixels": np.ones((5, 4), np.float32), "extra": np.zeros((5, 3), np.float32)}
    out = rt(feeds)
    np.testing.assert_allclose(out["probs"], predict(state, feeds)["probs"], rtol=1e-5)
    np.testing.assert_array_equal(out["raw"], feeds["extra"])


def test_builtin_codes_above_127_use_builtin_code_only():
    _, _, data = _export(ax.input("x", shape=(None, 4)).gelu(), (4,))
    (code,) = _model_t(data).operatorCodes
    assert code.builtinCode == schema.BuiltinOperator.GELU > 127
    assert code.deprecatedBuiltinCode == 127


def test_softmax_beta_and_pool_strides_are_set():
    model = ax.input("x", shape=(None, 4, 4, 2)).avg_pool(kernel_size=2).flatten().softmax()
    _, _, data = _export(model, (4, 4, 2))
    ops = _model_t(data).subgraphs[0].operators
    options = [op.builtinOptions for op in ops if op.builtinOptions is not None]
    assert any(getattr(o, "beta", None) == 1.0 for o in options)
    assert any(getattr(o, "strideH", None) == 2 and o.strideW == 2 for o in options)


def test_every_unsupported_layer_is_named_at_once():
    x = ax.input("x", shape=(None, None, 2))
    seq, _ = ax.lstm(x, 3, recurrent_initializer="zeros", name="rnn")
    model = seq.nx(lambda t: (t.astype("f64") * 2.0).astype("f32"), name="scale_f64")
    init, _ = ax.build(model)
    state = init(ax.template((1, 4, 2), "f32"))
    with pytest.raises(UnsupportedOpsError) as info:
        to_tflite(model, state)
    layers = [layer for layer, _, _ in info.value.problems]
    assert "rnn" in layers
    assert any(layer.startswith("scale_f64/") for layer in layers)
    assert "rnn (lstm): a dynamic or empty time dim" in str(info.value)


def test_a_model_over_2_gb_is_refused(monkeypatch):
    monkeypatch.setattr(builder_mod, "MAX_MODEL_BYTES", 1000)
    model = ax.input("x", shape=(None, 64)).dense(64)
    init, _ = ax.build(model)
    with pytest.raises(builder_mod.ModelTooLargeError, match="2 GiB"):
        to_tflite(model, init(ax.template((1, 64), "f32")))


def test_export_tflite_writes_the_file(tmp_path):
    model = ax.input("x", shape=(None, 3)).dense(2)
    init, predict = ax.build(model)
    state = init(ax.template((1, 3), "f32"))
    path = tmp_path / "m.tflite"
    ax.export_tflite(model, state, path)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(axonrt.load(path)(x), predict(state, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": "int4"}, "quantize must be one of"),
        ({"quantize": "int8"}, "needs calibration"),
        ({"int8_interface": True}, "only to quantize='int8'"),
    ],
)
def test_bad_quantize_options_are_refused(options, message):
    model = ax.input("x", shape=(None, 3)).dense(2)
    init, _ = ax.build(model)
    with pytest.raises(ax.errors.OptionError, match=message):
        to_tflite(model, init(ax.template((1, 3), "f32")), **options)


@pytest.mark.parametrize("quantize", ["float16", "dynamic-int8"])
def test_quantized_large_weights_survive_the_repack(quantize):
    """The quantizer stores big buffers after the flatbuffer (offset/size); the re-aligned
    file must still carry them (a 784x512 kernel, 0.8 MB as f16)."""
    model = ax.input("x", shape=(None, 784)).dense(512, activation="relu").dense(10)
    init, predict = ax.build(model)
    state = init(ax.template((1, 784), "f32"))
    data = to_tflite(model, state, quantize=quantize)
    assert len(data) > 784 * 512 * (2 if quantize == "float16" else 1)
    x = np.random.default_rng(0).normal(size=(2, 784)).astype(np.float32)
    expected = predict(state, x)
    bound = 1e-2 if quantize == "float16" else 0.1
    assert np.abs(axonrt.load(data)(x) - expected).max() < bound * np.abs(expected).max()


def test_without_the_tflite_extra_axonc_imports_and_export_names_the_extra():
    """ai-edge-litert is an extra: axonc and axonrt import without it, and exporting or
    loading a .tflite says which extra to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['ai_edge_litert'] = None\n"
        "import axonc as ax, axonrt\n"
        "m = ax.input('x', shape=(None, 2)).dense(1)\n"
        "init, _ = ax.build(m)\n"
        "s = init(ax.template((1, 2)))\n"
        "try:\n"
        "    ax.export_tflite(m, s, 'never.tflite')\n"
        "except ax.errors.AxoncError as e:\n"
        "    print(type(e).__name__, e)\n"
        "try:\n"
        "    axonrt.load(b'\\x18\\x00\\x00\\x00TFL3' + bytes(64))\n"
        "except axonrt.ModelError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("MissingTfliteError") and "axonc[tflite]" in lines[0]
    assert lines[1].startswith("ModelError") and "axonrt[tflite]" in lines[1]


def test_int8_unrolled_lstm_is_a_valid_model():
    """Every step's state is stacked with CONCATENATION, which the quantizer keeps
    consistent (its int8 PACK left a float output behind an int8 input)."""
    x = ax.input("x", shape=(None, 6, 4))
    _, (_, h) = ax.lstm(x, 8, recurrent_initializer="zeros")
    model = h.dense(3)
    init, predict = ax.build(model)
    state = init(ax.template((1, 6, 4)))
    calib = np.random.default_rng(0).normal(size=(32, 6, 4)).astype(np.float32)
    data = to_tflite(model, state, quantize="int8", calibration=[calib])
    out = axonrt.load(data)(calib[:4])
    expected = predict(state, calib[:4])
    # a valid model with the right numbers' scale (per-tensor int8 through 6 unrolled
    # steps is coarse: about half the output range here; accuracy is not claimed)
    assert out.shape == expected.shape and np.all(np.isfinite(out))
    assert np.abs(out - expected).max() < np.abs(expected).max()


def test_dropout_is_the_identity_without_the_passes_too():
    """At -O0 (no specialise-for-mode pass) each dropout layer's own rule is the identity."""
    x = ax.input("x", shape=(None, 2, 3))
    model = x.dropout(rate=0.5).spatial_dropout(rate=0.5).alpha_dropout(rate=0.5)
    init, _ = ax.build(model)
    data = to_tflite(model, init(ax.template((1, 2, 3))), opt_level=0)
    ones = np.ones((4, 2, 3), np.float32)
    np.testing.assert_array_equal(axonrt.load(data)(ones), ones)
