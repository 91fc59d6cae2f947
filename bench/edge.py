"""Edge inference: axonc's .tflite on LiteRT vs its ONNX on onnxruntime vs TensorFlow's converter.

For the models of bench/inference.py (mlp, cnn, mlp_bn, lstm), with the same seeded
weights everywhere:

- axonc's .tflite, float32 / float16 / int8 (ax.export_tflite; int8 calibrated on 64
  random inputs), run by LiteRT's interpreter;
- axonc's ONNX (to_onnx, -O2) run by onnxruntime;
- the same architecture built in Keras 3 with the same weights, converted by
  TensorFlow's TFLiteConverter to float32 and to int8 (the same calibration inputs as
  the representative dataset, float interface), run by the same LiteRT.

Reported: file size, batch-1 latency (medians of interleaved rounds, p10-p90 of the
per-round ratio), ratios. Every variant's output is checked against axonc's reference
first. TensorFlow is a bench-only peer: run this in its own environment
(pip install tensorflow-cpu==2.21.0 ai-edge-litert ai-edge-quantizer next to axonc's
dependencies), never in the project's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path[:0] = [
    os.path.join(os.path.dirname(__file__), "..", "compiler"),
    os.path.join(os.path.dirname(__file__), "..", "runtime"),
]
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import onnxruntime as ort  # noqa: E402
from _common import THREADS, BackgroundLoad, interleaved, percentiles, print_machine  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from models import axonc_cnn, axonc_lstm, axonc_mlp, axonc_mlp_bn, axonc_state  # noqa: E402

import axonc as ax  # noqa: E402
from axonc.to_onnx.export import to_onnx  # noqa: E402
from axonc.to_tflite.export import to_tflite  # noqa: E402

# ---------------------------------------------------------------------------
# The models in Keras (axonc's are bench/models.py's)


def _dense(keras: Any, units: int, p: dict, activation: str | None = None) -> Any:
    layer = keras.layers.Dense(units, activation=activation)
    return layer, [p["kernel"], p["bias"]]


def keras_model(name: str, d: dict) -> Any:
    """The Keras 3 twin of a bench model, its weights copied from the axonc state `d`."""
    import keras

    layers: list[tuple[Any, list[np.ndarray] | None]] = []
    if name == "mlp":
        inp = keras.Input((784,))
        layers = [
            _dense(keras, 512, d["dense_0"], "relu"),
            _dense(keras, 512, d["dense_1"], "relu"),
            _dense(keras, 10, d["dense_2"]),
            (keras.layers.Softmax(), None),
        ]
    elif name == "cnn":
        inp = keras.Input((28, 28, 1))
        conv = [
            (keras.layers.Conv2D(n, 3, activation="relu"), d[f"conv_{i}"])
            for i, n in enumerate((32, 64))
        ]
        layers = [
            (conv[0][0], [conv[0][1]["kernel"], conv[0][1]["bias"]]),
            (keras.layers.MaxPooling2D(2), None),
            (conv[1][0], [conv[1][1]["kernel"], conv[1][1]["bias"]]),
            (keras.layers.MaxPooling2D(2), None),
            (keras.layers.Flatten(), None),
            _dense(keras, 128, d["dense_0"], "relu"),
            _dense(keras, 10, d["dense_1"]),
        ]
    elif name == "mlp_bn":
        inp = keras.Input((784,))
        for i in range(2):
            bn = d[f"batch_norm_{i}"]
            layers += [
                _dense(keras, 512, d[f"dense_{i}"], "relu"),
                (
                    keras.layers.BatchNormalization(epsilon=1e-5),
                    [bn["gamma"], bn["beta"], bn["mean"], bn["var"]],
                ),
                (keras.layers.Dropout(0.5), None),
            ]
        layers.append(_dense(keras, 10, d["dense_2"]))
    else:
        # a fixed batch of 1: TensorFlow's converter fuses a Keras LSTM into
        # UNIDIRECTIONAL_SEQUENCE_LSTM only with a static batch (a dynamic one fails)
        inp = keras.Input((28, 28), batch_size=1)
        p = d["lstm_0"]
        weights = [
            np.concatenate([p["input_kernel"][f"wi{g}"] for g in "ifgo"], axis=1),
            np.concatenate([p["hidden_kernel"][f"wh{g}"] for g in "ifgo"], axis=1),
            np.concatenate([p["bias"][f"b{g}"] for g in "ifgo"]),
        ]
        layers = [(keras.layers.LSTM(128), weights), _dense(keras, 10, d["dense_0"])]
    x = inp
    for layer, _ in layers:
        x = layer(x)
    model = keras.Model(inp, x)
    for layer, weights in layers:
        if weights is not None:
            layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return model


def tf_convert(name: str, weights: dict, calibration: np.ndarray | None) -> bytes | None:
    """TensorFlow's conversion of the Keras twin, in a child process (TensorFlow's int8
    LSTM conversion crashes the process); None, reported as n/a, where it fails."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        try:
            return pool.submit(_tf_convert, name, weights, calibration).result(600)
        except Exception as exc:  # a crashed child (BrokenProcessPool) or the converter's
            print(f"TFLiteConverter failed for {name}: {type(exc).__name__}", file=sys.stderr)
            return None


