"""The bench models in axonc, shared by bench/inference.py, bench/train.py and bench/edge.py.

Torch-free, so the edge bench can run in an environment without PyTorch.
"""

from __future__ import annotations

import numpy as np

import axonc as ax


def axonc_mlp() -> ax.Axon:
    return (
        ax.input("x", shape=(None, 784))
        .dense(512, activation="relu")
        .dense(512, activation="relu")
        .dense(10)
        .activation("softmax")
    )


def axonc_cnn() -> ax.Axon:
    return (
        ax.input("x", shape=(None, 28, 28, 1))
        .conv(32, kernel_size=3, activation="relu")
        .max_pool(kernel_size=2)
        .conv(64, kernel_size=3, activation="relu")
        .max_pool(kernel_size=2)
        .flatten()
        .dense(128, activation="relu")
        .dense(10)
    )


def axonc_mlp_bn() -> ax.Axon:
    return (
        ax.input("x", shape=(None, 784))
        .dense(512, activation="relu")
        .batch_norm()
        .dropout(rate=0.5)
        .dense(512, activation="relu")
        .batch_norm()
        .dropout(rate=0.5)
        .dense(10)
    )


def axonc_lstm() -> ax.Axon:
    x = ax.input("x", shape=(None, 28, 28))
    # zero initial state, as PyTorch's (Axon's default draws a random one)
    _, (_, h) = ax.lstm(x, 128, recurrent_initializer="zeros")
    return h.dense(10)


def axonc_state(model: ax.Axon, sample: tuple[int, ...]) -> ax.ModelState:
    """Seeded initial parameters; batch-norm statistics and affine terms made non-trivial."""
    init_fn, _ = ax.build(model, compiler="reference")
    state = init_fn(ax.template((1, *sample), "f32"), ax.ModelState.empty())
    rng = np.random.default_rng(1)
    params, stats = {}, {}
    for layer, p in state.data.items():
        if "gamma" in p:
            n = p["gamma"].shape
            params[layer] = {
                "gamma": rng.uniform(0.5, 1.5, n).astype(np.float32),
                "beta": rng.normal(0, 0.1, n).astype(np.float32),
            }
            stats[layer] = {
                "mean": rng.normal(0, 0.1, n).astype(np.float32),
                "var": rng.uniform(0.5, 1.5, n).astype(np.float32),
            }
    return state.update(params, stats) if params else state
