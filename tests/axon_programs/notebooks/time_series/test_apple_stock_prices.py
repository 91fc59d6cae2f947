"""Axon's notebooks/time_series/apple_stock_prices.livemd: an LSTM regression over sliding
windows of a scaled price series (a synthetic series in place of the downloaded CSV;
Scholar's MinMaxScaler and Nx.vectorize's windows written with numpy)."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import graph_labels, record


def min_max_scale(train, series, min_bound=-1, max_bound=1):
    lo, hi = train.min(), train.max()
    return (series - lo) / (hi - lo) * (max_bound - min_bound) + min_bound


def sliding_window(series, win_size):
    p = series.shape[0]
    x = np.stack([series[i : i + win_size] for i in range(p - win_size)])
    y = series[win_size:].reshape(-1, 1)
    return x, y


def to_batched(x, batch_size):
    """Nx.to_batched with its default leftover: :repeat (the last batch wraps around)."""
    n = -(-len(x) // batch_size) * batch_size
    x = np.concatenate([x, x[: n - len(x)]])
    return [x[i : i + batch_size] for i in range(0, n, batch_size)]


def test_sliding_window():
    test_series = np.array([0, 1, 1, 2, 3, 5, 8, 13, 21, 34])
    x, y = sliding_window(test_series, 2)
    assert x.tolist() == [[0, 1], [1, 1], [1, 2], [2, 3], [3, 5], [5, 8], [8, 13], [13, 21]]
    assert y[:, 0].tolist() == [1, 2, 3, 5, 8, 13, 21, 34]


def build(input_shape):
    out, _ = ax.input("input", shape=input_shape).lstm(5)
    return out.nx(lambda t: t[:, -1]).dense(1)


def test_graph():
    batch_size, win_size = 6, 7
    input_shape = (batch_size, win_size, 1)
    graph = ax.display.as_graph(build(input_shape), ax.template(input_shape, "f32"))
    labels = graph_labels(graph)
    assert labels[0] == "input (:input) {6, 7, 1}"
    assert labels[-1] == "dense_0 (:dense) {6, 1}"


def test_apple_stock_prices():
    rng = np.random.default_rng(0)
    data = (100 + np.cumsum(rng.standard_normal(146))).astype(np.float32)

    train_test_split = 2 / 3
    split = int(len(data) * train_test_split)
    train, test = data[:split], data[split:]

    train, test = min_max_scale(train, train), min_max_scale(train, test)

    win_size = 7
    train_size, test_size = train.shape[0], test.shape[0]
    p_train = train_size - train_size % win_size
    p_test = test_size - test_size % win_size
    train = train[:p_train]
    test = test[:p_test]
    x_train, y_train = sliding_window(train, win_size)
    x_test, y_test = sliding_window(test, win_size)

    batch_size = 6
    input_shape = (batch_size, win_size, 1)
    model = build(input_shape)

    y_train_batches = to_batched(y_train, batch_size)
    x_train_batches = to_batched(x_train.reshape(-1, win_size, 1), batch_size)
    x_test_batches = to_batched(x_test.reshape(-1, win_size, 1), batch_size)
    train_data = list(zip(x_train_batches, y_train_batches))

    optimizer = ax.optimizers.sgd(learning_rate=0.04)
    losses = []
    loop = ax.Loop.trainer(model, "mean_squared_error", optimizer).handle_event(
        "epoch_completed", record(losses)
    )
    trained_model_state = loop.run(train_data, {}, epochs=5)

    y_pred_train = np.concatenate(
        [ax.predict(model, trained_model_state, b) for b in x_train_batches]
    )
    y_pred_test = np.concatenate(
        [ax.predict(model, trained_model_state, b) for b in x_test_batches]
    )

    mse_train = ax.losses.mean_squared_error(y_train, y_pred_train, reduction="mean")
    mse_test = ax.losses.mean_squared_error(y_test, y_pred_test, reduction="mean")
    np.testing.assert_allclose(mse_train, np.mean((y_train - y_pred_train) ** 2), rtol=1e-5)
    np.testing.assert_allclose(mse_test, np.mean((y_test - y_pred_test) ** 2), rtol=1e-5)
    assert losses[-1] < losses[0]
