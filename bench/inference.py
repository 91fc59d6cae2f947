"""Inference speed: axonc's ONNX vs PyTorch eager vs torch.onnx.export, on CPU.

Four models are built with axonc and again, with the same weights, in PyTorch:

  mlp      784-512-512-10, relu, softmax
  cnn      28x28x1: conv 32 3x3 relu, max_pool 2, conv 64 3x3 relu, max_pool 2,
           flatten, dense 128 relu, dense 10
  mlp_bn   784-512 relu batch_norm dropout 512 relu batch_norm dropout 10
  lstm     (28, 28) sequences: lstm 128, last hidden state, dense 10

and each runs three ways:

  (a) axonc   axonc.to_onnx.export.to_onnx(model, state) (inference, -O2) on onnxruntime
  (b) torch   the PyTorch module, eager, eval mode, under torch.no_grad()
  (c) t.onnx  that module through torch.onnx.export (legacy exporter, dynamo=False,
              opset 17, dynamic batch axis) on onnxruntime

(a) and (c) share one onnxruntime SessionOptions: intra_op_num_threads=2,
ORT_ENABLE_ALL, spinning on; torch.set_num_threads(2). Every call takes a numpy
array and returns one (session.run with a numpy feed, no IOBinding;
torch.from_numpy(x) -> module -> .numpy()), so each pays its own per-call
overhead. Before timing, torch's output must match axonc's reference interpreter
within 1e-4, and both ONNX models must match it too, so all three compute the
same function.

Batch 1 gives latency, batch 64 throughput. The three variants of a model and
batch size are timed interleaved: after a warm-up each gets a call count that
fills about --round-ms, then --rounds rounds run every variant's block in
rotating order; one sample per round is the mean time per call of that block.
Reported: the median over rounds with p10/p90, and the ratios a/c and a/b of the
medians (below 1.00 means axonc's ONNX is faster).

Run: python bench/inference.py [--rounds 30] [--round-ms 100] [--dump DIR]
(--dump writes both ONNX graphs and onnxruntime's optimised forms of them).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import axonc as ax
from axonc.to_onnx.export import to_onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    THREADS,
    BackgroundLoad,
    interleaved,
    median_time,
    percentiles,
    print_machine,
    wait_quiet,
)
from models import axonc_cnn, axonc_lstm, axonc_mlp, axonc_mlp_bn, axonc_state

TOLERANCE = 1e-4
BATCHES = (1, 64)
COMPILE_REPEATS = 5
VARIANTS = ("axonc", "torch", "t.onnx")
SPIN = "1"  # onnxruntime's intra-op worker threads spin between calls (--no-spin: "0")


# ---------------------------------------------------------------------------
# The models, in axonc and in PyTorch


class TorchLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.fc(h[-1])


def torch_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
        nn.Softmax(dim=-1),
    )


def torch_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1600, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def torch_mlp_bn() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.BatchNorm1d(512, eps=1e-5),
        nn.Dropout(0.5),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.BatchNorm1d(512, eps=1e-5),
        nn.Dropout(0.5),
        nn.Linear(512, 10),
    )


# ---------------------------------------------------------------------------
# Copying axonc's parameters into the PyTorch modules


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _linear(layer: nn.Linear, p: dict[str, np.ndarray]) -> None:
    """Dense kernel {in, out} -> Linear weight {out, in}."""
    layer.weight.copy_(_t(p["kernel"].T))
    layer.bias.copy_(_t(p["bias"]))


def _conv(layer: nn.Conv2d, p: dict[str, np.ndarray]) -> None:
    """Conv kernel HWIO -> OIHW."""
    layer.weight.copy_(_t(p["kernel"].transpose(3, 2, 0, 1)))
    layer.bias.copy_(_t(p["bias"]))


def _batch_norm(layer: nn.BatchNorm1d, p: dict[str, np.ndarray]) -> None:
    layer.weight.copy_(_t(p["gamma"]))
    layer.bias.copy_(_t(p["beta"]))
    layer.running_mean.copy_(_t(p["mean"]))
    layer.running_var.copy_(_t(p["var"]))


def load_mlp(m: nn.Module, d: dict[str, Any]) -> None:
    for layer, key in zip((m[0], m[2], m[4]), ("dense_0", "dense_1", "dense_2")):
        _linear(layer, d[key])


def load_cnn(m: nn.Module, d: dict[str, Any]) -> None:
    _conv(m[0], d["conv_0"])
    _conv(m[3], d["conv_1"])
    # axonc flattens (H, W, C) channels-last, torch (C, H, W): reorder the kernel's rows
    k = d["dense_0"]["kernel"]  # (5*5*64, 128), rows in h, w, c order
    k = k.reshape(5, 5, 64, 128).transpose(2, 0, 1, 3).reshape(1600, 128)
    _linear(m[7], {"kernel": k, "bias": d["dense_0"]["bias"]})
    _linear(m[9], d["dense_1"])


def load_mlp_bn(m: nn.Module, d: dict[str, Any]) -> None:
    _linear(m[0], d["dense_0"])
    _batch_norm(m[2], d["batch_norm_0"])
    _linear(m[4], d["dense_1"])
    _batch_norm(m[6], d["batch_norm_1"])
    _linear(m[8], d["dense_2"])


def load_lstm(m: nn.Module, d: dict[str, Any]) -> None:
    """Axon's per-gate maps -> torch's packed (4U, .) weights in gate order i, f, g, o."""
    p = d["lstm_0"]
    m.lstm.weight_ih_l0.copy_(_t(np.concatenate([p["input_kernel"][f"wi{g}"].T for g in "ifgo"])))
    m.lstm.weight_hh_l0.copy_(_t(np.concatenate([p["hidden_kernel"][f"wh{g}"].T for g in "ifgo"])))
    m.lstm.bias_ih_l0.copy_(_t(np.concatenate([p["bias"][f"b{g}"] for g in "ifgo"])))
    m.lstm.bias_hh_l0.zero_()  # Axon has one bias per gate
    _linear(m.fc, d["dense_0"])


@dataclass
class Bench:
    """One benchmark model: both definitions, the weight copy, and the input layouts."""

    name: str
    axonc: Callable[[], ax.Axon]
    torch: Callable[[], nn.Module]
    load: Callable[[nn.Module, dict[str, Any]], None]
    sample: tuple[int, ...]  # one example, axonc's layout
    to_torch: Callable[[np.ndarray], np.ndarray] = lambda x: x  # axonc layout -> torch's


BENCHES = [
    Bench("mlp", axonc_mlp, torch_mlp, load_mlp, (784,)),
    # channels-last (N, 28, 28, 1) -> channels-first (N, 1, 28, 28): one channel, a reshape
    Bench(
        "cnn",
        axonc_cnn,
        torch_cnn,
        load_cnn,
        (28, 28, 1),
        lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
    ),
    Bench("mlp_bn", axonc_mlp_bn, torch_mlp_bn, load_mlp_bn, (784,)),
    Bench("lstm", axonc_lstm, TorchLSTM, load_lstm, (28, 28)),
]


# ---------------------------------------------------------------------------
# Building the three variants


def session_options(optimized_path: str | None = None) -> ort.SessionOptions:
    """The one onnxruntime configuration both ONNX variants run with."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", SPIN)
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    return so


