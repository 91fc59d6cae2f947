"""Forms of a convolution's kernel gradient on onnxruntime, at the train bench's cnn shapes.

dW of y = conv(x, W) (stride 1, valid padding), x channels-last as axonc keeps it, two
ONNX forms computing the same tensor:

  conv    what conv_vjp lowers to now: x and the cotangent moved to channels-first with
          the batch as channels (Transposes), one Conv whose kernel is the cotangent
          (kernel 11x11 or 26x26, output 3x3), a Transpose to HWIO
  im2col  kh*kw shifted Slices of channels-last x stacked on a new axis, Reshape to
          (N*H'*W', kh*kw*C), one Gemm(transA) with the cotangent as (N*H'*W', O): HWIO
          directly, no layout Transpose

Both are checked equal (1e-3 relative) to numpy, then timed interleaved on one session
each (default SessionOptions, as the step's).

Run: python bench/conv_grad.py [--rounds 20] [--round-ms 200]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BackgroundLoad, interleaved, percentiles, print_machine, wait_quiet

# (batch, H, W, C_in, C_out, k) of the cnn's two convs
SHAPES = {"conv_0": (64, 28, 28, 1, 32, 3), "conv_1": (64, 13, 13, 32, 64, 3)}


def _model(nodes: list, inputs: list, output: tuple, inits: dict) -> onnx.ModelProto:
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "dw",
        [helper.make_tensor_value_info(n, f32, s) for n, s in inputs],
        [helper.make_tensor_value_info(output[0], f32, output[1])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_form(n: int, h: int, w: int, c: int, o: int, k: int) -> onnx.ModelProto:
    ho, wo = h - k + 1, w - k + 1
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[3, 0, 1, 2]),  # (C, N, H, W)
        helper.make_node("Transpose", ["cot"], ["ct"], perm=[3, 0, 1, 2]),  # (O, N, H', W')
        helper.make_node("Conv", ["xt", "ct"], ["dwt"], kernel_shape=[ho, wo]),  # (C, O, k, k)
        helper.make_node("Transpose", ["dwt"], ["dw"], perm=[2, 3, 0, 1]),  # HWIO
    ]
    return _model(nodes, [("x", [n, h, w, c]), ("cot", [n, ho, wo, o])], ("dw", [k, k, c, o]), {})


def im2col_form(n: int, h: int, w: int, c: int, o: int, k: int) -> onnx.ModelProto:
    ho, wo = h - k + 1, w - k + 1
    nodes, taps, inits = [], [], {}
    inits["axes"] = np.array([1, 2], np.int64)
    inits["tap_axis"] = np.array([3], np.int64)
    for i in range(k):
        for j in range(k):
            inits[f"s{i}{j}"] = np.array([i, j], np.int64)
            inits[f"e{i}{j}"] = np.array([i + ho, j + wo], np.int64)
            nodes.append(
                helper.make_node("Slice", ["x", f"s{i}{j}", f"e{i}{j}", "axes"], [f"t{i}{j}"])
            )
            nodes.append(helper.make_node("Unsqueeze", [f"t{i}{j}", "tap_axis"], [f"u{i}{j}"]))
            taps.append(f"u{i}{j}")
    inits["rows"] = np.array([n * ho * wo, k * k * c], np.int64)
    inits["cot_rows"] = np.array([n * ho * wo, o], np.int64)
    inits["hwio"] = np.array([k, k, c, o], np.int64)
    nodes += [
        helper.make_node("Concat", taps, ["patches"], axis=3),  # (N, H', W', k*k, C)
        helper.make_node("Reshape", ["patches", "rows"], ["p2"]),
        helper.make_node("Reshape", ["cot", "cot_rows"], ["c2"]),
        helper.make_node("Gemm", ["p2", "c2"], ["dw2"], transA=1),  # (k*k*C, O)
        helper.make_node("Reshape", ["dw2", "hwio"], ["dw"]),
    ]
    return _model(
        nodes, [("x", [n, h, w, c]), ("cot", [n, ho, wo, o])], ("dw", [k, k, c, o]), inits
    )


def reference(x: np.ndarray, cot: np.ndarray, k: int) -> np.ndarray:
    ho, wo = cot.shape[1:3]
    out = np.zeros((k, k, x.shape[3], cot.shape[3]), np.float64)
    for i in range(k):
        for j in range(k):
            out[i, j] = np.einsum("nhwc,nhwo->co", x[:, i : i + ho, j : j + wo], cot)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--round-ms", type=float, default=200.0)
    args = parser.parse_args()
    print_machine()
    rng = np.random.default_rng(0)
    print("\n| conv | x (NHWC) | conv form ms | im2col form ms | **im2col/conv** | bg load |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (n, h, w, c, o, k) in SHAPES.items():
        x = rng.normal(size=(n, h, w, c)).astype(np.float32)
        cot = rng.normal(size=(n, h - k + 1, w - k + 1, o)).astype(np.float32)
        want = reference(x, cot, k)
        fns = {}
        for form, build in (("conv", conv_form), ("im2col", im2col_form)):
            sess = ort.InferenceSession(
                build(n, h, w, c, o, k).SerializeToString(),
                ort.SessionOptions(),
                providers=["CPUExecutionProvider"],
            )
            got = sess.run(None, {"x": x, "cot": cot})[0]
            err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
            if not err <= 1e-3:
                raise SystemExit(f"{name} {form}: differs from numpy by {err:.2e} (relative)")
            feeds = {"x": x, "cot": cot}
            fns[form] = lambda s=sess, f=feeds: s.run(None, f)
        wait_quiet(timeout=30.0)
        with BackgroundLoad() as load:
            samples = interleaved(
                fns,
                rounds=args.rounds,
                round_seconds=args.round_ms / 1e3,
                warmup_seconds=0.3,
            )
        med = {f: percentiles(v)[1] * 1e3 for f, v in samples.items()}
        ratios = [a / b for a, b in zip(samples["im2col"], samples["conv"], strict=True)]
        p10, _, p90 = percentiles(ratios)
        print(
            f"| {name} | {n}x{h}x{w}x{c} -> {o} | {med['conv']:.2f} | {med['im2col']:.2f} "
            f"| **{med['im2col'] / med['conv']:.2f}** ({p10:.2f}–{p90:.2f}) | {load.cores:.2f} |"
        )


if __name__ == "__main__":
    main()
