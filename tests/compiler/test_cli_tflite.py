"""The axonc command line on TFLite: compile (float32, quantized), inspect, run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import axonc as ax
import axonrt
from axonc.cli import cli


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> tuple[Path, object, object]:
    model = (
        ax.input("input", shape=(None, 6, 6, 1))
        .conv(3, kernel_size=3, padding="same", activation="relu")
        .flatten()
        .dense(4)
        .softmax()
    )
    init, predict = ax.build(model)
    state = init(ax.template((1, 6, 6, 1)))
    path = tmp_path_factory.mktemp("cli_tflite") / "cnn.axon"
    ax.save(model, state, path)
    return path, state, predict


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _x(n: int = 3) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 6, 6, 1)).astype(np.float32)


def test_compile_to_tflite_by_extension_and_by_target(cnn_file, tmp_path):
    path, state, predict = cnn_file
    out = tmp_path / "cnn.tflite"
    result = invoke("compile", path, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "TFLite, float32" in result.stdout
    np.testing.assert_allclose(axonrt.load(out)(_x()), predict(state, _x()), rtol=1e-5, atol=1e-6)
    by_target = invoke("compile", path, "--target", "tflite")
    assert by_target.exit_code == 0, by_target.stderr
    assert path.with_suffix(".tflite").read_bytes() == out.read_bytes()


@pytest.mark.parametrize("quantize", ["float16", "dynamic-int8", "int8"])
def test_compile_quantized(cnn_file, tmp_path, quantize):
    path, state, predict = cnn_file
    out = tmp_path / f"cnn_{quantize}.tflite"
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=_x(64))
    extra = ["--calibration", calib] if quantize == "int8" else []
    result = invoke("compile", path, "-o", out, "--quantize", quantize, *extra)
    assert result.exit_code == 0, result.stderr
    probs = axonrt.load(out)(_x())
    # an untrained model on random data: a smoke bound (accuracy: test_quantize_digits.py)
    bound = {"float16": 1e-3, "dynamic-int8": 0.05, "int8": 0.15}[quantize]
    assert np.abs(probs - predict(state, _x())).max() < bound
    inspected = invoke("inspect", out)
    assert inspected.exit_code == 0, inspected.stderr
    assert f"quantization: {quantize}" in inspected.stdout


def test_inspect_tflite_lists_signature_tensors_and_ops(cnn_file, tmp_path):
    out = tmp_path / "cnn.tflite"
    assert invoke("compile", cnn_file[0], "-o", out).exit_code == 0
    result = invoke("inspect", out)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "signature 'serving_default':" in lines
    assert "    input  float32 [?, 6, 6, 1]" in lines
    assert "    output  float32 [?, 4]" in lines
    assert any(line.split() == ["CONV_2D", "1"] for line in lines)
    assert not any(line.split()[:1] == ["RELU"] for line in lines)  # fused into CONV_2D


def test_run_tflite(cnn_file, tmp_path):
    _, state, predict = cnn_file
    out = tmp_path / "cnn.tflite"
    assert invoke("compile", cnn_file[0], "-o", out).exit_code == 0
    np.save(tmp_path / "x.npy", _x())
    result = invoke("run", out, "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    written = np.load(tmp_path / "output.npy")
    np.testing.assert_allclose(written, predict(state, _x()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--quantize", "int8"], ["--calibration"]),
        (["--mode", "train"], ["inference mode"]),
        (["--target", "onnx", "--quantize", "float16"], ["--target tflite"]),
    ],
)
def test_bad_tflite_options_are_one_line_errors(cnn_file, tmp_path, args, words):
    result = invoke("compile", cnn_file[0], "-o", tmp_path / "m.tflite", *args)
    if "--target" in args:
        result = invoke("compile", cnn_file[0], *args)
    assert result.exit_code == 1, result.stdout
    assert len(result.stderr.splitlines()) == 1
    for word in words:
        assert word in result.stderr


def test_a_bad_calibration_file_is_a_one_line_error(cnn_file, tmp_path):
    bad = tmp_path / "calib.npz"
    bad.write_bytes(b"not a zip")
    out = tmp_path / "m.tflite"
    result = invoke("compile", cnn_file[0], "-o", out, "--quantize", "int8", "--calibration", bad)
    assert result.exit_code == 1 and "not a readable .npz" in result.stderr