def session(model_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, session_options(), providers=["CPUExecutionProvider"])


def torch_export(module: nn.Module, example: torch.Tensor) -> bytes:
    f = io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    return f.getvalue()


def op_counts(model: onnx.ModelProto) -> str:
    counts = Counter(n.op_type for n in model.graph.node)
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def dump_graphs(name: str, a: bytes, c: bytes, out_dir: str) -> None:
    """Write both ONNX graphs and onnxruntime's optimised forms; print their op counts."""
    os.makedirs(out_dir, exist_ok=True)
    for tag, data in (("axonc", a), ("torch", c)):
        raw = os.path.join(out_dir, f"{name}.{tag}.onnx")
        opt = os.path.join(out_dir, f"{name}.{tag}.ort_optimized.onnx")
        with open(raw, "wb") as f:
            f.write(data)
        ort.InferenceSession(data, session_options(opt), providers=["CPUExecutionProvider"])
        print(f"    {tag:>6} graph  : {op_counts(onnx.load_from_string(data))}")
        print(f"    {tag:>6} ORT opt: {op_counts(onnx.load(opt))}")


def check(what: str, got: np.ndarray, want: np.ndarray) -> float:
    err = float(np.max(np.abs(got - want)))
    if not err <= TOLERANCE:
        raise SystemExit(f"{what}: max |diff| {err:.3g} > {TOLERANCE}: not the same function")
    return err


