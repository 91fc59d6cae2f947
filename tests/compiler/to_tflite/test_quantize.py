"""int8 calibration: every activation's range is the min/max over all calibration samples."""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter

import axonc as ax
from axonc.to_tflite import quantize
from axonc.to_tflite.export import to_tflite


def _model_and_state():
    model = ax.input("x", shape=(None, 4)).dense(3)
    init_fn, _ = ax.build(model)
    return model, init_fn(ax.template((1, 4), "f32"), ax.ModelState.empty())


def _input_range(data: bytes) -> tuple[float, float]:
    (inp,) = Interpreter(model_content=data).get_input_details()
    scale, zero = inp["quantization"]
    return scale * (-128 - zero), scale * (127 - zero)


def test_an_outlier_in_one_sample_widens_the_input_range():
    """A moving average of per-sample ranges would shrink the outlier's weight to a few
    percent; min/max calibration keeps it (up to half a quantization step)."""
    model, state = _model_and_state()
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1, 1, size=(150, 4)).astype(np.float32)
    samples[70, 2] = 40.0
    calibration = [samples[i : i + 1] for i in range(len(samples))]
    low, high = _input_range(
        to_tflite(model, state, quantize="int8", calibration=calibration, int8_interface=True)
    )
    step = (high - low) / 255
    assert high >= 40.0 - step / 2, (low, high)
    assert low <= samples.min() + step / 2, (low, high)


def test_calibration_does_not_depend_on_how_samples_are_batched(monkeypatch):
    """Chunks of two samples each (many calibration calls) give the same file as one batch."""
    model, state = _model_and_state()
    samples = np.random.default_rng(1).normal(size=(9, 4)).astype(np.float32)
    one = to_tflite(model, state, quantize="int8", calibration=[samples])
    monkeypatch.setattr(quantize, "CHUNK", 2)
    split = [samples[:4], samples[4:5], samples[5:]]
    assert to_tflite(model, state, quantize="int8", calibration=split) == one
