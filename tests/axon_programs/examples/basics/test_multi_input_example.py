"""Axon's examples/basics/multi_input_example.exs: XOR from two inputs, trained with sgd."""

import numpy as np

import axonc as ax

BATCH_SIZE = 32


def build_model(input_shape1, input_shape2):
    inp1 = ax.input("x1", shape=input_shape1)
    inp2 = ax.input("x2", shape=input_shape2)

    return inp1.concatenate(inp2).dense(8, activation="tanh").dense(1, activation="sigmoid")


def batch(rng):
    x1 = rng.integers(0, 2, size=(BATCH_SIZE, 1))
    x2 = rng.integers(0, 2, size=(BATCH_SIZE, 1))
    y = np.logical_xor(x1, x2).astype(np.uint8)
    return {"x1": x1, "x2": x2}, y


def stream(seed):
    rng = np.random.default_rng(seed)
    while True:
        yield batch(rng)


def train_model(model, data, epochs):
    return ax.Loop.trainer(model, "binary_cross_entropy", "sgd").run(
        data, {}, epochs=epochs, iterations=40
    )


def bce(model, state, inputs, y):
    p = np.clip(ax.predict(model, state, inputs).astype(np.float64), 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def test_multi_input_example():
    model = build_model((None, 1), (None, 1))
    data = stream(0)

    model_state = train_model(model, data, 2)

    out = ax.predict(model, model_state, {"x1": np.array([[0]]), "x2": np.array([[1]])})
    assert out.shape == (1, 1)
    assert 0.0 < float(out[0, 0]) < 1.0

    inputs, y = batch(np.random.default_rng(1))
    init_fn, _ = ax.build(model)
    initial = init_fn({"x1": inputs["x1"], "x2": inputs["x2"]}, ax.ModelState.empty())
    assert bce(model, model_state, inputs, y) < bce(model, initial, inputs, y)
