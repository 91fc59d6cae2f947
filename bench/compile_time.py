"""Compile time: how axonc's to_onnx grows with the graph, from 100 to 10,000 layers.

Two generated graph families:

  dense_relu  input (None, 16), then dense(16) / relu alternating
  conv_bn     input (None, 8, 8, 4), then conv(4, 3x3, same) / batch_norm / relu repeated
              (-O2 folds each batch norm into its conv and cancels the layout transposes)

A "layer" is one Axon layer node (dense_0 and relu_0 are two layers, as Axon names
them); the input node is not counted. For each size the graph is built through
the layer API and initialised (timed separately: not part of compilation), then
`to_onnx(model, state)` (inference, -O2: IR passes, lowering, ONNX passes,
onnx.checker full check) is timed --repeats times after one untimed run; the
median is reported with the time per layer. One extra run collects the pass
manager's per-pass timings; the onnx.checker share is timed on its own.

Run: python bench/compile_time.py [--sizes 100 1000 10000] [--repeats 5]
     python bench/compile_time.py --profile conv_bn:10000   (cProfile, top entries)
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Callable

import onnx

import axonc as ax
from axonc.passes import PassReport
from axonc.passes.manager import PASSES
from axonc.to_onnx.export import to_onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BackgroundLoad, median_time, print_machine


def dense_relu(layers: int) -> tuple[ax.Axon, tuple[int, ...]]:
    x = ax.input("x", shape=(None, 16))
    for i in range(layers):
        x = x.dense(16) if i % 2 == 0 else x.relu()
    return x, (1, 16)


def conv_bn(layers: int) -> tuple[ax.Axon, tuple[int, ...]]:
    x = ax.input("x", shape=(None, 8, 8, 4))
    steps = (
        lambda x: x.conv(4, kernel_size=3, padding="same"),
        lambda x: x.batch_norm(),
        lambda x: x.relu(),
    )
    for i in range(layers):
        x = steps[i % 3](x)
    return x, (1, 8, 8, 4)


FAMILIES: dict[str, Callable[[int], tuple[ax.Axon, tuple[int, ...]]]] = {
    "dense_relu": dense_relu,
    "conv_bn": conv_bn,
}


def build(family: str, layers: int) -> tuple[ax.Axon, ax.ModelState, float, float]:
    """The graph and its initial state; the seconds the layer API and init_fn took."""
    start = time.perf_counter()
    model, sample = FAMILIES[family](layers)
    built = time.perf_counter()
    init_fn, _ = ax.build(model, compiler="reference")
    state = init_fn(ax.template(sample, "f32"), ax.ModelState.empty())
    return model, state, built - start, time.perf_counter() - built


def measure(family: str, layers: int, repeats: int) -> dict[str, float]:
    model, state, t_api, t_init = build(family, layers)
    onnx_model = to_onnx(model, state)  # untimed: first-touch costs for this graph
    with BackgroundLoad() as load:
        t_compile, _ = median_time(lambda: to_onnx(model, state), repeats)
    report = PassReport()
    to_onnx(model, state, report=report)
    by_stage = {"ir": 0.0, "onnx": 0.0}
    for name, seconds in report.seconds.items():
        stage = PASSES[name].stage if name in PASSES else "ir"  # "verify" is the IR verifier
        by_stage[stage] += seconds
    t_check, _ = median_time(lambda: onnx.checker.check_model(onnx_model, full_check=True), 1)
    return {
        "layers": layers,
        "onnx_nodes": len(onnx_model.graph.node),
        "api": t_api,
        "init": t_init,
        "compile": t_compile,
        "ir_passes": by_stage["ir"],
        "onnx_passes": by_stage["onnx"],
        "checker": t_check,
        "load": load.cores if load.cores is not None else float("nan"),
        "passes": report.table(),
    }


def profile(spec: str) -> None:
    family, layers = spec.split(":")
    model, state, _, _ = build(family, int(layers))
    to_onnx(model, state)
    prof = cProfile.Profile()
    prof.enable()
    to_onnx(model, state)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--passes", action="store_true", help="print per-pass timings")
    parser.add_argument("--profile", help="FAMILY:LAYERS: cProfile one to_onnx and stop")
    args = parser.parse_args()

    print_machine()
    # to_onnx's first call in a process probes which opsets onnxruntime supports
    start = time.perf_counter()
    to_onnx(ax.input("x", shape=(None, 2)).relu(), None)
    print(
        f"first to_onnx in the process (one-off opset probe): {time.perf_counter() - start:.3f} s"
    )
    if args.profile:
        profile(args.profile)
        return

    print(
        "\n| graph | layers | ONNX nodes | to_onnx median (s) | ms / layer | growth vs previous "
        "| IR passes (s) | ONNX passes (s) | checker (s) | layer API + init (s) | bg load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for family in args.families:
        previous = None
        for layers in args.sizes:
            r = measure(family, layers, args.repeats)
            growth = "–"
            if previous is not None:
                growth = (
                    f"×{r['compile'] / previous['compile']:.1f} for "
                    f"×{layers / previous['layers']:g} layers"
                )
            print(
                f"| {family} | {layers:,} | {r['onnx_nodes']:,} | {r['compile']:.3f} "
                f"| {r['compile'] / layers * 1e3:.3f} | {growth} | {r['ir_passes']:.3f} "
                f"| {r['onnx_passes']:.3f} | {r['checker']:.3f} "
                f"| {r['api']:.2f} + {r['init']:.2f} | {r['load']:.2f} |",
                flush=True,
            )
            if args.passes:
                print(r["passes"])
            previous = r


if __name__ == "__main__":
    main()