def _tf_convert(name: str, weights: dict, calibration: np.ndarray | None) -> bytes | None:
    import tensorflow as tf

    model = keras_model(name, weights)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [calibration[i : i + 1]] for i in range(len(calibration))
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and others
        print(f"TFLiteConverter failed: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return None


# ---------------------------------------------------------------------------
# Running


@dataclass
class Bench:
    name: str
    build: Callable[[], ax.Axon]
    sample: tuple[int, ...]


BENCHES = [
    Bench("mlp", axonc_mlp, (784,)),
    Bench("cnn", axonc_cnn, (28, 28, 1)),
    Bench("mlp_bn", axonc_mlp_bn, (784,)),
    Bench("lstm", axonc_lstm, (28, 28)),
]


def litert(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    interp = Interpreter(model_content=data, num_threads=THREADS)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()

    def run(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return run


def onnxrt(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


VARIANTS = ["onnx", "tfl_f32", "tfl_f16", "tfl_int8", "tf_f32", "tf_int8"]


def run_bench(bench: Bench, rounds: int, round_seconds: float) -> dict[str, Any]:
    model = bench.build()
    state = axonc_state(model, bench.sample)
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(64, *bench.sample)).astype(np.float32)
    x = rng.normal(size=(1, *bench.sample)).astype(np.float32)
    weights = state.data
    files = {
        "onnx": to_onnx(model, state).SerializeToString(),
        "tfl_f32": to_tflite(model, state),
        "tfl_f16": to_tflite(model, state, quantize="float16"),
        "tfl_int8": to_tflite(model, state, quantize="int8", calibration=[calibration]),
        "tf_f32": tf_convert(bench.name, weights, None),
        "tf_int8": tf_convert(bench.name, weights, calibration),
    }
    files = {k: v for k, v in files.items() if v is not None}
    runners = {k: onnxrt(v) if k == "onnx" else litert(v) for k, v in files.items()}
    _, predict = ax.build(model)
    want = np.asarray(predict(state, x))
    errors = {k: float(np.abs(run(x) - want).max()) for k, run in runners.items()}
    with BackgroundLoad() as load:
        times = interleaved(
            {k: (lambda run=run: run(x)) for k, run in runners.items()},
            rounds=rounds,
            round_seconds=round_seconds,
            warmup_seconds=0.3,
        )
    return {
        "sizes": {k: len(v) for k, v in files.items()},
        "times": times,
        "errors": errors,
        "load": load.cores,
    }


def _ratio(times: dict[str, list[float]], num: str, den: str) -> str:
    if num not in times or den not in times:
        return "n/a"
    r = [a / b for a, b in zip(times[num], times[den])]
    p10, p50, p90 = percentiles(r)
    return f"{p50:.2f} ({p10:.2f}-{p90:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--round-seconds", type=float, default=0.4)
    parser.add_argument("models", nargs="*", default=[b.name for b in BENCHES])
    args = parser.parse_args()
    print_machine()
    print(f"     threads: {THREADS} (LiteRT num_threads, onnxruntime intra-op)")
    results = {
        b.name: run_bench(b, args.rounds, args.round_seconds)
        for b in BENCHES
        if b.name in args.models
    }
    print("\n### File size (kB)\n")
    print("| model | " + " | ".join(VARIANTS) + " | axonc f32 / tf f32 | axonc int8 / onnx |")
    print("|---" * (len(VARIANTS) + 3) + "|")
    for name, r in results.items():
        s = r["sizes"]
        cells = " | ".join(f"{s[v] / 1e3:.1f}" if v in s else "n/a" for v in VARIANTS)
        vs_tf = f"{s['tfl_f32'] / s['tf_f32']:.2f}" if "tf_f32" in s else "n/a"
        print(f"| {name} | {cells} | {vs_tf} | {s['tfl_int8'] / s['onnx']:.2f} |")
    print("\n### Batch-1 latency (median µs; ratios: median of per-round ratios, p10-p90)\n")
    print(
        "| model | "
        + " | ".join(VARIANTS)
        + " | axonc f32 / tf f32 | axonc int8 / tf int8 | axonc int8 / onnx | bg load |"
    )
    print("|---" * (len(VARIANTS) + 5) + "|")
    for name, r in results.items():
        t = r["times"]
        cells = " | ".join(
            f"{percentiles(t[v])[1] * 1e6:.0f}" if v in t else "n/a" for v in VARIANTS
        )
        load = "-" if r["load"] is None else f"{r['load']:.2f}"
        print(
            f"| {name} | {cells} | {_ratio(t, 'tfl_f32', 'tf_f32')} | "
            f"{_ratio(t, 'tfl_int8', 'tf_int8')} | {_ratio(t, 'tfl_int8', 'onnx')} | "
            f"{load} |"
        )
    print("\n### Max |output - axonc reference| at batch 1\n")
    print("| model | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 1) + "|")
    for name, r in results.items():
        errors = r["errors"]
        cells = " | ".join(f"{errors[v]:.1e}" if v in errors else "n/a" for v in VARIANTS)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
