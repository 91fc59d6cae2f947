"""Axon's notebooks/basics/xor.livemd: XOR from two inputs, then the decision surface on a
grid (plotted with VegaLite in the notebook; here its values are checked)."""

import numpy as np

import axonc as ax


def test_xor():
    x1_input = ax.input("x1", shape=(None, 1))
    x2_input = ax.input("x2", shape=(None, 1))

    model = (
        x1_input.concatenate(x2_input).dense(8, activation="tanh").dense(1, activation="sigmoid")
    )

    batch_size = 32
    rng = np.random.default_rng(0)

    def data():
        while True:
            x1 = rng.integers(0, 2, size=(batch_size, 1))
            x2 = rng.integers(0, 2, size=(batch_size, 1))
            y = np.logical_xor(x1, x2).astype(np.uint8)

            yield {"x1": x1, "x2": x2}, y

    epochs = 2

    params = ax.Loop.trainer(model, "binary_cross_entropy", "sgd").run(
        data(), {}, epochs=epochs, iterations=40
    )

    out = ax.predict(model, params, {"x1": np.array([[0]]), "x2": np.array([[1]])})
    assert out.shape == (1, 1) and 0 < float(out[0, 0]) < 1

    # the number of points per axis
    n = 50

    x1 = (np.arange(n * n).reshape(n, n) // n / n).reshape(-1, 1).astype(np.float32)
    x2 = (np.arange(n * n).reshape(n, n) % n / n).reshape(-1, 1).astype(np.float32)

    y = np.round(ax.predict(model, params, {"x1": x1, "x2": x2}))

    assert x1[n, 0] == 1 / n and x2[1, 0] == 1 / n
    assert y.shape == (n * n, 1)
    assert set(np.unique(y)) <= {0.0, 1.0}
