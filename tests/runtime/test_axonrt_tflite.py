"""axonrt on .tflite files: the same signature, validation and containers as .onnx."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonrt
from axonc.to_tflite.export import to_tflite
from axonrt import InputError, ModelError


@pytest.fixture(scope="module")
def nested():
    a = ax.input("a", shape=(None, 3))
    b = ax.input("b", shape=(None, 2))
    model = ax.container({"first": a.dense(2), "rest": (b.tanh(), [a.sigmoid()])})
    init, predict = ax.build(model)
    state = init({"a": ax.template((1, 3)), "b": ax.template((1, 2))})
    return to_tflite(model, state), state, predict


def test_signature_and_nested_outputs(nested):
    data, state, predict = nested
    rt = axonrt.load(data, threads=2)
    assert rt.providers == ["LiteRT"]
    assert {s.name: (s.dtype, s.shape) for s in rt.inputs} == {
        "a": ("float32", ("batch", 3)),
        "b": ("float32", ("batch", 2)),
    }
    feeds = {"a": np.ones((4, 3), np.float32), "b": np.full((4, 2), 0.5, np.float32)}
    out = rt(feeds)
    expected = predict(state, feeds)
    assert isinstance(out["rest"], tuple) and isinstance(out["rest"][1], list)
    np.testing.assert_allclose(out["first"], expected["first"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rest"][0], np.tanh(feeds["b"]), rtol=1e-6)
    np.testing.assert_allclose(out["rest"][1][0], 1 / (1 + np.exp(-feeds["a"])), rtol=1e-6)


def test_inputs_are_validated_as_for_onnx(nested):
    rt = axonrt.load(nested[0])
    good = {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 2), np.float32)}
    with pytest.raises(InputError, match="missing input"):
        rt({"a": good["a"]})
    with pytest.raises(InputError, match="dimension 1 must be 3"):
        rt({**good, "a": np.ones((2, 4), np.float32)})
    with pytest.raises(InputError, match="'batch'"):
        rt({**good, "b": np.ones((3, 2), np.float32)})
    with pytest.raises(InputError, match="unknown input"):
        rt({**good, "c": good["a"]})


def test_a_file_path_and_bad_files(nested, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(nested[0])
    assert [s.name for s in axonrt.load(path).outputs] == ["output_0", "output_1", "output_2"]
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(nested[0][:64])
    with pytest.raises(ModelError, match=str(broken)):
        axonrt.load(broken)


def test_lstm_calls_do_not_depend_on_earlier_calls():
    """An unrolled LSTM run twice on the same input, with another call between, agrees."""
    x = ax.input("x", shape=(None, 4, 2))
    seq, _ = ax.lstm(x, 3, recurrent_initializer="zeros")
    init, predict = ax.build(seq)
    state = init(ax.template((1, 4, 2)))
    rt = axonrt.load(to_tflite(seq, state))
    a = np.random.default_rng(0).normal(size=(2, 4, 2)).astype(np.float32)
    first = rt(a)
    rt(np.ones((5, 4, 2), np.float32))
    np.testing.assert_array_equal(rt(a), first)
    np.testing.assert_allclose(first, predict(state, a), rtol=1e-5, atol=1e-5)
