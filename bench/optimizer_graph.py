"""Size of the compiled train step per optimizer: ONNX node counts, no timing.

The step of bench/train.py's MLP (784-512-512-10, relu, softmax, categorical cross-entropy;
6 parameters) is exported once per built-in optimizer with its default options and its
nodes counted by op type. "optimizer nodes" is the count minus that of plain sgd's step
plus sgd's own 2 nodes per parameter (its Mul by -lr and the Add into the parameter), i.e.
everything the optimizer contributes; "per parameter" is the same for a step with one
more 512x512 dense layer (2 more parameters), halved, so scalar work drops out.

Run: python bench/optimizer_graph.py
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

import axonc as ax
from axonc import optimizers as O

OPTIMIZERS = {
    "sgd": lambda: O.sgd(0.01),
    "sgd momentum": lambda: O.sgd(0.01, momentum=0.9),
    "adam": lambda: O.adam(1e-3),
    "adamw": lambda: O.adamw(1e-3, decay=0.01),
    "adabelief": lambda: O.adabelief(),
    "adagrad": lambda: O.adagrad(),
    "adamax": lambda: O.adamax(),
    "lamb": lambda: O.lamb(),
    "radam": lambda: O.radam(),
    "rmsprop": lambda: O.rmsprop(),
    "yogi": lambda: O.yogi(),
}


def mlp(hidden: int) -> ax.Axon:
    x = ax.input("x", shape=(None, 784))
    for _ in range(hidden):
        x = x.dense(512, activation="relu")
    return x.dense(10).activation("softmax")


def counts(optimizer: object, hidden: int, directory: Path) -> Counter:
    step = ax.train.compile_step(mlp(hidden), "categorical_cross_entropy", optimizer)
    ts = step.init(ax.template((None, 784), "f32"))
    x = np.zeros((4, 784), np.float32)
    y = np.eye(10, dtype=np.float32)[[0, 1, 2, 3]]
    model = step.export(directory / "step.onnx", ts, x, y)
    return Counter(node.op_type for node in model.graph.node)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        base = {h: counts(O.sgd(0.01), h, directory) for h in (2, 3)}
        print("| optimizer | step nodes | optimizer nodes | per parameter | top ops of the step |")
        print("|---|---:|---:|---:|---|")
        for name, make in OPTIMIZERS.items():
            c2, c3 = counts(make(), 2, directory), counts(make(), 3, directory)
            own = c2.total() - base[2].total() + 2 * 6
            per = ((c3.total() - base[3].total()) - (c2.total() - base[2].total())) / 2 + 2
            top = ", ".join(f"{op} {n}" for op, n in c2.most_common(6))
            print(f"| {name} | {c2.total()} | {own} | {per:g} | {top} |")


if __name__ == "__main__":
    main()