def run_bench(
    b: Bench, args: argparse.Namespace
) -> tuple[dict[int, dict[str, list[float]]], dict[str, Any]]:
    model = b.axonc()
    state = axonc_state(model, b.sample)
    module = b.torch().eval()
    with torch.no_grad():
        b.load(module, state.data)

    # compile times (the process already paid to_onnx's one-off opset probe)
    t_axonc, _ = median_time(lambda: to_onnx(model, state), COMPILE_REPEATS)
    a_model = to_onnx(model, state)
    a_bytes = a_model.SerializeToString()
    example = torch.from_numpy(b.to_torch(np.zeros((2, *b.sample), np.float32)))
    with torch.no_grad():
        t_torch, _ = median_time(lambda: torch_export(module, example), COMPILE_REPEATS)
        c_bytes = torch_export(module, example)
    info = {
        "compile_axonc": t_axonc,
        "compile_torch": t_torch,
        "nodes_axonc": len(a_model.graph.node),
        "nodes_torch": len(onnx.load_from_string(c_bytes).graph.node),
    }
    print(f"  to_onnx {t_axonc * 1e3:.1f} ms, torch.onnx.export {t_torch * 1e3:.1f} ms")
    if args.dump:
        dump_graphs(b.name, a_bytes, c_bytes, args.dump)

    sa, sc = session(a_bytes), session(c_bytes)
    (a_in,), (a_out,) = sa.get_inputs(), sa.get_outputs()
    (c_in,), (c_out,) = sc.get_inputs(), sc.get_outputs()
    _, reference = ax.build(model, compiler="reference")
    rng = np.random.default_rng(0)

    # the same function: torch eager and both ONNX graphs vs axonc's reference interpreter
    x = rng.normal(size=(8, *b.sample)).astype(np.float32)
    want = reference(state, x)
    with torch.no_grad():
        got_b = module(torch.from_numpy(b.to_torch(x))).numpy()
    errs = (
        check(f"{b.name}: torch eager vs axonc reference", got_b, want),
        check(
            f"{b.name}: axonc ONNX vs axonc reference",
            sa.run([a_out.name], {a_in.name: x})[0],
            want,
        ),
        check(
            f"{b.name}: torch ONNX vs axonc reference",
            sc.run([c_out.name], {c_in.name: b.to_torch(x)})[0],
            want,
        ),
    )
    print(
        f"  max |diff| vs reference: torch {errs[0]:.1e}, axonc ONNX {errs[1]:.1e}, "
        f"torch ONNX {errs[2]:.1e}"
    )

    results = {}
    for batch in BATCHES:
        xa = rng.normal(size=(batch, *b.sample)).astype(np.float32)
        xt = b.to_torch(xa)
        fa = {a_in.name: xa}
        fc = {c_in.name: xt}
        a_names, c_names = [a_out.name], [c_out.name]

        def run_torch(xt: np.ndarray = xt) -> np.ndarray:
            return module(torch.from_numpy(xt)).numpy()

        fns = {
            "axonc": lambda fa=fa, a_names=a_names: sa.run(a_names, fa),
            "torch": run_torch,
            "t.onnx": lambda fc=fc, c_names=c_names: sc.run(c_names, fc),
        }
        wait_quiet(timeout=30.0)
        with torch.no_grad(), BackgroundLoad() as load:
            results[batch] = interleaved(
                fns,
                rounds=args.rounds,
                round_seconds=args.round_ms / 1e3,
                warmup_seconds=args.warmup_ms / 1e3,
            )
        med = {k: percentiles(v)[1] for k, v in results[batch].items()}
        print(
            f"  batch {batch:>2}: "
            + ", ".join(f"{k} {v * 1e6:,.1f} us" for k, v in med.items())
            + f"; a/c {med['axonc'] / med['t.onnx']:.2f}, a/b {med['axonc'] / med['torch']:.2f}"
            + f"; background load {load.cores:.2f} cores"
        )
        info[f"load_{batch}"] = load.cores
    return results, info


