"""Axon's examples/basics/multi_output_example.exs: one trunk, two heads (x^2 and x^3),
trained with a weighted list of two losses."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import record

BATCH_SIZE = 32


def build_model():
    fc = (
        ax.input("input", shape=(None, 1)).dense(32, activation="relu").dense(64, activation="relu")
    )

    out1 = ax.dense(fc, 1)
    out2 = ax.dense(fc, 1)

    return ax.container((out1, out2))


def data(seed):
    rng = np.random.default_rng(seed)
    while True:
        x = rng.uniform(-10, 10, size=(BATCH_SIZE, 1)).astype(np.float32)
        yield x, (np.power(x, 2), np.power(x, 3))


def test_multi_output_example():
    model = build_model()
    losses = []

    params = (
        ax.Loop.trainer(model, [("mean_squared_error", 0.5), ("mean_squared_error", 0.5)], "adam")
        .handle_event("epoch_completed", record(losses))
        .run(data(0), {}, iterations=30, epochs=3)
    )

    out = ax.predict(model, params, np.array([[3]]))
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == (1, 1) and out[1].shape == (1, 1)
    assert losses[-1] < losses[0]
