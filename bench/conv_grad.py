"""Forms of the convolution and max-pool gradients on onnxruntime, at the train bench's
cnn shapes and a few other geometries, timed interleaved (one session per form).

dW, the kernel gradient of y = conv(x, W) (x channels-last, as axonc keeps it):

  conv      the batch-as-channels form: x and the cotangent Transposed to (C, N, ...)
            and (O, N, ...), one Conv whose kernel is the cotangent (strides and kernel
            dilation swap roles; a stride's uncovered tail is sliced off), a Transpose
            to HWIO
  im2col    kh*kw strided Slices of the padded channels-last x, concatenated on the
            channel axis, one Gemm(transA) with the cotangent as (N*H'*W', O): HWIO as
            it is, no Transpose (what conv_kernel_grad lowers to)

dX, the data gradient (cotangent channels-last in, dX channels-last out; the first two
forms pay the layout Transposes the step graph needs around a channels-first op):

  conv      a Conv of the (stride-dilated, padded) cotangent with the flipped,
            in/out-swapped kernel (what conv_vjp lowers to; stride dilation by a
            depthwise ConvTranspose of ones)
  convT     one ConvTranspose of the cotangent with W itself (strides, dilations and
            pads as the forward's; output_padding for a stride's tail)
  im2col    stride 1 only: kh*kw Slices of the cotangent padded by k-1-pad,
            concatenated, one MatMul with the flipped kernel as (kh*kw*O, C)

max-pool's input gradient (2x2 windows, stride 2, valid; x channels-last):

  scatter   Transpose to channels-first, MaxPool's Indices (computed again),
            ScatterElements(add) of the cotangent into zeros, Transpose back
  argmax    no Transpose: x reshaped to (N, H/2, 2, W/2, 2, C); ArgMax over the column
            tap of each window row, ReduceMax + ArgMax over the row tap: the first
            maximum in row-major order, exactly the reference's tie rule; a Where of
            the broadcast cotangent on the one-hot of both indices
  slices    no Transpose: 4 strided tap Slices, m = Max of them; per tap in row-major
            order Where(tap == m, rest, 0) and rest -= that (exact): the first maximum
            gets the cotangent; Unsqueeze + Concat + Reshape interleave the taps back
  slices.mul  the same with rest * Cast(tap == m) for the Where (what
            np.max_pool_grad lowers to for tiling windows)

Every form is checked against numpy (1e-3 relative) first.

Run: python bench/conv_grad.py [--rounds 15] [--round-ms 150] [--only dw dx pool]
     [--shapes "cnn conv_1" ...] [--threads 1]  (one thread is steadier on a loaded machine)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BackgroundLoad, interleaved, percentiles, print_machine, wait_quiet

BIG = 2**62
# name: (batch, H, W, C_in, C_out, k, stride, kernel dilation, (lo, hi) pad per dim)
CONVS = {
    "cnn conv_0": (64, 28, 28, 1, 32, 3, 1, 1, 0),
    "cnn conv_1": (64, 13, 13, 32, 64, 3, 1, 1, 0),
    "same 3x3": (64, 14, 14, 32, 64, 3, 1, 1, 1),
    "stride 2 same": (64, 16, 16, 32, 64, 3, 2, 1, 1),
    "dilation 2": (64, 15, 15, 32, 32, 3, 1, 2, 0),
    "5x5 valid": (32, 16, 16, 16, 32, 5, 1, 1, 0),
}
POOLS = {"cnn pool_0": (64, 26, 26, 32), "cnn pool_1": (64, 11, 11, 64)}


class G:
    """A tiny ONNX graph builder: nodes, int64 initializers, fresh names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        out = f"v{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def const(self, value) -> str:
        name = f"c{len(self.inits)}"
        self.inits[name] = np.asarray(value)
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), np.int64))

    def model(self, inputs: dict, out: str) -> onnx.ModelProto:
        f32 = TensorProto.FLOAT
        self.nodes[-1].output[0] = "out"
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(n, f32, s) for n, s in inputs.items()],
            [helper.make_value_info("out", helper.make_tensor_type_proto(f32, None))],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def geometry(shape: tuple) -> dict:
    n, h, w, c, o, k, s, d, p = shape
    keff = (k - 1) * d + 1
    outs = [(size + 2 * p - keff) // s + 1 for size in (h, w)]
    tails = [(size + 2 * p - keff) % s for size in (h, w)]
    return {"n": n, "hw": (h, w), "c": c, "o": o, "k": k, "s": s, "d": d, "p": p}, outs, tails


# ---- numpy references ---------------------------------------------------------------


def np_conv_parts(x: np.ndarray, shape: tuple) -> tuple[np.ndarray, list[tuple]]:
    """Padded x (NHWC, float64) and the tap slices of each kernel position."""
    geo, outs, _ = geometry(shape)
    p, s, d = geo["p"], geo["s"], geo["d"]
    xp = np.pad(x.astype(np.float64), [(0, 0), (p, p), (p, p), (0, 0)])
    taps = []
    for i, j in itertools.product(range(geo["k"]), repeat=2):
        taps.append(
            (
                (i, j),
                (
                    slice(None),
                    slice(i * d, i * d + (outs[0] - 1) * s + 1, s),
                    slice(j * d, j * d + (outs[1] - 1) * s + 1, s),
                ),
            )
        )
    return xp, taps


def np_dw(x: np.ndarray, cot: np.ndarray, shape: tuple) -> np.ndarray:
    xp, taps = np_conv_parts(x, shape)
    geo = geometry(shape)[0]
    out = np.zeros((geo["k"], geo["k"], geo["c"], geo["o"]))
    for (i, j), sl in taps:
        out[i, j] = np.einsum("nhwc,nhwo->co", xp[sl], cot)
    return out


def np_dx(x: np.ndarray, w: np.ndarray, cot: np.ndarray, shape: tuple) -> np.ndarray:
    xp, taps = np_conv_parts(x, shape)
    geo = geometry(shape)[0]
    acc = np.zeros_like(xp)
    for (i, j), sl in taps:
        acc[sl] += np.einsum("nhwo,co->nhwc", cot, w[i, j])
    p = geo["p"]
    return acc[:, p : acc.shape[1] - p, p : acc.shape[2] - p]


def np_pool_grad(x: np.ndarray, cot: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    win = x[:, : ho * 2, : wo * 2].reshape(n, ho, 2, wo, 2, c).transpose(0, 1, 3, 5, 2, 4)
    first = np.argmax(win.reshape(n, ho, wo, c, 4), axis=-1)
    out = np.zeros_like(x, np.float64)
    for t in range(4):
        i, j = divmod(t, 2)
        out[:, i : ho * 2 : 2, j : wo * 2 : 2] += np.where(first == t, cot, 0.0)
    return out


# ---- ONNX forms ---------------------------------------------------------------------


def pads4(p: int) -> list[int]:
    return [p, p, p, p]


def dw_conv(shape: tuple) -> onnx.ModelProto:
    geo, outs, tails = geometry(shape)
    g = G()
    xt = g.op("Transpose", ["x"], perm=[3, 0, 1, 2])
    ct = g.op("Transpose", ["cot"], perm=[3, 0, 1, 2])
    p = geo["p"]
    y = g.op(
        "Conv",
        [xt, ct],
        kernel_shape=outs,
        strides=[geo["d"]] * 2,
        dilations=[geo["s"]] * 2,
        pads=[p, p, p - tails[0], p - tails[1]],
    )
    g.op("Transpose", [y], perm=[2, 3, 0, 1])
    return g.model(dw_inputs(shape), "out")


def dw_inputs(shape: tuple) -> dict:
    geo, outs, _ = geometry(shape)
    return {"x": [geo["n"], *geo["hw"], geo["c"]], "cot": [geo["n"], *outs, geo["o"]]}


def im2col_taps(g: G, x: str, k: int, s: int, d: int) -> str:
    taps = []
    for i, j in itertools.product(range(k), repeat=2):
        ends = [-(k - 1 - i) * d or BIG, -(k - 1 - j) * d or BIG]
        taps.append(
            g.op("Slice", [x, g.ints([i * d, j * d]), g.ints(ends), g.ints([1, 2]), g.ints([s, s])])
        )
    return g.op("Concat", taps, axis=3)


def dw_im2col(shape: tuple) -> onnx.ModelProto:
    geo, _, _ = geometry(shape)
    g = G()
    x = g.op("Pad", ["x", g.ints([0, geo["p"], geo["p"], 0] * 2)]) if geo["p"] else "x"
    patches = im2col_taps(g, x, geo["k"], geo["s"], geo["d"])
    rows = g.op("Reshape", [patches, g.ints([-1, geo["k"] ** 2 * geo["c"]])])
    cot = g.op("Reshape", ["cot", g.ints([-1, geo["o"]])])
    dw = g.op("Gemm", [rows, cot], transA=1)
    g.op("Reshape", [dw, g.ints([geo["k"], geo["k"], geo["c"], geo["o"]])])
    return g.model(dw_inputs(shape), "out")


def dw_im2col_t(shape: tuple) -> onnx.ModelProto:
    geo, _, _ = geometry(shape)
    k, c, o = geo["k"], geo["c"], geo["o"]
    g = G()
    x = g.op("Pad", ["x", g.ints([0, geo["p"], geo["p"], 0] * 2)]) if geo["p"] else "x"
    patches = im2col_taps(g, x, k, geo["s"], geo["d"])
    rows = g.op("Reshape", [patches, g.ints([-1, k * k * c])])
    cot = g.op("Reshape", ["cot", g.ints([-1, o])])
    dw = g.op("Gemm", [cot, rows], transA=1)  # (O, k*k*C)
    g.op("Transpose", [g.op("Reshape", [dw, g.ints([o, k, k, c])])], perm=[1, 2, 3, 0])
    return g.model(dw_inputs(shape), "out")


def dx_inputs(shape: tuple) -> dict:
    geo, outs, _ = geometry(shape)
    k = geo["k"]
    return {"w": [k, k, geo["c"], geo["o"]], "cot": [geo["n"], *outs, geo["o"]]}


def dx_conv(shape: tuple) -> onnx.ModelProto:
    geo, _, tails = geometry(shape)
    k, s, d, p, o = geo["k"], geo["s"], geo["d"], geo["p"], geo["o"]
    keff = (k - 1) * d + 1
    g = G()
    ct = g.op("Transpose", ["cot"], perm=[0, 3, 1, 2])
    if s > 1:
        ones = g.const(np.ones((o, 1, 1, 1), np.float32))
        ct = g.op("ConvTranspose", [ct, ones], strides=[s, s], kernel_shape=[1, 1], group=o)
    wt = g.op("Transpose", ["w"], perm=[2, 3, 0, 1])  # (C, O, k, k)
    flip = g.op(
        "Slice",
        [wt, g.ints([-1, -1]), g.ints([-BIG, -BIG]), g.ints([2, 3]), g.ints([-1, -1])],
    )
    hi = [keff - 1 - p + t for t in tails]
    y = g.op(
        "Conv", [ct, flip], kernel_shape=[k, k], dilations=[d, d], pads=[keff - 1 - p] * 2 + hi
    )
    g.op("Transpose", [y], perm=[0, 2, 3, 1])
    return g.model(dx_inputs(shape), "out")


def dx_convt(shape: tuple) -> onnx.ModelProto:
    geo, _, tails = geometry(shape)
    k, s, d, p = geo["k"], geo["s"], geo["d"], geo["p"]
    g = G()
    ct = g.op("Transpose", ["cot"], perm=[0, 3, 1, 2])
    w = g.op("Transpose", ["w"], perm=[3, 2, 0, 1])  # (O, C, k, k): ConvTranspose's (in, out)
    y = g.op(
        "ConvTranspose",
        [ct, w],
        kernel_shape=[k, k],
        strides=[s, s],
        dilations=[d, d],
        pads=pads4(p),
        output_padding=list(tails),
    )
    g.op("Transpose", [y], perm=[0, 2, 3, 1])
    return g.model(dx_inputs(shape), "out")


def dx_im2col(shape: tuple) -> onnx.ModelProto:
    geo, _, _ = geometry(shape)
    k, d, p, c, o = geo["k"], geo["d"], geo["p"], geo["c"], geo["o"]
    e = (k - 1) * d - p
    g = G()
    padded = g.op("Pad", ["cot", g.ints([0, e, e, 0] * 2)])
    patches = im2col_taps(g, padded, k, 1, d)  # (N, H, W, k*k*O)
    flip = g.op(
        "Slice",
        ["w", g.ints([-1, -1]), g.ints([-BIG, -BIG]), g.ints([0, 1]), g.ints([-1, -1])],
    )
    wt = g.op("Transpose", [flip], perm=[0, 1, 3, 2])  # (k, k, O, C)
    g.op("MatMul", [patches, g.op("Reshape", [wt, g.ints([k * k * o, c])])])
    return g.model(dx_inputs(shape), "out")


def pool_scatter(shape: tuple) -> onnx.ModelProto:
    n, h, w, c = shape
    g = G()
    xt = g.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    ct = g.op("Transpose", ["cot"], perm=[0, 3, 1, 2])
    mp = helper.make_node("MaxPool", [xt], ["pooled", "idx"], kernel_shape=[2, 2], strides=[2, 2])
    g.nodes.append(mp)
    flat = g.ints([-1])
    zeros = g.const(np.zeros(n * c * h * w, np.float32))
    z = g.op(
        "ScatterElements",
        [zeros, g.op("Reshape", ["idx", flat]), g.op("Reshape", [ct, flat])],
        axis=0,
        reduction="add",
    )
    z = g.op("Reshape", [z, g.ints([n, c, h, w])])
    g.op("Transpose", [z], perm=[0, 2, 3, 1])
    return g.model(pool_inputs(shape), "out")


def pool_inputs(shape: tuple) -> dict:
    n, h, w, c = shape
    return {"x": [n, h, w, c], "cot": [n, h // 2, w // 2, c]}


def pool_argmax(shape: tuple) -> onnx.ModelProto:
    n, h, w, c = shape
    ho, wo = h // 2, w // 2
    g = G()
    x = "x"
    if (h % 2) or (w % 2):
        x = g.op("Slice", [x, g.ints([0, 0]), g.ints([ho * 2, wo * 2]), g.ints([1, 2])])
    win = g.op("Reshape", [x, g.ints([n, ho, 2, wo, 2, c])])
    col = g.op("ArgMax", [win], axis=4, keepdims=1)  # (n, ho, 2, wo, 1, c)
    rowmax = g.op("ReduceMax", [win], axes=[4], keepdims=1)
    row = g.op("ArgMax", [rowmax], axis=2, keepdims=1)  # (n, ho, 1, wo, 1, c)
    taps = np.arange(2, dtype=np.int64)
    hit_row = g.op("Equal", [row, g.const(taps.reshape(1, 1, 2, 1, 1, 1))])
    hit_col = g.op("Equal", [col, g.const(taps.reshape(1, 1, 1, 1, 2, 1))])
    hit = g.op("And", [hit_row, hit_col])
    cot = g.op("Reshape", ["cot", g.ints([n, ho, 1, wo, 1, c])])
    z = g.op("Where", [hit, cot, g.const(np.float32(0.0))])
    z = g.op("Reshape", [z, g.ints([n, ho * 2, wo * 2, c])])
    if (h % 2) or (w % 2):
        z = g.op("Pad", [z, g.ints([0, 0, 0, 0, 0, h - ho * 2, w - wo * 2, 0])])
    else:
        g.op("Identity", [z])
    return g.model(pool_inputs(shape), "out")


def pool_slices(shape: tuple, mul: bool = False) -> onnx.ModelProto:
    n, h, w, c = shape
    ho, wo = h // 2, w // 2
    g = G()
    taps = [
        g.op(
            "Slice",
            ["x", g.ints([i, j]), g.ints([i + ho * 2, j + wo * 2]), g.ints([1, 2]), g.ints([2, 2])],
        )
        for i, j in itertools.product(range(2), repeat=2)
    ]
    m = g.op("Max", taps)
    zero = g.const(np.float32(0.0))
    rest, grads = "cot", []
    for t in taps[:-1]:
        hit = g.op("Equal", [t, m])
        if mul:
            grads.append(g.op("Mul", [rest, g.op("Cast", [hit], to=TensorProto.FLOAT)]))
        else:
            grads.append(g.op("Where", [hit, rest, zero]))
        rest = g.op("Sub", [rest, grads[-1]])  # exact: rest or 0
    grads.append(rest)
    grads = [g.op("Unsqueeze", [v, g.ints([3])]) for v in grads]
    rows = [
        g.op("Unsqueeze", [g.op("Concat", grads[2 * i : 2 * i + 2], axis=3), g.ints([2])])
        for i in range(2)
    ]
    z = g.op("Reshape", [g.op("Concat", rows, axis=2), g.ints([n, ho * 2, wo * 2, c])])
    if (h % 2) or (w % 2):
        g.op("Pad", [z, g.ints([0, 0, 0, 0, 0, h - ho * 2, w - wo * 2, 0])])
    return g.model(pool_inputs(shape), "out")


# ---- timing -------------------------------------------------------------------------


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def compare(title: str, forms: dict, feeds: dict, want: np.ndarray, base: str, args) -> None:
    fns = {}
    for form, model in forms.items():
        sess = session(model, args.threads)
        got = sess.run(None, feeds)[0]
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        if not err <= 1e-3:
            raise SystemExit(f"{title} {form}: differs from numpy by {err:.2e} (relative)")
        fns[form] = lambda s=sess: s.run(None, feeds)
    wait_quiet(timeout=10.0)
    with BackgroundLoad() as load:
        samples = interleaved(
            fns, rounds=args.rounds, round_seconds=args.round_ms / 1e3, warmup_seconds=0.2
        )
    cells = []
    for form in forms:
        med = percentiles(samples[form])[1] * 1e3
        ratios = [a / b for a, b in zip(samples[form], samples[base], strict=True)]
        p10, r, p90 = percentiles(ratios)
        cells.append(f"{form} {med:.2f} ms ({r:.2f}, {p10:.2f}–{p90:.2f})")
    print(f"| {title} | " + " | ".join(cells) + f" | {load.cores:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--round-ms", type=float, default=150.0)
    parser.add_argument("--only", nargs="*", default=["dw", "dx", "pool"])
    parser.add_argument("--shapes", nargs="*", help="conv shapes to run (default: all)")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)"
    )
    args = parser.parse_args()
    print_machine()
    print("\nmedian ms per form (median ratio to the first form, p10–p90 of paired ratios)")
    rng = np.random.default_rng(0)
    for name, shape in CONVS.items():
        if args.shapes and name not in args.shapes:
            continue
        geo, outs, _ = geometry(shape)
        x = rng.normal(size=(geo["n"], *geo["hw"], geo["c"])).astype(np.float32)
        w = rng.normal(size=(geo["k"], geo["k"], geo["c"], geo["o"])).astype(np.float32)
        cot = rng.normal(size=(geo["n"], *outs, geo["o"])).astype(np.float32)
        if "dw" in args.only:
            forms = {
                "conv": dw_conv(shape),
                "im2col": dw_im2col(shape),
                "im2col.T": dw_im2col_t(shape),
            }
            compare(f"dW {name}", forms, {"x": x, "cot": cot}, np_dw(x, cot, shape), "conv", args)
        if "dx" in args.only and geo["c"] > 1:
            forms = {"conv": dx_conv(shape), "convT": dx_convt(shape)}
            if geo["s"] == 1:
                forms["im2col"] = dx_im2col(shape)
            want = np_dx(x, w, cot, shape)
            compare(f"dX {name}", forms, {"w": w, "cot": cot}, want, "conv", args)
    if "pool" in args.only:
        for name, shape in POOLS.items():
            x = rng.normal(size=shape).astype(np.float32)
            x = np.maximum(x, 0.0)  # relu'd, as in the cnn: all-zero windows tie
            cot = rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
            cot = cot.astype(np.float32)
            forms = {
                "scatter": pool_scatter(shape),
                "argmax": pool_argmax(shape),
                "slices": pool_slices(shape),
                "slices.mul": pool_slices(shape, mul=True),
            }
            want = np_pool_grad(x, cot)
            compare(f"maxpool {name}", forms, {"x": x, "cot": cot}, want, "scatter", args)


if __name__ == "__main__":
    main()