# ---------------------------------------------------------------------------
# Report


def _cell(samples: list[float], scale: float, fmt: str) -> str:
    p10, p50, p90 = percentiles(samples)
    return f"{p50 * scale:{fmt}} ({p10 * scale:{fmt}}–{p90 * scale:{fmt}})"


def _ratio(num: list[float], den: list[float]) -> str:
    """Ratio of the medians, with the p10–p90 of the per-round (paired) ratios."""
    paired = [n / d for n, d in zip(num, den)]
    p10, _, p90 = percentiles(paired)
    return f"**{percentiles(num)[1] / percentiles(den)[1]:.2f}** ({p10:.2f}–{p90:.2f})"


def report(all_results: dict[str, Any], infos: dict[str, Any]) -> None:
    print("\n### Latency, batch 1 (µs per call: median (p10–p90))\n")
    print("| model | (a) axonc ONNX | (b) torch eager | (c) torch.onnx | a/c | a/b |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, res in all_results.items():
        r = res[1]
        cells = [_cell(r[v], 1e6, ",.1f") for v in VARIANTS]
        print(
            f"| {name} | {' | '.join(cells)} | {_ratio(r['axonc'], r['t.onnx'])} "
            f"| {_ratio(r['axonc'], r['torch'])} |"
        )
    print("\n### Throughput, batch 64 (samples/s: median (p10–p90); ratios are of times)\n")
    print("| model | (a) axonc ONNX | (b) torch eager | (c) torch.onnx | a/c | a/b |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, res in all_results.items():
        r = res[64]
        cells = []
        for v in VARIANTS:
            p10, p50, p90 = percentiles(r[v])
            cells.append(f"{64 / p50:,.0f} ({64 / p90:,.0f}–{64 / p10:,.0f})")
        print(
            f"| {name} | {' | '.join(cells)} | {_ratio(r['axonc'], r['t.onnx'])} "
            f"| {_ratio(r['axonc'], r['torch'])} |"
        )
    print("\n### Compile time (median of 5) and ONNX node counts\n")
    print("| model | axonc to_onnx (ms) | torch.onnx.export (ms) | axonc nodes | torch nodes |")
    print("|---|---:|---:|---:|---:|")
    for name, i in infos.items():
        print(
            f"| {name} | {i['compile_axonc'] * 1e3:.1f} | {i['compile_torch'] * 1e3:.1f} "
            f"| {i['nodes_axonc']} | {i['nodes_torch']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--round-ms", type=float, default=100.0, help="per variant per round")
    parser.add_argument("--warmup-ms", type=float, default=300.0, help="per variant")
    parser.add_argument("--models", nargs="*", default=[b.name for b in BENCHES])
    parser.add_argument("--dump", help="write the ONNX graphs and ORT-optimised forms here")
    parser.add_argument("--no-spin", action="store_true", help="onnxruntime threads do not spin")
    args = parser.parse_args()
    global SPIN
    SPIN = "0" if args.no_spin else "1"

    torch.set_num_threads(THREADS)
    print_machine()
    print(
        f"torch threads {torch.get_num_threads()}, onnxruntime intra-op threads {THREADS}, "
        f"spinning {'on' if SPIN == '1' else 'off'}"
    )
    # to_onnx's first call probes which opsets onnxruntime supports (sessions); pay it here
    start = time.perf_counter()
    to_onnx(ax.input("x", shape=(None, 2)).relu(), None)
    print(
        f"first to_onnx in the process (one-off opset probe): {time.perf_counter() - start:.3f} s"
    )

    all_results, infos = {}, {}
    for b in BENCHES:
        if b.name not in args.models:
            continue
        print(f"\n{b.name}")
        all_results[b.name], infos[b.name] = run_bench(b, args)
    report(all_results, infos)


if __name__ == "__main__":
    main()
