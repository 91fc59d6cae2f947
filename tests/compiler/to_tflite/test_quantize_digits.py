"""Quantized .tflite models of digits classifiers keep their accuracy.

The MLP and CNN of tests/compiler/train/test_digits.py are trained briefly
(5 epochs, same recipe), exported as float32, float16 and int8 (calibrated on
200 training images), and scored on LiteRT on the 360 held-out images: int8
may lose at most 1 percentage point against float32, float16 at most 0.1.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from sklearn.datasets import load_digits

import axonc as ax
import axonrt
from axonc import optimizers
from axonc.to_tflite.export import to_tflite


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    order = np.random.default_rng(7).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    return x[train], digits.target[train], x[test], digits.target[test]


def _mlp() -> ax.Axon:
    return ax.input("x", shape=(None, 64)).dense(128, activation="relu").dense(10).softmax()


def _cnn() -> ax.Axon:
    return (
        ax.input("x", shape=(None, 8, 8, 1))
        .conv(16, kernel_size=3, padding="same", activation="relu")
        .max_pool(kernel_size=2)
        .conv(32, kernel_size=3, padding="same", activation="relu")
        .flatten()
        .dense(10)
        .softmax()
    )


@functools.cache
def _trained(kind: str):
    model, shape = (_mlp(), (64,)) if kind == "mlp" else (_cnn(), (8, 8, 1))
    x_train, y_train, _, _ = _digits()
    x_train = x_train.reshape(-1, *shape)
    onehot = np.eye(10, dtype=np.float32)[y_train]
    step = ax.train.compile_step(model, "categorical_cross_entropy", optimizers.adam(2e-3), seed=0)
    ts = step.init(ax.template((None, *shape), "f32"))
    rng = np.random.default_rng(0)
    for _ in range(5):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            ts, _ = step(ts, x_train[batch], onehot[batch])
    return model, step.model_state(ts), shape


def _accuracy(data: bytes, shape: tuple[int, ...]) -> float:
    _, _, x_test, y_test = _digits()
    predicted = axonrt.load(data)(x_test.reshape(-1, *shape)).argmax(axis=1)
    return float(np.mean(predicted == y_test))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_quantized_digits_models_keep_their_accuracy(kind):
    model, state, shape = _trained(kind)
    x_train = _digits()[0].reshape(-1, *shape)
    calibration = [x_train[i : i + 50] for i in range(0, 200, 50)]
    f32 = _accuracy(to_tflite(model, state), shape)
    f16 = _accuracy(to_tflite(model, state, quantize="float16"), shape)
    int8 = _accuracy(to_tflite(model, state, quantize="int8", calibration=calibration), shape)
    assert f32 >= 0.9, f32
    assert f32 - f16 <= 0.001, (f32, f16)
    assert f32 - int8 <= 0.01, (f32, int8)


def test_int8_interface_takes_and_gives_int8_with_its_scales():
    """Quantizing by hand with the input's scale, running the int8 interface and
    dequantizing with the output's scale gives what the float interface gives."""
    model, state, _ = _trained("mlp")
    x_train, _, x_test, _ = _digits()
    calibration = [x_train[:100]]
    data = to_tflite(model, state, quantize="int8", calibration=calibration, int8_interface=True)
    floats = axonrt.load(to_tflite(model, state, quantize="int8", calibration=calibration))
    rt = axonrt.load(data)
    assert [s.dtype for s in rt.inputs] == ["int8"] and [s.dtype for s in rt.outputs] == ["int8"]
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    # an int8 softmax output is fixed by LiteRT's kernel to scale 1/256, zero point -128
    assert (out_scale, out_zero) == (1 / 256, -128)
    q = np.clip(np.round(x_test[:20] / in_scale + in_zero), -128, 127).astype(np.int8)
    probs = (rt(q).astype(np.float32) - out_zero) * out_scale
    np.testing.assert_allclose(probs, floats(x_test[:20]), atol=1e-6)
    _, predict = ax.build(model)
    agree = probs.argmax(axis=1) == predict(state, x_test[:20]).argmax(axis=1)
    assert agree.mean() >= 0.9
